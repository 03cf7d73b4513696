"""Decode one job's share of a data dir's utterances into 16-bit audio files (run by steps/convert_audio.sh).

Usage:
  python -m pyspk.bin.convert_audio [options] <data-dir> <audio-dir> <wav-scp-out> <utt2dur-out>
e.g.:
  python -m pyspk.bin.convert_audio --format flac --job 2 --num-jobs 4 \\
      data/voxceleb2_dev flac/voxceleb2_dev flac/voxceleb2_dev/log/wav.scp.2 flac/voxceleb2_dev/log/utt2dur.2

Every utterance of the job's block (from segments if present, else wav.scp;
files and ``cmd |`` pipes alike) becomes <audio-dir>/<speaker>/<utt>.<format>,
one file per utterance, so that training can seek in it instead of decoding
a pipe. Samples are kept exactly (all channels, the original rate) and stored
as 16-bit PCM. A file appears only by rename once complete, so an existing one
is taken as converted and not decoded again. Failing utterances are logged by
id and left out of the outputs; the job ends with "Done N utterances, failed M"
and exits 0 unless the job itself cannot run.
"""

import argparse
import logging
import os
import sys

import numpy as np
import soundfile as sf

from pyspk.cli import positive_int
from pyspk.data.datadir import DataDir, DataDirError, write_table
from pyspk.features.audio import UtteranceError, iter_utterance_audio, shard, utterance_sources
from pyspk.fileutil import atomic_path
from pyspk.logutil import setup_logging

log = logging.getLogger("convert_audio")
FORMATS = {"flac": "FLAC", "wav": "WAV"}


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", choices=sorted(FORMATS), default="flac",
                        help="output format (default: %(default)s)")
    parser.add_argument("--job", type=positive_int, default=1, help="this job's index, 1-based (default: %(default)s)")
    parser.add_argument("--num-jobs", type=positive_int, default=1, help="number of jobs (default: %(default)s)")
    parser.add_argument("data_dir")
    parser.add_argument("audio_dir")
    parser.add_argument("wav_scp_out", help="'utt path' lines of the job's converted utterances")
    parser.add_argument("utt2dur_out", help="'utt duration_seconds' lines of the job's converted utterances")
    return parser


def output_path(audio_dir, spk, utt, audio_format):
    """<audio-dir>/<spk>/<utt>.<format>: one directory per speaker keeps directories small at 1 M files."""
    for name in (spk, utt):
        if "/" in name or name in (".", ".."):
            raise UtteranceError(f"id '{name}' cannot be a file name")
    return os.path.join(audio_dir, spk, f"{utt}.{audio_format}")


def to_int16(samples):
    """Samples in the int16 range (read_audio's scale) as int16; exact for 16-bit sources."""
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


def convert_job(data_dir, audio_dir, audio_format, job, num_jobs):
    """Convert the job's block; return ``({utt: path}, {utt: duration}, num_converted, num_failed)``."""
    utt2spk = DataDir(data_dir).utt2spk()
    paths, durations, todo, converted, failed = {}, {}, [], 0, 0
    for source in shard(utterance_sources(data_dir), job, num_jobs):
        try:
            path = output_path(audio_dir, utt2spk[source.utt], source.utt, audio_format)
        except UtteranceError as e:
            log.warning("%s: %s", source.utt, e)
            failed += 1
            continue
        if os.path.isfile(path):
            info = sf.info(path)
            paths[source.utt], durations[source.utt] = path, info.frames / info.samplerate
        else:
            todo.append((source, path))
    if paths:
        log.info("%d utterance(s) already converted, kept", len(paths))

    target = {source.utt: path for source, path in todo}
    for source, samples, rate, error in iter_utterance_audio([source for source, _ in todo]):
        path = target[source.utt]
        try:
            if error is not None:
                raise UtteranceError(error)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with atomic_path(path) as tmp:
                sf.write(tmp, to_int16(samples), rate, format=FORMATS[audio_format], subtype="PCM_16")
        except (UtteranceError, sf.SoundFileError, RuntimeError) as e:
            log.warning("%s: %s", source.utt, e)
            failed += 1
            continue
        paths[source.utt], durations[source.utt] = path, samples.shape[0] / rate
        converted += 1
    return paths, durations, converted, failed


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        paths, durations, converted, failed = convert_job(args.data_dir, args.audio_dir, args.format, args.job,
                                                          args.num_jobs)
        write_table(args.wav_scp_out, paths)
        write_table(args.utt2dur_out, {utt: f"{dur:g}" for utt, dur in durations.items()})
    except (DataDirError, ValueError) as e:
        sys.exit(f"convert_audio: {e}")
    except OSError as e:
        sys.exit(f"convert_audio: cannot write output: {e}")
    log.info("Done %d utterances, failed %d (job %d/%d: %d converted now, %d converted before)", len(paths), failed,
             args.job, args.num_jobs, converted, len(paths) - converted)


if __name__ == "__main__":
    main()
