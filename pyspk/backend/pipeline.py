"""Kaldi's x-vector PLDA back-end (egs/voxceleb/v2): global mean, LDA, length norm, PLDA.

A PLDA directory holds Kaldi's files, usable by Kaldi's own tools::

    mean.vec       ivector-mean of the training x-vectors (Kaldi binary vector)
    transform.mat  ivector-compute-lda affine matrix (absent without LDA)
    plda           the PLDA model, Kaldi text format (binary is read too)
    backend.yaml   pyspk's record of the options (absent in a Kaldi-made dir:
                   then Kaldi's defaults, i.e. length norm on, are assumed)

so Kaldi's ``xvectors_train`` dir can be scored here, and ours by
``ivector-plda-scoring`` with the usual ``ivector-subtract-global-mean |
transform-vec | ivector-normalize-length`` pipes.
"""

import os
from collections.abc import Mapping
from typing import Any, Self

import numpy as np
import yaml
from numpy.typing import ArrayLike

from pyspk.backend.embeddings import read_kaldi_object, write_kaldi_object
from pyspk.backend.plda import Plda, PldaScorer, estimate_plda
from pyspk.backend.transforms import apply_transform, compute_lda, length_normalize
from pyspk.config import check_section, keys_map, load_yaml
from pyspk.data.datadir import DataDirError
from pyspk.fileutil import PathLike, atomic_open

# backend.yaml: what the back-end was trained with (read back as written).
BACKEND_SECTION = keys_map(("lda_dim", "lnorm", "num_em_iters", "total_covariance_factor", "num_speakers",
                           "num_utterances"))


class PldaBackend:
    """Global mean, optional LDA, optional length norm, then PLDA: what a PLDA directory holds."""

    def __init__(self, plda: Plda, mean: ArrayLike | None = None, lda: ArrayLike | None = None, lnorm: bool = True,
                 info: Mapping[str, Any] | None = None):
        self.plda = plda
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64).ravel()
        self.lda = None if lda is None else np.asarray(lda, dtype=np.float64)
        self.lnorm = lnorm
        self.info = dict(info or {})
        out_dim = self.lda.shape[0] if self.lda is not None else self.input_dim
        if out_dim != plda.dim:
            raise ValueError(f"the PLDA model has dimension {plda.dim} but its input has dimension {out_dim}")
        if self.mean is not None and self.lda is not None and self.lda.shape[1] not in (self.mean.size,
                                                                                          self.mean.size + 1):
            raise ValueError(f"mean.vec has dimension {self.mean.size}, transform.mat has shape {self.lda.shape}")

    @property
    def input_dim(self) -> int | None:
        """Dimension of the raw embeddings this back-end takes (None if unconstrained)."""
        if self.mean is not None:
            return self.mean.size
        if self.lda is not None:
            return None  # linear or affine: apply_transform checks it
        return self.plda.dim

    def preprocess(self, x: ArrayLike) -> np.ndarray:
        """Raw embeddings -> PLDA input: minus mean, LDA, length norm to sqrt(dim)."""
        x = np.asarray(x, dtype=np.float64)
        if self.input_dim is not None and x.shape[1] != self.input_dim:
            raise ValueError(f"embeddings have dimension {x.shape[1]}, the back-end expects {self.input_dim}")
        if self.mean is not None:
            x = x - self.mean
        if self.lda is not None:
            x = apply_transform(self.lda, x)
        if self.lnorm:
            x = length_normalize(x)
        return x

    def scorer(self, normalize_length: bool = True, simple_length_norm: bool = False,
               smoothing: float = 0.0) -> PldaScorer:
        """A PldaScorer of this back-end (``smoothing``: ivector-copy-plda --smoothing)."""
        plda = self.plda.smooth_within_class_covariance(smoothing) if smoothing else self.plda
        return PldaScorer(plda, self.preprocess, normalize_length, simple_length_norm)

    def save(self, directory: PathLike) -> None:
        """Write the PLDA directory (Kaldi files and backend.yaml)."""
        os.makedirs(directory, exist_ok=True)
        if self.mean is not None:
            write_kaldi_object(os.path.join(directory, "mean.vec"), self.mean)
        lda_path = os.path.join(directory, "transform.mat")
        if self.lda is not None:
            write_kaldi_object(lda_path, self.lda)
        elif os.path.exists(lda_path):
            os.remove(lda_path)  # a stale LDA from an earlier run would be applied by the scorer
        self.plda.write(os.path.join(directory, "plda"))
        with atomic_open(os.path.join(directory, "backend.yaml"), "w", encoding="utf-8") as f:
            yaml.safe_dump({"lnorm": self.lnorm, **self.info}, f, sort_keys=False)

    @classmethod
    def load(cls, directory: PathLike) -> Self:
        """Read a PLDA directory written by ``save`` or by Kaldi's recipe."""
        if not os.path.isdir(directory):
            raise DataDirError(directory, 0, "PLDA directory does not exist")

        def path(name):
            return os.path.join(directory, name)

        info = {}
        if os.path.isfile(path("backend.yaml")):
            info = load_yaml(path("backend.yaml"))
            check_section(info, BACKEND_SECTION, path("backend.yaml"))
        plda = Plda.read(path("plda"))
        mean = read_kaldi_object(path("mean.vec")).ravel() if os.path.isfile(path("mean.vec")) else None
        lda = read_kaldi_object(path("transform.mat")) if os.path.isfile(path("transform.mat")) else None
        if lda is not None and lda.ndim != 2:
            raise DataDirError(path("transform.mat"), 0, "expected a matrix")
        lnorm = bool(info.pop("lnorm", True))
        try:
            return cls(plda, mean, lda, lnorm, info)
        except ValueError as e:
            raise DataDirError(directory, 0, str(e)) from None


def train_plda_backend(x: ArrayLike, labels: ArrayLike, lda_dim: int = 0, lnorm: bool = True, num_em_iters: int = 10,
                       total_covariance_factor: float = 0.0, mean: ArrayLike | None = None) -> PldaBackend:
    """Train mean + LDA + PLDA as the voxceleb v2 recipe does.

    ``x``: utterance embeddings with speaker ``labels``; ``mean``: the global
    mean to subtract (default: the mean of ``x``); ``lda_dim`` 0: no LDA.
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0) if mean is None else np.asarray(mean, dtype=np.float64)
    centred = x - mean
    lda = None
    if lda_dim:
        lda = compute_lda(centred, labels, lda_dim, total_covariance_factor)
        centred = apply_transform(lda, centred)
    if lnorm:
        centred = length_normalize(centred)
    plda = estimate_plda(centred, labels, num_em_iters)
    info = {"lda_dim": int(lda_dim), "num_em_iters": int(num_em_iters),
            "total_covariance_factor": float(total_covariance_factor),
            "num_speakers": int(np.unique(np.asarray(labels)).size), "num_utterances": len(x)}
    return PldaBackend(plda, mean, lda, lnorm, info)
