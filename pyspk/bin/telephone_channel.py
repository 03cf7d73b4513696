"""Pass one recording through a simulated telephone channel; 8 kHz 16-bit wav out (pyspk.augment.telephone).

Usage:
  python -m pyspk.bin.telephone_channel [options] --utt-id ID <audio-in> <wav-out>
  python -m pyspk.bin.telephone_channel --list-codecs
e.g. (a wav.scp entry of utils/telephone_data_dir.sh):
  utt1 ffmpeg -i a.opus -f wav - | python -m pyspk.bin.telephone_channel --utt-id utt1 - - |

<audio-in> is a file libsndfile reads or - (a wav on stdin, as from a wav.scp pipe);
<wav-out> a file or - (stdout). The channel (handset response, level, line noise,
one codec of --codecs) is drawn from --seed and the id alone, so a data dir reads
the same every time. --list-codecs prints the codecs usable here; --check with
--codecs exits 1 naming a codec that is not.
"""

import io
import sys

import numpy as np
import soundfile as sf

from pyspk.augment.telephone import (
    DEFAULT_CODECS,
    TELEPHONE_RATE,
    CodecError,
    apply_channel,
    available_codecs,
    check_codecs,
    draw_channel,
    known_codecs,
    utterance_rng,
)
from pyspk.cli import new_parser
from pyspk.features.audio import UtteranceError, read_audio, read_audio_bytes
from pyspk.fileutil import atomic_open

PROG = "telephone_channel"


def main(argv=None):
    parser = new_parser(__doc__)
    parser.prog = PROG
    parser.add_argument("--codecs", default=",".join(DEFAULT_CODECS),
                        help="comma-separated codecs, one drawn per recording (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=777, help="with the id, draws the channel (default: %(default)s)")
    parser.add_argument("--utt-id", help="the recording's id (wav.scp's first field)")
    parser.add_argument("--list-codecs", action="store_true", help="print the codecs usable here and exit")
    parser.add_argument("--check", action="store_true", help="check that --codecs are usable here and exit")
    parser.add_argument("audio_in", nargs="?")
    parser.add_argument("wav_out", nargs="?")
    args = parser.parse_args(argv)
    if args.list_codecs:
        print(" ".join(available_codecs()))
        return
    try:
        codecs = [c for c in args.codecs.split(",") if c]
        if args.check:  # once per data dir (utils/telephone_data_dir.sh): asking sox and ffmpeg costs 0.1 s
            check_codecs(codecs)
            return
        codecs = known_codecs(codecs)
        if args.utt_id is None or args.audio_in is None or args.wav_out is None:
            parser.error("--utt-id, <audio-in> and <wav-out> are required")
        samples, rate = (read_audio_bytes(sys.stdin.buffer.read(), "stdin") if args.audio_in == "-"
                         else read_audio(args.audio_in))
        channel = draw_channel(utterance_rng(args.seed, args.utt_id), codecs)
        out = apply_channel(samples[:, 0], rate, channel)
    except (CodecError, UtteranceError) as e:
        where = f"{args.utt_id}: " if args.utt_id else ""
        print(f"{PROG}: error: {where}{e}", file=sys.stderr)
        sys.exit(1)
    pcm = np.clip(np.rint(out), -32768, 32767).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, pcm, TELEPHONE_RATE, format="WAV", subtype="PCM_16")
    if args.wav_out == "-":
        sys.stdout.buffer.write(buffer.getvalue())
    else:
        with atomic_open(args.wav_out, "wb") as f:
            f.write(buffer.getvalue())


if __name__ == "__main__":
    main()
