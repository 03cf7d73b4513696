"""Check a Kaldi data directory; prints every problem as file:line: message.

Usage: python -m pyspk.bin.validate_data_dir [--no-feats] [--no-wav] [--no-text]
           [--no-spk-sort] [--non-print] <data-dir>
(normally run through utils/validate_data_dir.sh). Exits 1 when a problem is found.
"""

import argparse
import sys

from pyspk.data.validate import check_data_dir

PROG = "validate_data_dir"


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-feats", action="store_true", help="feats.scp not required (checked when present)")
    parser.add_argument("--no-wav", action="store_true", help="wav.scp not required (checked when present)")
    parser.add_argument("--no-text", action="store_true", help="text not required (checked when present)")
    parser.add_argument("--no-spk-sort", action="store_true",
                        help="do not require utt2spk to be sorted by speaker as well as by utterance")
    parser.add_argument("--non-print", action="store_true", help="allow non-printable characters in text")
    parser.add_argument("data_dir")
    args = parser.parse_args(argv)
    try:
        report = check_data_dir(args.data_dir, need_feats=not args.no_feats, need_wav=not args.no_wav,
                                need_text=not args.no_text, spk_sort=not args.no_spk_sort,
                                non_print=args.non_print)
    except OSError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        sys.exit(1)
    for warning in report.warnings:
        print(f"{PROG}: WARNING: {warning}", file=sys.stderr)
    if not report.ok:
        for problem in report.problems:
            print(f"{PROG}: {problem}", file=sys.stderr)
        hidden = report.num_problems - len(report.problems)
        if hidden:
            print(f"{PROG}: ... and {hidden} more of the same kinds", file=sys.stderr)
        print(f"{PROG}: {report.num_problems} problem(s) in data directory {args.data_dir}", file=sys.stderr)
        sys.exit(1)
    print(f"{PROG}: Successfully validated data-directory {args.data_dir}")


if __name__ == "__main__":
    main()
