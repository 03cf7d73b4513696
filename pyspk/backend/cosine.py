"""Cosine scoring, as Kaldi's ``ivector-normalize-length`` + ``ivector-compute-dot-products``.

An optional global mean (from a training set) is subtracted first; with
``lnorm`` false the score is the plain dot product.
"""

import numpy as np
from numpy.typing import ArrayLike

from pyspk.backend.scoring import EnrollSide, TestSide


class CosineScorer:
    """Cosine (or, without ``lnorm``, dot-product) scoring after subtracting an optional global ``mean``."""

    def __init__(self, mean: ArrayLike | None = None, lnorm: bool = True):
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64).ravel()
        self.lnorm = lnorm

    def _prepare(self, x):
        x = np.asarray(x, dtype=np.float64)
        if self.mean is not None:
            if self.mean.size != x.shape[1]:
                raise ValueError(f"mean has dimension {self.mean.size}, embeddings have {x.shape[1]}")
            x = x - self.mean
        if self.lnorm:
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.where(norms > 0, norms, 1.0)
        return x.astype(np.float32)

    def enroll_side(self, x: ArrayLike, counts: ArrayLike | None = None) -> EnrollSide:
        """Enrolment vectors; ``counts`` (utterances per enrolment) do not affect cosine scores."""
        return EnrollSide(self._prepare(x))

    def test_side(self, x: ArrayLike, group_values: ArrayLike | None = None) -> TestSide:
        """Test vectors; ``group_values`` (of the enrolment side) do not affect cosine scores."""
        return TestSide(self._prepare(x))
