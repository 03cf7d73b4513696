"""Embedding transforms of Kaldi's x-vector back-end: LDA, affine transform, length norm.

``compute_lda`` follows ``ivector-compute-lda``: the input mean is removed,
within- and between-class covariances are accumulated per speaker, the
(interpolated total/within) covariance is normalised by an eigen-transform
with eigenvalues floored relative to the largest, and the top eigenvectors of
the projected between-class covariance are kept. The result is Kaldi's affine
``lda_dim x (dim + 1)`` matrix whose last column removes the mean, applied as
``transform-vec`` does.
"""

import logging

import numpy as np
from numpy.typing import ArrayLike

logger = logging.getLogger(__name__)


def length_normalize(x: ArrayLike, scaleup: bool = True) -> np.ndarray:
    """Kaldi ``ivector-normalize-length``: rows scaled to norm ``sqrt(dim)`` (or 1).

    Zero rows are left unchanged, as Kaldi does (with a warning).
    """
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if scaleup:
        norms = norms / np.sqrt(x.shape[1])
    zero = norms[:, 0] == 0
    if zero.any():
        logger.warning("%d zero vectors left unnormalised", int(zero.sum()))
        norms[zero] = 1.0
    return x / norms


def apply_transform(matrix: ArrayLike, x: ArrayLike) -> np.ndarray:
    """Kaldi ``transform-vec``: linear (``d x dim``) or affine (``d x (dim + 1)``) transform of rows."""
    matrix = np.asarray(matrix, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    dim = x.shape[1]
    if matrix.ndim != 2 or matrix.shape[1] not in (dim, dim + 1):
        raise ValueError(f"transform of shape {matrix.shape} does not apply to {dim}-dim vectors")
    y = x @ matrix[:, :dim].T
    if matrix.shape[1] == dim + 1:
        y += matrix[:, dim]
    return y


def group_sums(x: np.ndarray, group_index: np.ndarray, group_counts: np.ndarray) -> np.ndarray:
    """Row sums of ``x`` per group (groups ``0..G-1``, every group non-empty)."""
    order = np.argsort(group_index, kind="stable")
    starts = np.concatenate(([0], np.cumsum(group_counts)[:-1]))
    return np.add.reduceat(x[order], starts, axis=0)


def _normalizing_transform(covar, floor):
    """``P`` with ``P covar P^T = I`` via eigen-decomposition, eigenvalues floored relative to the largest."""
    eigvals, eigvecs = np.linalg.eigh(covar)
    order = np.argsort(eigvals)[::-1]
    eigvals, eigvecs = eigvals[order], eigvecs[:, order]
    floor_value = floor * eigvals[0]
    num_floored = int((eigvals < floor_value).sum())
    if num_floored:
        logger.warning("floored %d eigenvalues of the covariance to %g", num_floored, floor_value)
    eigvals = np.maximum(eigvals, floor_value)
    return eigvecs.T / np.sqrt(eigvals)[:, None]


def compute_lda(x: ArrayLike, labels: ArrayLike, lda_dim: int, total_covariance_factor: float = 0.0,
                covariance_floor: float = 1.0e-6) -> np.ndarray:
    """Kaldi ``ivector-compute-lda``: affine LDA matrix of shape ``(lda_dim, dim + 1)``.

    ``x``: utterance embeddings (rows); ``labels``: a speaker label per row.
    """
    x = np.asarray(x, dtype=np.float64)
    num_utts, dim = x.shape
    if not 0 < lda_dim <= dim:
        raise ValueError(f"LDA dimension must be in 1..{dim}, got {lda_dim}")
    _, spk_index, spk_counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    num_spk = spk_counts.size
    if num_utts == num_spk:
        raise ValueError("cannot compute LDA: no speaker has more than one utterance")
    if num_utts < dim:
        raise ValueError(f"cannot compute LDA: {num_utts} utterances are too few for dimension {dim}")
    mean = x.mean(axis=0)
    centred = x - mean
    spk_means = group_sums(centred, spk_index, spk_counts) / spk_counts[:, None]
    total_scatter = centred.T @ centred
    between_scatter = (spk_means * spk_counts[:, None]).T @ spk_means
    total_covar = total_scatter / num_utts
    within_covar = (total_scatter - between_scatter) / num_utts
    to_normalize = total_covariance_factor * total_covar + (1.0 - total_covariance_factor) * within_covar
    normalizing = _normalizing_transform(to_normalize, covariance_floor)
    between_proj = normalizing @ (total_covar - within_covar) @ normalizing.T
    eigvals, eigvecs = np.linalg.eigh((between_proj + between_proj.T) / 2)
    order = np.argsort(eigvals)[::-1][:lda_dim]
    logger.info("LDA: %d speakers, %d utterances; kept between-class eigenvalues %.4g .. %.4g",
                num_spk, num_utts, eigvals[order[0]], eigvals[order[-1]])
    linear = eigvecs[:, order].T @ normalizing
    return np.hstack([linear, -(linear @ mean)[:, None]])
