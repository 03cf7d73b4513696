"""Combine data directories, as Kaldi's utils/combine_data.sh.

Usage: python -m pyspk.bin.combine_data [--extra-files "f1 f2"] [--skip-fix] <dest-dir> <src-dir1> <src-dir2> ...
Fails on a repeated utterance id. Unless --skip-fix, the result goes through fix_data_dir.
"""

import argparse

from pyspk.cli import report_data_dir_operation
from pyspk.data.ops import combine_data_dirs

PROG = "combine_data"


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extra-files", default="", help="more per-utterance files to combine (space-separated)")
    parser.add_argument("--skip-fix", action="store_true", help="do not run fix_data_dir on the result")
    parser.add_argument("dest_dir")
    parser.add_argument("src_dirs", nargs="+")
    args = parser.parse_args(argv)
    report_data_dir_operation(
        PROG, lambda: combine_data_dirs(args.dest_dir, args.src_dirs, args.extra_files.split(), args.skip_fix))


if __name__ == "__main__":
    main()
