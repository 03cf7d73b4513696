"""Augmented copies of a Kaldi data dir (reverb, noise, music, babble), in three steps.

Usage:
  python -m pyspk.bin.augment_data_dir prepare [--types reverb,noise,music,babble] [--seed 777]
      [--rir-dir DIR] [--rir-sets smallroom,mediumroom] [--musan-dir DIR]
      [--fg-snrs 15:10:5:0] [--fg-interval 1] [--music-snrs 15:10:8:5] [--num-music 1]
      [--babble-snrs 20:17:15:13] [--num-babble-speakers 3:4:5:6:7] [--audio-format wav]
      <src-data-dir> <audio-dir>
  python -m pyspk.bin.augment_data_dir run [--types ...] --job J --num-jobs N <src-data-dir> <audio-dir>
  python -m pyspk.bin.augment_data_dir merge [--types ...] --num-jobs N [--max-fail-fraction 0.05]
      <src-data-dir> <audio-dir> <dest-prefix>

'prepare' checks the inputs and freezes each type's options in
<audio-dir>/<type>/options.json; 'run' writes the audio of one shard under
<audio-dir>/<type>/<speaker>/<utt>-<type>.<format>; 'merge' writes the data
dirs <dest-prefix>_<type> (utterance ids <utt>-<type>). Unset SNR and count
options take Kaldi's voxceleb values. Normally called by steps/augment_data_dir.sh.
"""

import argparse
import logging
import os
import sys

from pyspk.augment.augment_dir import AUG_TYPES, AugmentError, make_options, merge, prepare, run_job
from pyspk.data.datadir import DataDirError
from pyspk.logutil import setup_logging


def colon_list(convert):
    def parse(text):
        try:
            return [convert(x) for x in text.split(":") if x != ""]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a colon-separated list of numbers, got '{text}'") from None
    return parse


def type_list(text):
    types = [t for t in text.replace(",", " ").split() if t]
    unknown = [t for t in types if t not in AUG_TYPES]
    if unknown or not types:
        raise argparse.ArgumentTypeError(f"unknown type(s) {unknown or '(none)'}; known: {', '.join(AUG_TYPES)}")
    return types


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_types(p):
        p.add_argument("--types", type=type_list, default=list(AUG_TYPES), help="comma-separated types")
        return p

    p = with_types(sub.add_parser("prepare", help="check inputs, freeze options"))
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--rir-dir", default=None, help="RIRS_NOISES directory; simulated rooms if unset")
    p.add_argument("--rir-sets", default=None, help="comma-separated: smallroom,mediumroom,largeroom,real")
    p.add_argument("--musan-dir", default=None, help="MUSAN directory; generated sources if unset")
    p.add_argument("--fg-snrs", type=colon_list(float), default=None, help="noise SNRs in dB, e.g. 15:10:5:0")
    p.add_argument("--fg-interval", type=float, default=None, help="seconds between foreground noises")
    p.add_argument("--music-snrs", type=colon_list(float), default=None)
    p.add_argument("--num-music", type=colon_list(int), default=None, help="music sources per utterance")
    p.add_argument("--babble-snrs", type=colon_list(float), default=None)
    p.add_argument("--num-babble-speakers", type=colon_list(int), default=None)
    p.add_argument("--audio-format", default="wav", choices=["wav", "flac"])
    p.add_argument("src_dir")
    p.add_argument("audio_dir")

    r = with_types(sub.add_parser("run", help="augment one shard"))
    r.add_argument("--job", type=int, required=True)
    r.add_argument("--num-jobs", type=int, required=True)
    r.add_argument("src_dir")
    r.add_argument("audio_dir")

    m = with_types(sub.add_parser("merge", help="write the data dirs"))
    m.add_argument("--num-jobs", type=int, required=True)
    m.add_argument("--max-fail-fraction", type=float, default=0.05)
    m.add_argument("src_dir")
    m.add_argument("audio_dir")
    m.add_argument("dest_prefix")
    return parser


def type_options(args, aug_type):
    """make_options() for one type from the command line's options."""
    if aug_type == "reverb":
        specific = {"rir_dir": args.rir_dir, "rir_sets": args.rir_sets.split(",") if args.rir_sets else None}
    else:
        specific = {"musan_dir": args.musan_dir}
        specific.update({"noise": {"snrs": args.fg_snrs, "interval": args.fg_interval},
                         "music": {"snrs": args.music_snrs, "num_noises": args.num_music},
                         "babble": {"snrs": args.babble_snrs, "num_noises": args.num_babble_speakers}}[aug_type])
    return make_options(aug_type, seed=args.seed, audio_format=args.audio_format, **specific)


def main(argv=None):
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        for aug_type in args.types:
            audio_dir = os.path.join(args.audio_dir, aug_type)
            if args.command == "prepare":
                prepare(args.src_dir, audio_dir, type_options(args, aug_type))
            elif args.command == "run":
                run_job(args.src_dir, audio_dir, args.job, args.num_jobs)
            else:
                merge(args.src_dir, audio_dir, f"{args.dest_prefix.rstrip('/')}_{aug_type}", args.num_jobs,
                      args.max_fail_fraction)
    except (AugmentError, DataDirError, ValueError) as e:
        logging.error("%s", e)
        sys.exit(1)


if __name__ == "__main__":
    main()
