"""Benchmark: pyspk k-means against scikit-learn's KMeans and MiniBatchKMeans.

Data (made here, deterministic under --seed): --n-points points in --dim
dimensions drawn from --n-clusters isotropic Gaussians of unequal sizes and
spreads, length-normalised like speaker embeddings. Every method gets the same
data, number of clusters and seed, in the same process (torch and
scikit-learn's OpenMP both use all cores); prints wall time, inertia
(recomputed identically in float64 for all), the ratio to scikit-learn's
KMeans inertia, and NMI against the generating labels.

    python bench/kmeans.py                       # 200,000 x 192, k = 2,000
    python bench/kmeans.py --n-points 20000 --n-clusters 200   # quick look

Measured with the defaults on 2 CPU cores (AMD EPYC, AVX2), quiet machine:
pyspk 41 s (inertia x0.991 of scikit-learn's, NMI 0.992), pyspk mini-batch
46 s (x0.996, NMI 0.993), scikit-learn KMeans 289 s (NMI 0.989),
MiniBatchKMeans 41 s (x1.071, NMI 0.969). About half of pyspk's time is the
k-means++ seeding, half the Lloyd iterations.
"""

import argparse
import time

import numpy as np
import torch
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import normalized_mutual_info_score

from pyspk.cluster.kmeans import kmeans, minibatch_kmeans


def make_blobs(n_points, n_clusters, dim, seed):
    """Unequal Gaussian clusters around random unit directions, then length-normalised."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 0.5, n_clusters)
    sizes = rng.multinomial(n_points - n_clusters, weights / weights.sum()) + 1
    labels = np.repeat(np.arange(n_clusters), sizes)
    means = rng.standard_normal((n_clusters, dim))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    # Within-cluster spread comparable to the distance between centres, as for
    # speakers: a point is ~0.8-1.2 from its centre, centres ~1.4 apart.
    spread = rng.uniform(0.8, 1.2, n_clusters) / np.sqrt(dim)
    x = means[labels] + rng.standard_normal((n_points, dim)) * spread[labels, None]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = rng.permutation(n_points)
    return x[order].astype(np.float32), labels[order]


def inertia(x, centers, labels):
    diff = x.astype(np.float64) - centers.astype(np.float64)[labels]
    return float(np.einsum("ij,ij->", diff, diff))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-points", type=int, default=200_000)
    parser.add_argument("--n-clusters", type=int, default=2_000)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", default="pyspk,pyspk-minibatch,sklearn,sklearn-minibatch",
                        help="comma-separated subset to run")
    args = parser.parse_args()

    x, truth = make_blobs(args.n_points, args.n_clusters, args.dim, args.seed)
    k = args.n_clusters
    print(f"data: {x.shape[0]} x {x.shape[1]}, k = {k}, torch threads = {torch.get_num_threads()}")

    def run_pyspk():
        r = kmeans(x, k, seed=args.seed, device=args.device)
        return r.centers, r.labels, f"{r.n_iter} iter"

    def run_pyspk_minibatch():
        r = minibatch_kmeans(x, k, seed=args.seed, device=args.device)
        return r.centers, r.labels, f"{r.n_iter} epochs"

    def run_sklearn():
        km = KMeans(k, n_init=1, random_state=args.seed).fit(x)
        return km.cluster_centers_, km.labels_, f"{km.n_iter_} iter"

    def run_sklearn_minibatch():
        km = MiniBatchKMeans(k, batch_size=4096, n_init=1, random_state=args.seed).fit(x)
        return km.cluster_centers_, km.labels_, f"{km.n_iter_} epochs"

    runners = {"pyspk": run_pyspk, "pyspk-minibatch": run_pyspk_minibatch,
               "sklearn": run_sklearn, "sklearn-minibatch": run_sklearn_minibatch}
    results = {}
    for name in args.methods.split(","):
        start = time.perf_counter()
        centers, labels, note = runners[name]()
        seconds = time.perf_counter() - start
        results[name] = (seconds, inertia(x, centers, labels),
                         normalized_mutual_info_score(truth, labels), note)
        print(f"  {name}: {seconds:.2f} s, inertia {results[name][1]:.2f}, NMI {results[name][2]:.4f}, {note}",
              flush=True)

    ref = results.get("sklearn")
    print(f"{'method':<18} {'seconds':>8} {'inertia':>12} {'vs sklearn':>10} {'NMI':>7}  notes")
    for name, (seconds, value, score, note) in results.items():
        ratio = f"{value / ref[1]:.4f}" if ref else "-"
        speed = f", {ref[0] / seconds:.2f}x sklearn speed" if ref and name != "sklearn" else ""
        print(f"{name:<18} {seconds:8.2f} {value:12.2f} {ratio:>10} {score:7.4f}  {note}{speed}")


if __name__ == "__main__":
    main()
