"""Write a subset of a data directory, as Kaldi's utils/subset_data_dir.sh.

Usage: python -m pyspk.bin.subset_data_dir --mode MODE [--num N] [--id-list FILE] <src-dir> <dest-dir>
MODE: even (N evenly spaced utterances), first, last, shortest (needs utt2dur or
utt2num_frames), per_spk (N per speaker), speakers (random whole speakers up to N
utterances), utt_list / spk_list (ids in the first field of --id-list).
"""

import argparse

from pyspk.cli import report_data_dir_operation
from pyspk.data.ops import subset_data_dir

PROG = "subset_data_dir"
MODES = ("even", "first", "last", "shortest", "per_spk", "speakers", "utt_list", "spk_list")


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=MODES, default="even")
    parser.add_argument("--num", type=int, help="number of utterances (per speaker for per_spk)")
    parser.add_argument("--id-list", help="utterance or speaker list for utt_list / spk_list")
    parser.add_argument("src_dir")
    parser.add_argument("dest_dir")
    args = parser.parse_args(argv)
    if args.mode in ("utt_list", "spk_list"):
        if not args.id_list:
            parser.error(f"--mode {args.mode} needs --id-list")
    elif args.num is None or args.num < 1:
        parser.error(f"--mode {args.mode} needs a positive --num")
    report_data_dir_operation(
        PROG, lambda: subset_data_dir(args.src_dir, args.dest_dir, args.mode, args.num, args.id_list))


if __name__ == "__main__":
    main()
