"""Agglomerative (hierarchical) clustering of embeddings: a given number of clusters, or a threshold.

Bottom-up clustering needs all pairwise distances (O(N^2) memory), which is
fine for a few thousand points but not for VoxCeleb2. The embeddings are
then first over-clustered by k-means into micro-clusters (``reduce_clusters``
of them, or ``max_points`` when N exceeds it; a two-stage scheme common in
diarisation) whose centroids are merged, each weighted by its size; each
utterance then takes its micro-cluster's final label.

Merging is the nearest-neighbour chain algorithm (Murtagh 1983) on a dense
matrix with the Lance-Williams updates of ``average``, ``complete`` and
``ward`` linkage, which are all reducible, so the merges sorted by distance
form the dendrogram and a threshold cut keeps exactly the merges at or below
it. ``average`` and ``complete`` use cosine distance (the metric speaker
embeddings are scored with), ``ward`` Euclidean distance. With ``average``
linkage on unit-norm embeddings the micro-centroid step is exact: the mean
cosine similarity between two groups of unit vectors is the dot product of
their (unnormalised) means, so weighting the micro-centroids by their sizes
gives the average linkage of the points themselves (with the micro-clusters
kept whole). The same holds for PLDA scores (:mod:`pyspk.cluster.plda_recluster`):
any score ``const + q(a) + q(b) + a.W.b`` averages over groups through the
group means of ``a`` and ``q(a)``.

The default threshold (``threshold=None`` with ``n_clusters=0``) comes from
the embeddings' own score distribution, never from labels: a Gaussian
mixture (number of components by BIC) fitted to the cosine scores of random
pairs of utterances; most pairs are different speakers, a few the same, and
the highest-mean component is taken as the same-speaker pairs. The threshold
is the score where its density equals that of the other components, i.e.
the Bayes decision between same and different speaker with equal priors;
average linkage merges two groups while their mean pair score is on the
same-speaker side of it. Random pairs hold about one same-speaker pair in as
many as there are speakers, so with thousands of speakers (VoxCeleb2) the
same-speaker mode is too rare to fit: give the threshold explicitly there.
"""

import logging
import time

import numpy as np
import torch

from pyspk.cluster.kmeans import _distances_to_assigned, _result, kmeans, length_normalize

logger = logging.getLogger(__name__)

# Lloyd iterations of the k-means reduction. Measured at 1,000,000 x 192 into
# 1,000 micro-clusters (bench/kmeans.py data): 10 iterations instead of 20
# did 21 % less work, for inertia 0.002 % higher and the same AHC result.
MICRO_MAX_ITER = 10

LINKAGES = ("average", "complete", "ward")


def nn_chain(dist, sizes, linkage="average"):
    """All merges of the points of the symmetric ``dist`` matrix (overwritten) with weights ``sizes``.

    Returns ``(pairs, heights)``: merge ``m`` joins the clusters represented
    by indices ``pairs[m]`` (the second index keeps representing the union) at
    linkage distance ``heights[m]``; ward heights are Euclidean (``dist``
    holds squared ward distances, see :func:`_initial_distances`).
    """
    if linkage not in LINKAGES:
        raise ValueError(f"unknown linkage '{linkage}' (use one of {', '.join(LINKAGES)})")
    m = dist.shape[0]
    sizes = np.asarray(sizes, dtype=np.float64).copy()
    alive = np.ones(m, dtype=bool)
    np.fill_diagonal(dist, np.inf)
    pairs, heights = np.empty((max(m - 1, 0), 2), dtype=np.int64), np.empty(max(m - 1, 0))
    chain = []
    next_start = 0
    for merge in range(m - 1):
        while True:
            if not chain:
                while not alive[next_start]:
                    next_start += 1
                chain.append(next_start)
            a = chain[-1]
            row = dist[a]
            b = int(np.argmin(row))
            # On a tie keep the previous chain element, or the chain could cycle.
            if len(chain) > 1 and row[chain[-2]] <= row[b]:
                b = chain[-2]
            if len(chain) > 1 and b == chain[-2]:
                break
            chain.append(b)
        chain.pop()
        chain.pop()
        height = float(dist[a, b])
        n_a, n_b = sizes[a], sizes[b]
        if linkage == "average":
            new = (n_a * dist[a] + n_b * dist[b]) / (n_a + n_b)
        elif linkage == "complete":
            new = np.maximum(dist[a], dist[b])
        else:
            new = ((n_a + sizes) * dist[a] + (n_b + sizes) * dist[b] - sizes * height) / (n_a + n_b + sizes)
            height = float(np.sqrt(max(height, 0.0)))
        alive[a] = False
        new[~alive] = np.inf
        new[b] = np.inf
        dist[b], dist[:, b] = new, new
        dist[a], dist[:, a] = np.inf, np.inf
        sizes[b] = n_a + n_b
        pairs[merge], heights[merge] = (a, b), height
    return pairs, heights


def cut_tree(pairs, heights, m, n_clusters=0, threshold=None):
    """Cluster labels 0..K-1 of the ``m`` leaves: the ``m - n_clusters`` lowest merges, or those <= ``threshold``."""
    order = np.argsort(heights, kind="stable")
    count = m - n_clusters if n_clusters else int(np.searchsorted(heights[order], threshold, side="right"))
    parent = np.arange(m)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs[order[:count]]:
        parent[root(a)] = root(b)
    roots = np.array([root(i) for i in range(m)])
    return np.unique(roots, return_inverse=True)[1].astype(np.int64)


def _initial_distances(points, sizes, linkage):
    """Dense float32 distances between (weighted) points for :func:`nn_chain`.

    ``points``: means of unit vectors (average, complete) or of the vectors (ward).
    """
    points = points.astype(np.float64)
    if linkage == "average":
        # Mean cosine distance between the members of two micro-clusters of unit vectors.
        return (1.0 - points @ points.T).astype(np.float32)
    if linkage == "complete":
        unit = length_normalize(torch.from_numpy(points)).numpy()
        return (1.0 - unit @ unit.T).astype(np.float32)
    sizes = np.asarray(sizes, dtype=np.float64)
    sq = (points * points).sum(1)
    sq_dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * points @ points.T, 0.0)
    return (2.0 * np.outer(sizes, sizes) / (sizes[:, None] + sizes[None, :]) * sq_dist).astype(np.float32)


def equal_prior_threshold(scores, max_components=8, seed=0):
    """Same/different decision score from unlabelled pair ``scores`` (see the module docstring).

    Gaussian mixtures of 2..``max_components`` components are fitted and
    the one with the lowest BIC kept: the different-speaker pairs mix many
    speaker pairs and are not one Gaussian. Its highest-mean component models
    the same-speaker pairs, the others the different-speaker pairs; the
    threshold is the score between them where the two densities are equal
    (the Bayes decision with equal priors). ValueError when there is none.
    """
    # Imported here: scikit-learn takes seconds to load and only this path needs it.
    from sklearn.mixture import GaussianMixture

    scores = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    fits = [GaussianMixture(n, random_state=seed).fit(scores) for n in range(2, max_components + 1)]
    gmm = min(fits, key=lambda g: g.bic(scores))
    means, sds, weights = gmm.means_.ravel(), np.sqrt(gmm.covariances_.ravel()), gmm.weights_
    top = int(np.argmax(means))
    rest = np.arange(len(means)) != top
    grid = np.linspace(means[rest].max(), means[top], 2001)

    def log_density(index, weight):
        z = (grid[:, None] - means[index]) / sds[index]
        return np.log((weight * np.exp(-0.5 * z * z) / sds[index]).sum(1) + 1e-300)

    others = np.flatnonzero(rest)
    gap = log_density(np.array([top]), np.ones(1)) - log_density(others, weights[others] / weights[others].sum())
    crossing = np.flatnonzero(np.diff(np.sign(gap)) > 0)
    if crossing.size == 0:
        raise ValueError(f"the pair scores show no same-speaker mode (highest of {len(means)} components at "
                         f"{means[top]:.3f} +- {sds[top]:.3f}); give the threshold explicitly")
    logger.info("pair scores: %d Gaussian components (BIC); same-speaker one %.3f +- %.3f, weight %.3f",
                len(means), means[top], sds[top], weights[top])
    return float(grid[crossing[-1] + 1])


def random_pairs(n, n_pairs=50000, seed=0):
    """Index arrays of up to ``n_pairs`` random pairs of distinct rows out of ``n``."""
    first, second = np.random.default_rng(seed).integers(n, size=(2, n_pairs))
    distinct = first != second
    return first[distinct], second[distinct]


def auto_cosine_threshold(x, seed=0):
    """Cosine-distance threshold from the cosine scores of random pairs of the unit rows of ``x``."""
    x = np.asarray(x, dtype=np.float64)
    first, second = random_pairs(x.shape[0], seed=seed)
    score = equal_prior_threshold(np.einsum("ij,ij->i", x[first], x[second]), seed=seed)
    logger.info("threshold from %d random pairs: cosine score %.4f (distance %.4f)", len(first), score, 1 - score)
    return 1.0 - score


def micro_clusters(x, n_micro, seed=0, device=None):
    """``(labels, sizes)`` of a k-means reduction of the rows of ``x`` into ``n_micro`` micro-clusters."""
    logger.info("k-means into %d micro-clusters first", n_micro)
    micro = kmeans(x, n_micro, max_iter=MICRO_MAX_ITER, seed=seed, device=device)
    return micro.labels, np.bincount(micro.labels, minlength=n_micro)


def reduction_size(n, max_points, reduce_clusters):
    """How many micro-clusters the AHC merges (``n``: no reduction)."""
    if reduce_clusters:
        if not 1 <= reduce_clusters <= n:
            raise ValueError(f"--reduce-clusters ({reduce_clusters}) must be between 1 and the number of points ({n})")
        return reduce_clusters
    return min(n, max_points)


def group_means(values, labels, n_groups):
    """Per-group means of the rows of ``values`` (float64)."""
    values = torch.as_tensor(np.asarray(values, dtype=np.float64))
    index = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    sums = torch.zeros((n_groups, *values.shape[1:]), dtype=torch.float64).index_add_(0, index, values)
    counts = torch.bincount(index, minlength=n_groups).clamp_min(1).double()
    return (sums / counts.reshape(-1, *([1] * (values.ndim - 1)))).numpy()


def result_from_labels(x, labels, started, spherical=False):
    """A :class:`ClusterResult` whose centres are the means of the clusters of ``labels`` (unit-norm when
    ``spherical``) and whose distances are Euclidean distances to them."""
    labels_t = torch.from_numpy(labels)
    k = int(labels.max()) + 1
    counts = torch.bincount(labels_t, minlength=k).clamp_min(1).unsqueeze(1)
    centers = torch.zeros(k, x.shape[1]).index_add_(0, labels_t, x) / counts
    if spherical:
        centers = length_normalize(centers)
    distances = _distances_to_assigned(x, centers, labels_t, block_rows=65536)
    return _result(centers, labels_t, distances, 0, True, started)


def agglomerative(x, n_clusters, *, linkage="average", threshold=None, max_points=10000, reduce_clusters=0,
                  spherical=False, seed=0, device=None, micro=None):
    """Cluster the rows of ``x`` by agglomerative merging into ``n_clusters``, or with a threshold (``n_clusters=0``).

    ``threshold``: stop merging above this linkage distance (cosine distance
    for average/complete, Euclidean ward distance for ward); None with
    ``n_clusters=0`` takes it from the data (average/complete only, see the
    module docstring). ``micro``: a ready ``(labels, sizes)`` reduction.
    Returns a :class:`ClusterResult` whose centres are the means of the
    final clusters (unit-normalised when ``spherical``) and whose distances
    are Euclidean distances to them, as for k-means.
    """
    if linkage not in LINKAGES:
        raise ValueError(f"unknown linkage '{linkage}' (use one of {', '.join(LINKAGES)})")
    started = time.perf_counter()
    x = torch.as_tensor(x, dtype=torch.float32)
    if spherical:
        x = length_normalize(x)
    n = x.shape[0]
    n_micro = reduction_size(n, max_points, reduce_clusters)
    if not 0 <= n_clusters <= n_micro:
        raise ValueError(f"number of clusters ({n_clusters}) must be between 1 and the number of points merged "
                         f"({n_micro}: min(points {n}, --agglo-max-points or --reduce-clusters)), or 0 for a "
                         "threshold")
    # Unit rows, made once: the cosine threshold and the average/complete points (ward merges the rows as they are).
    unit = None if linkage == "ward" else length_normalize(x).numpy()
    if n_clusters == 0 and threshold is None:
        if linkage == "ward":
            raise ValueError("ward linkage needs an explicit threshold (--threshold)")
        threshold = auto_cosine_threshold(unit, seed=seed)
    if micro is None:
        micro = micro_clusters(x, n_micro, seed, device) if n_micro < n else (np.arange(n), np.ones(n, np.int64))
    micro_labels, sizes = micro
    points = group_means(x.numpy() if linkage == "ward" else unit, micro_labels, len(sizes))
    pairs, heights = nn_chain(_initial_distances(points, sizes, linkage), sizes, linkage)
    merged = cut_tree(pairs, heights, len(sizes), n_clusters, threshold)
    result = result_from_labels(x, merged[micro_labels], started, spherical)
    logger.info("agglomerative (%s linkage) on %d points: %d clusters%s", linkage, len(sizes),
                result.centers.shape[0], "" if n_clusters else f" at threshold {threshold:.4f}")
    return result
