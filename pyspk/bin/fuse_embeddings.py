"""Fuse the embeddings of several systems (e.g. MeMo's teachers) into one x-vector directory.

Usage:
  python -m pyspk.bin.fuse_embeddings <xvector-dir-1> <xvector-dir-2> [...] <out-dir>
e.g.:
  python -m pyspk.bin.fuse_embeddings exp/memo/xvectors_train exp/memo/xvectors_teacher_ecapa_train \\
      exp/memo/xvectors_fused_train

Each system's embeddings have their own mean (over the utterances given) removed and are
length-normalised; the systems are then concatenated and scaled by 1/sqrt(n), so every fused
embedding has unit length and the cosine of two fused embeddings is the mean of the systems'
cosines: what the pipeline's fused cosine scores are (steps/fuse_scores.sh, equal weights),
here for clustering. Writes <out-dir>/xvector.ark and xvector.scp (utterances of the first
directory, all of which every other must hold).
"""

import argparse
import logging
import os
import sys

import numpy as np

from pyspk.backend.embeddings import EmbeddingDir, write_vector_scp
from pyspk.backend.transforms import length_normalize
from pyspk.data.datadir import DataDirError
from pyspk.logutil import setup_logging


def fuse_embeddings(matrices):
    """Rows of the ``matrices`` (same utterances, same order): mean-removed, length-normalised, joined / sqrt(n)."""
    parts = []
    for matrix in matrices:
        centred = np.asarray(matrix, dtype=np.float64)
        parts.append(length_normalize(centred - centred.mean(0), scaleup=False))
    return (np.concatenate(parts, axis=1) / np.sqrt(len(parts))).astype(np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", help="two or more x-vector directories, then the output directory")
    args = parser.parse_args(argv)
    if len(args.dirs) < 3:
        parser.error("need at least two x-vector directories and an output directory")
    inputs, out = args.dirs[:-1], args.dirs[-1]
    setup_logging()
    try:
        keys, first = EmbeddingDir(inputs[0]).xvectors()
        matrices = [first]
        for path in inputs[1:]:
            other_keys, other = EmbeddingDir(path).xvectors()
            row = {key: i for i, key in enumerate(other_keys)}
            missing = [key for key in keys if key not in row]
            if missing:
                raise DataDirError(os.path.join(path, "xvector.scp"), 0,
                                   f"{len(missing)} utterances of {inputs[0]} missing, e.g. '{missing[0]}'")
            matrices.append(other[[row[key] for key in keys]])
        os.makedirs(out, exist_ok=True)
        write_vector_scp(os.path.join(out, "xvector.ark"), os.path.join(out, "xvector.scp"), keys,
                         fuse_embeddings(matrices))
    except (DataDirError, OSError) as e:
        sys.exit(f"fuse_embeddings: {e}")
    logging.getLogger("fuse_embeddings").info("Done: %d utterances of %d systems fused into %s", len(keys),
                                              len(inputs), out)


if __name__ == "__main__":
    main()
