"""Copy a Kaldi PLDA model, converting text/binary and optionally smoothing (as ivector-copy-plda).

Usage:
  python -m pyspk.bin.copy_plda [options] <plda-in> <plda-out>
e.g.:
  python -m pyspk.bin.copy_plda --binary false exp/xvectors_train/plda exp/xvectors_train/plda.txt

Reads text or binary Kaldi Plda objects; writes text (as copy-plda
--binary=false) unless --binary true.
"""

import argparse
import sys

from pyspk.backend.plda import Plda
from pyspk.cli import bool_arg
from pyspk.data.datadir import DataDirError


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", type=bool_arg, default=False, help="write Kaldi binary (default: false)")
    parser.add_argument("--smoothing", type=float, default=0.0,
                        help="add this times the between-class to the within-class covariance (default: 0)")
    parser.add_argument("plda_in")
    parser.add_argument("plda_out")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        plda = Plda.read(args.plda_in)
        if args.smoothing:
            plda = plda.smooth_within_class_covariance(args.smoothing)
        plda.write(args.plda_out, binary=args.binary)
    except (DataDirError, ValueError, OSError) as e:
        sys.exit(f"copy_plda: {e}")


if __name__ == "__main__":
    main()
