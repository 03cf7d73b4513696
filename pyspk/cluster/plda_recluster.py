"""Second clustering pass: agglomerative clustering on PLDA scores trained on the first pass's clusters.

Cosine scoring treats every direction of the embedding space alike; a PLDA
trained on the first-pass clusters (their confident members, as pseudo
speakers) learns which directions vary within a speaker and which between,
and its log-likelihood ratio (LLR) then decides which groups are one speaker.
The points (or the k-means micro-clusters of the first pass, for scale) are
merged by average linkage on ``-LLR`` until the mean LLR between two groups
falls below ``threshold``. LLR 0 would be the Bayes decision with equal
priors if the PLDA were calibrated, but one trained on a few dozen
pseudo-speakers is not: same-speaker pairs reach LLRs of -20 and less. The
default threshold (None) is therefore taken from the LLRs themselves as for
the cosine pass (:func:`pyspk.cluster.agglomerative.equal_prior_threshold`
on the LLRs of random pairs of utterances).

For one utterance on each side, Kaldi's LLR (:meth:`pyspk.backend.plda.Plda.log_likelihood_ratio`)
in the PLDA space, ``psi`` the between-class variances, is
``const + sum_d w_d a_d b_d - u_d (a_d^2 + b_d^2)`` with ``w = psi / (2 psi + 1)``,
``u = psi^2 / (2 (2 psi + 1) (psi + 1))`` and ``const = sum_d log((1 + psi) / v) / 2``,
``v = (2 psi + 1) / (psi + 1)``: its mean over all pairs of two groups needs
only each group's mean vector and mean ``u.a^2``, so the micro-cluster
reduction is exact for average linkage.
"""

import logging
import time

import numpy as np
import torch

from pyspk.backend.plda import estimate_plda
from pyspk.cluster.agglomerative import (
    cut_tree,
    equal_prior_threshold,
    nn_chain,
    random_pairs,
    result_from_labels,
)

logger = logging.getLogger(__name__)


def llr_terms(psi):
    """``(const, w, u)`` of the one-against-one PLDA LLR (see the module docstring)."""
    psi = np.asarray(psi, dtype=np.float64)
    v = (2 * psi + 1) / (psi + 1)
    return 0.5 * float(np.log((1 + psi) / v).sum()), psi / (2 * psi + 1), psi**2 / (2 * (2 * psi + 1) * (psi + 1))


def mean_llr_matrix(plda, x, groups, n_groups, block_rows=65536):
    """Mean PLDA LLR between the members of every pair of ``groups`` (rows of ``x``, raw embeddings)."""
    const, w, u = llr_terms(plda.psi)
    sum_y = torch.zeros(n_groups, plda.dim, dtype=torch.float64)
    sum_q = torch.zeros(n_groups, dtype=torch.float64)
    groups = torch.as_tensor(np.asarray(groups, dtype=np.int64))
    for start in range(0, x.shape[0], block_rows):  # bounded memory at VoxCeleb2 scale
        y, _ = plda.transform_vectors(np.asarray(x[start:start + block_rows], dtype=np.float64))
        index = groups[start:start + block_rows]
        sum_y.index_add_(0, index, torch.from_numpy(y))
        sum_q.index_add_(0, index, torch.from_numpy((y * y) @ u))
    counts = torch.bincount(groups, minlength=n_groups).clamp_min(1).double()
    mean_y, mean_q = (sum_y / counts[:, None]).numpy(), (sum_q / counts).numpy()
    return const - mean_q[:, None] - mean_q[None, :] + (mean_y * w) @ mean_y.T


def auto_llr_threshold(plda, x, seed=0):
    """LLR threshold from the LLRs of random pairs of rows of ``x`` (see the module docstring)."""
    first, second = random_pairs(x.shape[0], seed=seed)
    (y1, _), (y2, _) = (plda.transform_vectors(np.asarray(x[rows], dtype=np.float64)) for rows in (first, second))
    threshold = equal_prior_threshold(plda.log_likelihood_ratio(y1, 1, y2), seed=seed)
    logger.info("PLDA threshold from %d random pairs: LLR %.3f", len(first), threshold)
    return threshold


def cluster_plda(x, labels, keep, num_em_iters=10):
    """A PLDA trained on the rows ``keep`` of ``x`` with their first-pass cluster ``labels`` as speakers."""
    labels, keep = np.asarray(labels), np.asarray(keep, dtype=bool)
    kept_labels = np.unique(labels[keep], return_inverse=True)[1]
    if kept_labels.size == 0 or kept_labels.max() < 1:
        raise ValueError("the PLDA re-clustering needs at least two first-pass clusters with kept members")
    return estimate_plda(np.asarray(x, dtype=np.float64)[keep], kept_labels, num_em_iters=num_em_iters)


def plda_recluster(x, labels, keep, *, threshold=None, micro=None, num_em_iters=10, seed=0, plda=None):
    """Re-cluster the rows of ``x`` by average-linkage AHC on the LLR of a PLDA trained on ``labels[keep]``.

    ``micro``: ``(labels, sizes)`` of a micro-cluster reduction (None: every
    point on its own); ``threshold`` None: from the data; ``plda``: that PLDA
    when the caller has it already. Returns a :class:`~pyspk.cluster.kmeans.ClusterResult`
    with the clusters found (centres: means of the members in ``x``'s space).
    """
    started = time.perf_counter()
    x = torch.as_tensor(x, dtype=torch.float32)
    keep = np.asarray(keep, dtype=bool)
    if plda is None:
        plda = cluster_plda(x.numpy(), labels, keep, num_em_iters)
    if threshold is None:
        threshold = auto_llr_threshold(plda, x.numpy(), seed)
    n = x.shape[0]
    micro_labels, sizes = micro if micro is not None else (np.arange(n), np.ones(n, dtype=np.int64))
    dist = (-mean_llr_matrix(plda, x.numpy(), micro_labels, len(sizes))).astype(np.float32)
    pairs, heights = nn_chain(dist, sizes, "average")
    merged = cut_tree(pairs, heights, len(sizes), threshold=-threshold)
    result = result_from_labels(x, merged[micro_labels], started)
    logger.info("PLDA re-clustering (trained on %d utterances of %d clusters) of %d points: %d clusters at LLR %.3f",
                keep.sum(), len(np.unique(np.asarray(labels)[keep])), len(sizes), result.centers.shape[0], threshold)
    return result
