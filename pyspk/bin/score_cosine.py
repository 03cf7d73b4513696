"""Cosine scoring of a Kaldi trials file (run by steps/score_cosine.sh).

Usage:
  python -m pyspk.bin.score_cosine [options] <trials> <enroll-xvector-dir> <test-xvector-dir> <scores-out>
e.g.:
  python -m pyspk.bin.score_cosine --mean-dir exp/xvectors_train --asnorm-cohort exp/xvectors_train \\
      data/voxceleb1_test/trials exp/xvectors_voxceleb1_test exp/xvectors_voxceleb1_test exp/scores/cosine_vox1

Equivalent to Kaldi's ivector-subtract-global-mean | ivector-normalize-length |
ivector-compute-dot-products; writes "enroll test score" lines in trials order.
"""

import argparse
import logging
import sys

from pyspk.backend.cli import add_scoring_options, bool_arg
from pyspk.backend.cosine import CosineScorer
from pyspk.backend.embeddings import EmbeddingDir
from pyspk.backend.trials import score_trials_file
from pyspk.data.datadir import DataDirError
from pyspk.logutil import setup_logging


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mean-dir", default="",
                        help="x-vector dir whose mean is subtracted first (its mean.vec if present, else the "
                             "mean of its xvector.scp); empty: none")
    parser.add_argument("--lnorm", type=bool_arg, default=True,
                        help="length-normalise (cosine); false: plain dot product (default: true)")
    add_scoring_options(parser)
    parser.add_argument("trials")
    parser.add_argument("enroll_dir")
    parser.add_argument("test_dir")
    parser.add_argument("scores_out")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    log = logging.getLogger("score_cosine")
    try:
        mean = EmbeddingDir(args.mean_dir).mean() if args.mean_dir else None
        num_scored, num_skipped = score_trials_file(
            CosineScorer(mean, args.lnorm), args.trials, args.enroll_dir, args.test_dir, args.scores_out,
            args.enroll_level, args.asnorm_cohort or None, args.cohort_level, args.top_n, args.skip_missing,
            expected_dim=None if mean is None else mean.size,
            expected_from=f"the mean of {args.mean_dir}" if args.mean_dir else None,
            cohort_data=args.cohort_data or None)
    except (DataDirError, ValueError, OSError) as e:
        sys.exit(f"score_cosine: {e}")
    log.info("Done %d trials, skipped %d; wrote %s", num_scored, num_skipped, args.scores_out)


if __name__ == "__main__":
    main()
