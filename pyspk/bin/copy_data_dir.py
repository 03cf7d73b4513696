"""Copy a data directory, optionally renaming utterances and speakers (Kaldi's utils/copy_data_dir.sh).

Usage: python -m pyspk.bin.copy_data_dir [--utt-prefix P] [--utt-suffix S] [--spk-prefix P] [--spk-suffix S]
           <src-dir> <dest-dir>
Values (wav.scp, feats.scp ...) are kept. utils/copy_data_dir.sh validates the result.
"""

import argparse

from pyspk.cli import report_data_dir_operation
from pyspk.data.ops import copy_data_dir

PROG = "copy_data_dir"


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("utt-prefix", "utt-suffix", "spk-prefix", "spk-suffix"):
        parser.add_argument(f"--{name}", default="")
    parser.add_argument("src_dir")
    parser.add_argument("dest_dir")
    args = parser.parse_args(argv)
    for value in (args.utt_prefix, args.utt_suffix, args.spk_prefix, args.spk_suffix):
        if any(c.isspace() for c in value):
            parser.error(f"prefixes and suffixes may not contain whitespace: '{value}'")
    report_data_dir_operation(PROG, lambda: copy_data_dir(args.src_dir, args.dest_dir, args.utt_prefix,
                                                          args.utt_suffix, args.spk_prefix, args.spk_suffix))


if __name__ == "__main__":
    main()
