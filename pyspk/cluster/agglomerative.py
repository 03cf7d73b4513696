"""Agglomerative (hierarchical) clustering of embeddings, the alternative to k-means.

Bottom-up clustering needs all pairwise distances (O(N^2) memory), which is
fine for a few thousand points but not for VoxCeleb2. Above ``max_points``
the embeddings are first over-clustered by k-means into ``max_points``
micro-clusters and their centroids are merged (a two-stage scheme common in
diarisation); each utterance then takes its micro-cluster's final label. The
merge uses scikit-learn's ``AgglomerativeClustering``; linkage ``average``
and ``complete`` use cosine distance (the metric speaker embeddings are scored
with), ``ward`` uses Euclidean distance. Micro-centroids are merged unweighted,
which approximates linkage on the points themselves.
"""

import logging
import time

import numpy as np
import torch

from pyspk.cluster.kmeans import ClusterResult, _distances_to_assigned, kmeans, length_normalize

logger = logging.getLogger(__name__)

LINKAGES = ("average", "complete", "ward")


def agglomerative(x, n_clusters, *, linkage="average", max_points=10000, spherical=False, seed=0, device=None):
    """Cluster the rows of ``x`` into ``n_clusters`` by agglomerative merging.

    Returns a :class:`ClusterResult` whose centres are the means of the final
    clusters (unit-normalised when ``spherical``) and whose distances are
    Euclidean distances to them, as for k-means.
    """
    if linkage not in LINKAGES:
        raise ValueError(f"unknown linkage '{linkage}' (use one of {', '.join(LINKAGES)})")
    started = time.perf_counter()
    x = torch.as_tensor(x, dtype=torch.float32)
    n = x.shape[0]
    if not 1 <= n_clusters <= min(n, max_points):
        raise ValueError(f"number of clusters ({n_clusters}) must be between 1 and "
                         f"min(number of points {n}, agglomerative max points {max_points})")
    if spherical:
        x = length_normalize(x)
    if n > max_points:
        logger.info("%d points > %d: k-means into %d micro-clusters first", n, max_points, max_points)
        micro = kmeans(x, max_points, max_iter=20, seed=seed, device=device, spherical=spherical)
        points, micro_labels = micro.centers, micro.labels
    else:
        points, micro_labels = x.numpy(), np.arange(n)
    # Imported here: scikit-learn takes seconds to load and only this method needs it.
    from sklearn.cluster import AgglomerativeClustering

    if n_clusters == 1:
        merged = np.zeros(len(points), dtype=np.int64)
    else:
        metric = "euclidean" if linkage == "ward" else "cosine"
        merged = AgglomerativeClustering(n_clusters, metric=metric, linkage=linkage).fit_predict(points)
    labels = torch.from_numpy(merged[micro_labels].astype(np.int64))
    counts = torch.bincount(labels, minlength=n_clusters).clamp_min(1).unsqueeze(1)
    centers = torch.zeros(n_clusters, x.shape[1]).index_add_(0, labels, x) / counts
    if spherical:
        centers = length_normalize(centers)
    distances = _distances_to_assigned(x, centers, labels, block_rows=65536)
    return ClusterResult(centers=centers.numpy(), labels=labels.numpy(), distances=distances.numpy(),
                         inertia=float((distances.double() ** 2).sum()), n_iter=0, converged=True,
                         seconds=time.perf_counter() - started)
