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

from pyspk.backend.cli import add_scoring_options, add_trials_arguments, run_trials_scoring
from pyspk.backend.pipeline import PldaBackend
from pyspk.cli import bool_arg


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
    add_trials_arguments(parser)
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)

    def make_scorer():
        backend = PldaBackend.load(args.plda_dir)
        scorer = backend.scorer(args.normalize_length, args.simple_length_norm, args.smoothing)
        return scorer, backend.input_dim, f"the back-end in {args.plda_dir}"

    run_trials_scoring("score_plda", args, make_scorer)


if __name__ == "__main__":
    main()
