"""Train Kaldi's x-vector PLDA back-end: mean, LDA, length norm, PLDA (run by steps/train_plda.sh).

Usage:
  python -m pyspk.bin.train_plda [options] <xvector-dir> <data-dir> <plda-dir>
e.g.:
  python -m pyspk.bin.train_plda --lda-dim 128 exp/xvectors_train data/train exp/xvectors_train/plda

Speaker labels come from <data-dir>/utt2spk (true or pseudo labels). As in
Kaldi's egs/voxceleb/v2: mean.vec is the mean of all of xvector.scp; LDA
(ivector-compute-lda) and PLDA (ivector-compute-plda) use the labelled
utterances after subtracting it, PLDA after LDA and length normalisation.
Writes <plda-dir>/{mean.vec,transform.mat,plda,backend.yaml}, Kaldi-readable.
"""

import argparse
import logging
import sys

import numpy as np

from pyspk.backend.embeddings import EmbeddingDir
from pyspk.backend.pipeline import train_plda_backend
from pyspk.cli import bool_arg
from pyspk.data.datadir import DataDir, DataDirError
from pyspk.logutil import setup_logging


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lda-dim", type=int, default=128, help="LDA dimension; 0: no LDA (default: %(default)s)")
    parser.add_argument("--lnorm", type=bool_arg, default=True,
                        help="length-normalise before PLDA (ivector-normalize-length) (default: true)")
    parser.add_argument("--num-em-iters", type=int, default=10, help="PLDA E-M iterations (default: %(default)s)")
    parser.add_argument("--total-covariance-factor", type=float, default=0.0,
                        help="LDA: 0 normalises the within-class covariance, 1 the total (default: %(default)s)")
    parser.add_argument("xvector_dir")
    parser.add_argument("data_dir")
    parser.add_argument("plda_dir")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    log = logging.getLogger("train_plda")
    try:
        if args.lda_dim < 0 or args.num_em_iters < 1:
            raise ValueError("--lda-dim must be >= 0 and --num-em-iters >= 1")
        keys, x = EmbeddingDir(args.xvector_dir).xvectors()
        utt2spk = DataDir(args.data_dir).utt2spk()
        labelled = np.array([key in utt2spk for key in keys])
        num_unembedded = len(utt2spk) - int(labelled.sum())
        if num_unembedded:
            embedded = set(keys)
            first = next(utt for utt in utt2spk if utt not in embedded)
            log.warning("%d utterances of %s/utt2spk have no x-vector (e.g. %s); they are not used",
                        num_unembedded, args.data_dir, first)
        if not labelled.all():
            log.info("%d x-vectors have no speaker in utt2spk; used for the mean only", int((~labelled).sum()))
        if not labelled.any():
            raise ValueError(f"no utterance of {args.xvector_dir}/xvector.scp is in {args.data_dir}/utt2spk")
        labels = [utt2spk[key] for key, keep in zip(keys, labelled, strict=True) if keep]
        backend = train_plda_backend(x[labelled], labels, args.lda_dim, args.lnorm, args.num_em_iters,
                                     args.total_covariance_factor, mean=x.mean(axis=0, dtype=np.float64))
        backend.save(args.plda_dir)
    except (DataDirError, ValueError, OSError) as e:
        sys.exit(f"train_plda: {e}")
    log.info("Done: PLDA of dimension %d from %d utterances of %d speakers written to %s",
             backend.plda.dim, len(labels), len(set(labels)), args.plda_dir)


if __name__ == "__main__":
    main()
