"""Split a data directory into N parts, as Kaldi's utils/split_data.sh.

Usage: python -m pyspk.bin.split_data [--per-utt] <data-dir> <num-to-split>
Writes <data-dir>/split<N>/{1..N} (split<N>utt with --per-utt). Without
--per-utt each speaker stays in one part. Does nothing when already up to date.
"""

import argparse
import sys

from pyspk.cli import report_data_dir_operation
from pyspk.data.split import split_data_dir

PROG = "split_data"


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-utt", action="store_true", help="split by utterance; speakers may straddle parts")
    parser.add_argument("data_dir")
    parser.add_argument("num_splits", type=int)
    args = parser.parse_args(argv)
    if args.num_splits < 1:
        parser.error(f"invalid num-to-split {args.num_splits}")
    report_data_dir_operation(
        PROG, lambda: split_data_dir(args.data_dir, args.num_splits, args.per_utt)[1], sys.stderr)


if __name__ == "__main__":
    main()
