"""Benchmark: pyspk k-means against faiss and scikit-learn's KMeans and MiniBatchKMeans.

Data (made here, deterministic under --seed): --n-points points in --dim
dimensions drawn from --n-clusters isotropic Gaussians of unequal sizes and
spreads, length-normalised like speaker embeddings. Every method gets the same
data, number of clusters and seed, in the same process (torch and
scikit-learn's OpenMP both use all cores); prints wall time, inertia
(recomputed identically in float64 for all), the ratio to scikit-learn's
KMeans inertia (to faiss's without scikit-learn), and NMI against the
generating labels.

    python bench/kmeans.py                       # 200,000 x 192, k = 2,000
    python bench/kmeans.py --n-points 20000 --n-clusters 200   # quick look
    python bench/kmeans.py --vox2-scale          # 1,000,000 x 192, k = 6,000, then AHC on the centroids

faiss (``pip install faiss-cpu``, or ``pip install -e .[bench]``) is a
bench-only dependency: without it the faiss method is skipped with a message.
``--vox2-scale`` runs pyspk (or --methods) at VoxCeleb2 scale and then the
agglomerative pass of steps/cluster_embeddings.sh (--method agglomerative
--num-clusters 0 --reduce-clusters 6000) on its centroids, timed separately,
and prints the peak resident memory of the process (resource.getrusage
maxrss, which only grows: run one method per process for its own peak).

Measured with the defaults on 2 CPU cores (AMD EPYC, AVX2), before the
group bounds and the cheaper seeding passes, quiet machine: pyspk 41 s
(inertia x0.991 of scikit-learn's, NMI 0.992), pyspk mini-batch 46 s (x0.996,
NMI 0.993), scikit-learn KMeans 289 s (NMI 0.989), MiniBatchKMeans 41 s
(x1.071, NMI 0.969); about half of pyspk's time was the k-means++ seeding.

Against faiss (1.15.1, its defaults: 25 full passes), same data and process,
current code, the machine shared with other developers' jobs (load 6-8 on 2
cores). One thread each, which the load disturbs least:

    OMP_NUM_THREADS=1 python bench/kmeans.py --methods pyspk,faiss
    OMP_NUM_THREADS=1 python bench/kmeans.py --methods faiss,pyspk

pyspk first: pyspk 34.0 s, faiss 59.4 s (1.75x faiss speed); faiss first:
faiss 66.1 s, pyspk 37.1 s (1.78x). Same results both orders: pyspk's inertia
x0.957 of faiss's (19 iterations), NMI 0.992 vs 0.984; peak memory 1.23 GiB.
Against the earlier version (Hamerly bounds), same data and process, one
thread, both orders: 45.2-45.4 s vs 72.7-74.6 s (1.6x faster), 2.5 vs 8.1
full-pass equivalents in the Lloyd iterations, seeding 26-28 s vs 37 s (now
about 60 % of the time); inertia 0.06 % higher (another local optimum, 19
iterations vs 16).
With 2 threads each (same commands without OMP_NUM_THREADS, same load):
pyspk 334 s vs faiss 173 s when pyspk ran first (0.52x faiss speed; other
benchmark runs overlapped pyspk's), faiss 149 s vs pyspk 221 s when faiss ran
first (0.67x). Both are 3-10x slower than with one thread: with more runnable
threads than cores every OpenMP parallel region waits for a descheduled
thread, and pyspk runs far more, smaller regions (the seeding's thousands of
sequential steps, the pruned passes) than faiss's 25 full passes; an
interleaved A/B against the earlier version at 60,000 x 600 with 2 threads
gave equal wall times (11.6 vs 11.8 s) although the new code does 2.5
instead of 6.5 full-pass equivalents.
On 2 quiet cores (nothing else running, 2 threads each, both orders:
``python bench/kmeans.py --methods pyspk,faiss`` then ``--methods faiss,pyspk``):
pyspk 24.65 s vs faiss 32.08 s (1.30x faiss speed), faiss 36.69 s vs pyspk
24.82 s (1.48x); inertia 0.957 of faiss's, NMI 0.992 vs 0.984, 19 iterations
vs faiss's 25. So: faster than faiss at lower inertia on one core and on 2
quiet cores; slower only on 2 oversubscribed cores. These figures are with a
seeding sample of 16 k points; with today's 8 k (2 quiet cores, pyspk first):
pyspk 21.58 s vs faiss 36.31 s (1.68x), inertia 0.963 of faiss's, NMI 0.991.

VoxCeleb2 scale on 2 quiet cores, ``python bench/kmeans.py --vox2-scale
--methods pyspk``: k-means of 1,000,000 x 192 into 6,000 clusters (10
iterations, the reduction's cap) 257.4 s, then AHC on the 6,000 centroids
4.1 s: **261.5 s in all** (under the 5-minute aim), NMI 0.991 / 0.992, peak
memory 4.62 GiB (mostly the bench's float64 data). With a 16 k seeding sample
it took 323.9 + 4.4 = 328.3 s at 0.45 % lower inertia, hence the 8 k default.

Where the time goes (one thread, loaded; seeding time and full-pass
equivalents logged around the same calls as

    OMP_NUM_THREADS=1 python bench/kmeans.py --n-points 1000000 --n-clusters 1000 --methods pyspk --max-iter 20 --ahc

): k-means on 1,000,000 x 192 into 1,000 clusters took 76 s, of it 8.5 s
seeding, AHC 6 s; the Lloyd work was 3.7 full-pass equivalents over 20
iterations, 2.9 over 10 (the reduction's cap; inertia 0.002 % higher, same
AHC result, NMI 0.995). ``--vox2-scale`` (1 M, k = 6,000)
did not finish within 15 minutes with 2 threads on the loaded machine: the
seeding alone (96,000-point sample, 30 candidates per step, 6.6e12 flops)
took 553 s. Extrapolated, not measured: scaling the 1 M x 1,000 run (a full
pass at k = 6,000 is 2.3e12 flops, about 110 s on one loaded core, 2.9 of
them; seeding 220-340 s) or the 200,000 x 2,000 one (10x the seeding work,
15x the work per pass), plus the AHC pass on 6,000 micro-clusters (26-60 s),
gives 6-12 minutes on one loaded core, perhaps 3-6 minutes on 2 quiet cores:
the 5-minute target is plausible, not shown. A seeding sample of 8 k instead
of 16 k (``init_sample_size``) would halve the seeding for about 0.15 %
higher inertia. Peak memory 4.7 GiB at 1 M, mostly the float64 data
generation (the group bounds add N x 64 floats, 256 MiB at 1 M); 1.23 GiB at
200,000.
"""

import argparse
import resource
import time

import numpy as np
import torch
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import normalized_mutual_info_score

from pyspk.cluster.agglomerative import MICRO_MAX_ITER, agglomerative
from pyspk.cluster.kmeans import kmeans, minibatch_kmeans

try:
    import faiss
except ImportError:
    faiss = None


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


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-points", type=int, default=200_000)
    parser.add_argument("--n-clusters", type=int, default=2_000)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", default="pyspk,pyspk-minibatch,faiss,sklearn,sklearn-minibatch",
                        help="comma-separated subset to run")
    parser.add_argument("--vox2-scale", action="store_true",
                        help="1,000,000 x 192, k = 6,000 (pyspk and faiss unless --methods), then the AHC pass")
    parser.add_argument("--ahc", action="store_true",
                        help="after k-means, the AHC pass on its centroids (pyspk's, else the first method's; "
                             "implied by --vox2-scale)")
    parser.add_argument("--ahc-threshold", type=float, default=0.5,
                        help="cosine-distance threshold of the AHC pass (default: 0.5)")
    parser.add_argument("--max-iter", type=int, default=100,
                        help=f"pyspk's Lloyd iteration cap (default: 100; {MICRO_MAX_ITER} with --vox2-scale, as "
                             "the k-means reduction before AHC, pyspk.cluster.agglomerative.micro_clusters)")
    args = parser.parse_args()
    if args.vox2_scale:
        args.n_points, args.n_clusters = 1_000_000, 6_000
        if args.methods == parser.get_default("methods"):
            args.methods = "pyspk,faiss"
        if args.max_iter == parser.get_default("max_iter"):
            args.max_iter = MICRO_MAX_ITER
        args.ahc = True
    return args


def make_runners(x, k, args):
    """``{method: function returning (centres, labels, note)}``."""
    def run_pyspk():
        r = kmeans(x, k, seed=args.seed, device=args.device, max_iter=args.max_iter)
        return r.centers, r.labels, f"{r.n_iter} iter"

    def run_pyspk_minibatch():
        r = minibatch_kmeans(x, k, seed=args.seed, device=args.device)
        return r.centers, r.labels, f"{r.n_iter} epochs"

    def run_faiss():
        # faiss's defaults (25 iterations, k-means on at most 256 points per centroid), as users run it.
        km = faiss.Kmeans(x.shape[1], k, seed=args.seed)
        km.train(x)
        labels = km.index.search(x, 1)[1].ravel()
        return km.centroids, labels, f"{km.cp.niter} iter"

    def run_sklearn():
        km = KMeans(k, n_init=1, random_state=args.seed).fit(x)
        return km.cluster_centers_, km.labels_, f"{km.n_iter_} iter"

    def run_sklearn_minibatch():
        km = MiniBatchKMeans(k, batch_size=4096, n_init=1, random_state=args.seed).fit(x)
        return km.cluster_centers_, km.labels_, f"{km.n_iter_} epochs"

    return {"pyspk": run_pyspk, "pyspk-minibatch": run_pyspk_minibatch, "faiss": run_faiss,
            "sklearn": run_sklearn, "sklearn-minibatch": run_sklearn_minibatch}


def main():
    args = parse_args()
    x, truth = make_blobs(args.n_points, args.n_clusters, args.dim, args.seed)
    k = args.n_clusters
    print(f"data: {x.shape[0]} x {x.shape[1]}, k = {k}, torch threads = {torch.get_num_threads()}")
    runners = make_runners(x, k, args)
    results = {}
    labels_of = {}
    for name in args.methods.split(","):
        if name == "faiss" and faiss is None:
            print("  faiss: skipped, not installed (pip install faiss-cpu)", flush=True)
            continue
        start = time.perf_counter()
        centers, labels, note = runners[name]()
        seconds = time.perf_counter() - start
        labels_of[name] = labels
        results[name] = (seconds, inertia(x, centers, labels),
                         normalized_mutual_info_score(truth, labels), note)
        print(f"  {name}: {seconds:.2f} s, inertia {results[name][1]:.2f}, NMI {results[name][2]:.4f}, {note}, "
              f"peak memory so far {peak_memory_gib():.2f} GiB", flush=True)

    print_table(results)
    if args.ahc and labels_of:  # --vox2-scale sets args.ahc
        # On pyspk's centroids, or the first method's when pyspk did not run.
        name = "pyspk" if "pyspk" in labels_of else next(iter(labels_of))
        ahc_pass(x, truth, labels_of[name], name, k, args.ahc_threshold, results[name][0])


def print_table(results):
    ref_name = next((name for name in ("sklearn", "faiss") if name in results), None)
    ref = results.get(ref_name)
    print(f"{'method':<18} {'seconds':>8} {'inertia':>12} {'vs ' + str(ref_name):>10} {'NMI':>7}  notes")
    for name, (seconds, value, score, note) in results.items():
        ratio = f"{value / ref[1]:.4f}" if ref else "-"
        speed = f", {ref[0] / seconds:.2f}x {ref_name} speed" if ref and name != ref_name else ""
        print(f"{name:<18} {seconds:8.2f} {value:12.2f} {ratio:>10} {score:7.4f}  {note}{speed}")


def ahc_pass(x, truth, micro, name, k, threshold, kmeans_seconds):
    """The agglomerative pass of steps/cluster_embeddings.sh on the k-means micro-clusters, timed."""
    start = time.perf_counter()
    ahc = agglomerative(x, 0, threshold=threshold, micro=(micro, np.bincount(micro, minlength=k)))
    seconds = time.perf_counter() - start
    print(f"AHC on the {k} {name} centroids (threshold {threshold}): {seconds:.2f} s, {ahc.centers.shape[0]} "
          f"clusters, NMI {normalized_mutual_info_score(truth, ahc.labels):.4f}; k-means + AHC "
          f"{kmeans_seconds + seconds:.1f} s; peak memory {peak_memory_gib():.2f} GiB")


def peak_memory_gib():
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


if __name__ == "__main__":
    main()
