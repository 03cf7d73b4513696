"""Split a data directory into N parts, as Kaldi's utils/split_data.sh.

Usage: python -m pyspk.bin.split_data [--per-utt] <data-dir> <num-to-split>
Writes <data-dir>/split<N>/{1..N} (split<N>utt with --per-utt). Without
--per-utt each speaker stays in one part. Does nothing when already up to date.
"""

import argparse
import sys

from pyspk.data.datadir import DataDirError
from pyspk.data.ops import split_data_dir

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
    try:
        _, messages = split_data_dir(args.data_dir, args.num_splits, args.per_utt)
    except (DataDirError, OSError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        sys.exit(1)
    for message in messages:
        print(f"{PROG}: {message}", file=sys.stderr)


if __name__ == "__main__":
    main()
