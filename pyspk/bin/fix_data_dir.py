"""Make a data directory consistent, as Kaldi's utils/fix_data_dir.sh.

Usage: python -m pyspk.bin.fix_data_dir [--utt-extra-files "f1 f2"] [--spk-extra-files "f1 f2"] <data-dir>
Keeps the utterances present in all per-utterance files (whose speaker and
recording are in all per-speaker / per-recording files), sorts and de-duplicates
every file, rebuilds spk2utt; changed files are first copied to <data-dir>/.backup.
"""

import argparse
import sys

from pyspk.data.datadir import DataDirError
from pyspk.data.ops import fix_data_dir

PROG = "fix_data_dir"


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utt-extra-files", default="", help="more per-utterance files to filter (space-separated)")
    parser.add_argument("--spk-extra-files", default="", help="more per-speaker files to filter (space-separated)")
    parser.add_argument("data_dir")
    args = parser.parse_args(argv)
    try:
        messages = fix_data_dir(args.data_dir, args.utt_extra_files.split(), args.spk_extra_files.split())
    except (DataDirError, OSError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        sys.exit(1)
    for message in messages:
        print(f"{PROG}: {message}")


if __name__ == "__main__":
    main()
