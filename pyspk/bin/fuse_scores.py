"""Linear fusion of the score files of several systems on one trial list (run by steps/fuse_scores.sh).

Usage:
  python -m pyspk.bin.fuse_scores [options] <trials> <scores-1> <scores-2> [<scores-3> ...] <scores-out>
e.g.:
  python -m pyspk.bin.fuse_scores --weights "0.6 0.4" --normalize mean-std data/test/trials \\
      exp/memo/scores/cosine_test exp/memo/scores/cosine_ecapa_test exp/memo/scores/cosine_fused_test

Every input must hold a score for each trial exactly once (any order). The
output has one "enroll test score" line per trial, in trials order:
  fused = sum_k w_k * s_k   (s_k standardised over the trials with --normalize mean-std)
"""

import argparse
import logging
import sys

from pyspk.backend.fusion import NORMALIZATIONS, fuse_score_files, parse_weights
from pyspk.data.datadir import DataDirError
from pyspk.logutil import setup_logging


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="",
                        help="one weight per score file, e.g. \"0.6 0.4\", used as given; empty: equal weights "
                             "summing to 1 (default: empty)")
    parser.add_argument("--normalize", choices=NORMALIZATIONS, default="none",
                        help="per-system score normalisation before weighting; mean-std: standardise each "
                             "system's scores over the trials (default: %(default)s)")
    parser.add_argument("trials")
    parser.add_argument("scores", nargs="+", metavar="scores",
                        help="two or more input score files, then the output score file")
    return parser


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    if len(args.scores) < 3:
        parser.error("need at least two input score files and an output score file")
    inputs, out = args.scores[:-1], args.scores[-1]
    setup_logging()
    log = logging.getLogger("fuse_scores")
    try:
        weights = parse_weights(args.weights, len(inputs))
        fused = fuse_score_files(args.trials, inputs, out, weights, args.normalize)
    except (DataDirError, ValueError, OSError) as e:
        sys.exit(f"fuse_scores: {e}")
    log.info("Done: fused %d score files into %d scores in %s", len(inputs), fused.size, out)


if __name__ == "__main__":
    main()
