"""PLDA scoring of a Kaldi trials file (run by steps/score_plda.sh).

Usage:
  python -m pyspk.bin.score_plda [options] <plda-dir> <trials> <enroll-xvector-dir> <test-xvector-dir> <scores-out>
e.g.:
  python -m pyspk.bin.score_plda exp/xvectors_train/plda data/voxceleb1_test/trials \\
      exp/xvectors_voxceleb1_test exp/xvectors_voxceleb1_test exp/scores/plda_vox1

As Kaldi's ivector-plda-scoring after ivector-subtract-global-mean (mean.vec),
transform-vec (transform.mat) and ivector-normalize-length: <plda-dir> may be
made by train_plda or be Kaldi's own (mean.vec, transform.mat, plda; binary or
text). With --enroll-level spk the enrolment number of utterances
(num_utts.ark) enters the PLDA transform and likelihood ratio, as --num-utts does.
"""

import argparse
import logging
import sys

from pyspk.backend.cli import add_scoring_options, bool_arg
from pyspk.backend.pipeline import PldaBackend
from pyspk.backend.trials import score_trials_file
from pyspk.data.datadir import DataDirError
from pyspk.logutil import setup_logging


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--normalize-length", type=bool_arg, default=True,
                        help="PLDA length normalisation as ivector-plda-scoring (default: true)")
    parser.add_argument("--simple-length-norm", type=bool_arg, default=False,
                        help="normalise to length sqrt(dim) instead (default: false)")
    parser.add_argument("--smoothing", type=float, default=0.0,
                        help="within-class covariance smoothing, as ivector-copy-plda (default: %(default)s)")
    add_scoring_options(parser)
    parser.add_argument("plda_dir")
    parser.add_argument("trials")
    parser.add_argument("enroll_dir")
    parser.add_argument("test_dir")
    parser.add_argument("scores_out")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    log = logging.getLogger("score_plda")
    try:
        backend = PldaBackend.load(args.plda_dir)
        scorer = backend.scorer(args.normalize_length, args.simple_length_norm, args.smoothing)
        num_scored, num_skipped = score_trials_file(
            scorer, args.trials, args.enroll_dir, args.test_dir, args.scores_out, args.enroll_level,
            args.asnorm_cohort or None, args.cohort_level, args.top_n, args.skip_missing,
            expected_dim=backend.input_dim, expected_from=f"the back-end in {args.plda_dir}",
            cohort_data=args.cohort_data or None)
    except (DataDirError, ValueError, OSError) as e:
        sys.exit(f"score_plda: {e}")
    log.info("Done %d trials, skipped %d; wrote %s", num_scored, num_skipped, args.scores_out)


if __name__ == "__main__":
    main()
