"""Make a data directory consistent, as Kaldi's utils/fix_data_dir.sh.

Usage: python -m pyspk.bin.fix_data_dir [--utt-extra-files "f1 f2"] [--spk-extra-files "f1 f2"] <data-dir>
Keeps the utterances present in all per-utterance files (whose speaker and
recording are in all per-speaker / per-recording files), sorts and de-duplicates
every file, rebuilds spk2utt; changed files are first copied to <data-dir>/.backup.
"""

import argparse

from pyspk.cli import report_data_dir_operation
from pyspk.data.ops import fix_data_dir

PROG = "fix_data_dir"


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utt-extra-files", default="", help="more per-utterance files to filter (space-separated)")
    parser.add_argument("--spk-extra-files", default="", help="more per-speaker files to filter (space-separated)")
    parser.add_argument("data_dir")
    args = parser.parse_args(argv)
    report_data_dir_operation(
        PROG, lambda: fix_data_dir(args.data_dir, args.utt_extra_files.split(), args.spk_extra_files.split()))


if __name__ == "__main__":
    main()
