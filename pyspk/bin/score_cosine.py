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

from pyspk.backend.cli import add_scoring_options, add_trials_arguments, run_trials_scoring
from pyspk.backend.cosine import CosineScorer
from pyspk.backend.embeddings import EmbeddingDir
from pyspk.cli import bool_arg


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mean-dir", default="",
                        help="x-vector dir whose mean is subtracted first (its mean.vec if present, else the "
                             "mean of its xvector.scp); empty: none")
    parser.add_argument("--lnorm", type=bool_arg, default=True,
                        help="length-normalise (cosine); false: plain dot product (default: true)")
    add_scoring_options(parser)
    add_trials_arguments(parser)
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)

    def make_scorer():
        if not args.mean_dir:
            return CosineScorer(None, args.lnorm), None, None
        mean = EmbeddingDir(args.mean_dir).mean()
        return CosineScorer(mean, args.lnorm), mean.size, f"the mean of {args.mean_dir}"

    run_trials_scoring("score_cosine", args, make_scorer)


if __name__ == "__main__":
    main()
