"""Unsupervised in-domain adaptation of a PLDA back-end (run by steps/adapt_plda.sh).

Usage:
  python -m pyspk.bin.adapt_plda [options] <plda-dir> <adapt-xvector-dir> <out-plda-dir>
e.g.:
  python -m pyspk.bin.adapt_plda --within-covar-scale 0.75 --between-covar-scale 0.25 \\
      exp/xvectors_train/plda exp/xvectors_sre16_major exp/xvectors_sre16_major/plda_adapt

As Kaldi's egs/sre16/v2: the unlabelled x-vectors of <adapt-xvector-dir>/xvector.scp,
minus their own mean, through <plda-dir>'s transform.mat and length norm, adapt
its PLDA (ivector-adapt-plda); scoring then subtracts the adaptation set's mean.
Writes <out-plda-dir>/{mean.vec (the adaptation set's mean), transform.mat (copied),
plda (adapted), backend.yaml, adaptation.yaml (the adaptations made)}, a
back-end dir that steps/score_plda.sh (and Kaldi's ivector-plda-scoring) use as is.
"""

import argparse
import logging
import os
import shutil
import sys

import numpy as np
import yaml

from pyspk.backend.embeddings import EmbeddingDir, write_kaldi_object
from pyspk.backend.pipeline import PldaBackend
from pyspk.backend.plda import adapt_plda
from pyspk.config import load_yaml
from pyspk.data.datadir import DataDirError
from pyspk.fileutil import atomic_open, atomic_path
from pyspk.logutil import setup_logging


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--within-covar-scale", type=float, default=0.75,
                        help="share of the excess variance added to the within-class covariance "
                             "(Kaldi's library default is 0.3) (default: %(default)s)")
    parser.add_argument("--between-covar-scale", type=float, default=0.25,
                        help="share of the excess variance added to the between-class covariance "
                             "(Kaldi's library default is 0.7) (default: %(default)s)")
    parser.add_argument("--mean-diff-scale", type=float, default=1.0,
                        help="scale of the outer product of the mean shift added to the adaptation "
                             "variance (default: %(default)s)")
    parser.add_argument("plda_dir")
    parser.add_argument("adapt_xvector_dir")
    parser.add_argument("out_plda_dir")
    return parser


def read_adaptations(plda_dir):
    """The adaptation records of ``plda_dir`` (an earlier adapt_plda output), else []."""
    path = os.path.join(plda_dir, "adaptation.yaml")
    if not os.path.isfile(path):
        return []
    record = load_yaml(path)
    if not isinstance(record, dict) or not isinstance(record.get("adaptations"), list):
        raise DataDirError(path, 0, "expected a mapping with a list 'adaptations'")
    return record["adaptations"]


def adapt_backend(args, log):
    if os.path.realpath(args.out_plda_dir) == os.path.realpath(args.plda_dir):
        raise ValueError(f"the output dir must differ from the PLDA dir {args.plda_dir}")
    backend = PldaBackend.load(args.plda_dir)
    previous = read_adaptations(args.plda_dir)
    scp = EmbeddingDir(args.adapt_xvector_dir).file("xvector.scp")
    _, x = EmbeddingDir(args.adapt_xvector_dir).xvectors()
    num, dim = x.shape
    if num < 2:
        raise DataDirError(scp, 0, f"PLDA adaptation needs at least 2 x-vectors, it has {num}")
    if backend.input_dim is not None and dim != backend.input_dim:
        raise DataDirError(scp, 0, f"x-vectors have dimension {dim}, the back-end in {args.plda_dir} "
                                   f"takes {backend.input_dim}")
    if num <= backend.plda.dim:
        log.warning("only %d adaptation x-vectors for a PLDA of dimension %d: their covariance is "
                    "rank-deficient and noisy", num, backend.plda.dim)

    # The sre16 pipe: ivector-subtract-global-mean (the set's own mean) | transform-vec | ivector-normalize-length.
    mean = x.mean(axis=0, dtype=np.float64)
    adapted_input = PldaBackend(backend.plda, mean, backend.lda, backend.lnorm)
    try:
        vectors = adapted_input.preprocess(x)
    except ValueError as e:
        raise DataDirError(scp, 0, f"does not fit the back-end in {args.plda_dir}: {e}") from None
    plda = adapt_plda(backend.plda, vectors, args.within_covar_scale, args.between_covar_scale,
                      args.mean_diff_scale)

    out = args.out_plda_dir
    os.makedirs(out, exist_ok=True)
    write_kaldi_object(os.path.join(out, "mean.vec"), mean)
    lda_in, lda_out = os.path.join(args.plda_dir, "transform.mat"), os.path.join(out, "transform.mat")
    if os.path.isfile(lda_in):
        with atomic_path(lda_out) as tmp:
            shutil.copyfile(lda_in, tmp)
    elif os.path.exists(lda_out):
        os.remove(lda_out)  # a stale LDA from an earlier run would be applied by the scorer
    record = {"plda_dir": args.plda_dir, "xvector_dir": args.adapt_xvector_dir, "num_vectors": num,
              "within_covar_scale": args.within_covar_scale, "between_covar_scale": args.between_covar_scale,
              "mean_diff_scale": args.mean_diff_scale}
    with atomic_open(os.path.join(out, "adaptation.yaml"), "w", encoding="utf-8") as f:
        yaml.safe_dump({"adaptations": [*previous, record]}, f, sort_keys=False)
    with atomic_open(os.path.join(out, "backend.yaml"), "w", encoding="utf-8") as f:
        # The options of the trained back-end (its keys are those PldaBackend.load accepts);
        # the adaptation is recorded in adaptation.yaml.
        f.write(f"# {args.plda_dir} adapted to {args.adapt_xvector_dir} by pyspk.bin.adapt_plda: "
                "see adaptation.yaml\n")
        yaml.safe_dump({"lnorm": backend.lnorm, **backend.info}, f, sort_keys=False)
    plda.write(os.path.join(out, "plda"))  # last: the step's completion test looks for it
    return num, plda.dim


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    log = logging.getLogger("adapt_plda")
    try:
        num, dim = adapt_backend(args, log)
    except (DataDirError, ValueError, OSError) as e:
        sys.exit(f"adapt_plda: {e}")
    log.info("Done: PLDA of dimension %d in %s adapted to %d x-vectors of %s (within %g, between %g, "
             "mean diff %g), written to %s", dim, args.plda_dir, num, args.adapt_xvector_dir,
             args.within_covar_scale, args.between_covar_scale, args.mean_diff_scale, args.out_plda_dir)


if __name__ == "__main__":
    main()
