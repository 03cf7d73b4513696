"""Pseudo-labels from utterance embeddings: cluster, keep the confident members, write a data dir.

:func:`pseudo_label` is what ``pyspk.bin.cluster`` (``steps/cluster_embeddings.sh``)
runs: it reads ``<xvector-dir>/xvector.scp``, keeps the utterances of the source
data dir, optionally subtracts the mean, length-normalises, optionally keeps
the principal components holding a share of the variance, clusters (k-means
with k given, or agglomerative with k given or found by a threshold),
optionally re-clusters with a PLDA trained on the confident members of the
first pass or merges the first pass's clusters that are one speaker, keeps
the confident members (nearest fraction or posterior) and writes the
pseudo-labelled data dir (and its ``_combined`` twin with the augmented
copies), the per-utterance assignments and the report.
"""

import dataclasses
import logging
import os

import numpy as np
import torch

from pyspk.backend.embeddings import EmbeddingDir
from pyspk.cluster import report
from pyspk.cluster.agglomerative import (
    agglomerative,
    micro_clusters,
    reduction_size,
)
from pyspk.cluster.kmeans import ClusterResult, kmeans, length_normalize, minibatch_kmeans
from pyspk.cluster.plda_recluster import cluster_plda, plda_recluster
from pyspk.cluster.select import (
    CopySource,
    cluster_names,
    cluster_posteriors,
    select_by_posterior,
    select_confident,
    usable_utterances,
    write_assignments,
    write_combined_dir,
    write_pseudo_label_dir,
)
from pyspk.data.datadir import DataDirError, read_kv

log = logging.getLogger(__name__)

METHODS = ("kmeans", "minibatch", "agglomerative")
SELECTIONS = ("nearest", "posterior")
MERGES = ("none", "cosine", "plda")


@dataclasses.dataclass
class PseudoLabelOptions:
    """How to cluster and what to keep (the options of pyspk.bin.cluster, same names)."""

    num_clusters: int = 500
    method: str = "kmeans"
    threshold: float | None = None  # agglomerative with num_clusters 0; None: from the data
    reduce_clusters: int = 0
    pca_variance: float = 0.0
    plda_recluster: bool = False
    plda_threshold: float | None = None  # None: from the data
    merge: str = "none"
    merge_threshold: float | None = None  # None: from the data
    select: str = "nearest"
    keep_fraction: float = 0.8
    posterior_threshold: float = 0.9
    min_cluster_size: int = 5
    max_cluster_size: int = 0
    seed: int = 0
    subtract_mean: bool = True
    spherical: bool = False
    init: str = "k-means++"
    n_init: int = 1
    max_iter: int = 100
    tol: float = 1e-4
    tol_changed: float = 1e-3
    batch_size: int = 16384
    linkage: str = "average"
    agglo_max_points: int = 10000
    spk_prefix: str = "pl"

    def _check_second_pass(self) -> None:
        if self.merge not in MERGES:
            raise ValueError(f"--merge must be one of {', '.join(MERGES)}, got '{self.merge}'")
        if self.merge != "none" and self.plda_recluster:
            raise ValueError("--merge and --plda-recluster are two second passes; ask for one")

    def _check_iterations(self) -> None:
        if self.n_init < 1 or self.max_iter < 1 or self.batch_size < 1:
            raise ValueError("--n-init, --max-iter and --batch-size must be positive")
        if not 0.0 <= self.tol_changed < 1.0:
            raise ValueError(f"--tol-changed must be in [0, 1), got {self.tol_changed}")

    def check(self) -> None:
        """ValueError naming the option on a value out of range."""
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}, got '{self.method}'")
        if self.num_clusters < 0 or (self.num_clusters == 0 and self.method != "agglomerative"):
            raise ValueError(f"--num-clusters must be positive (0, found by a threshold, only with --method "
                             f"agglomerative), got {self.num_clusters}")
        if self.threshold is not None and self.num_clusters:
            raise ValueError("--threshold needs --num-clusters 0 (the number of clusters is then found)")
        self._check_second_pass()
        if self.select not in SELECTIONS:
            raise ValueError(f"--select must be one of {', '.join(SELECTIONS)}, got '{self.select}'")
        if not 0.0 <= self.posterior_threshold < 1.0:
            raise ValueError(f"--posterior-threshold must be in [0, 1), got {self.posterior_threshold}")
        if not 0.0 <= self.pca_variance < 1.0:
            raise ValueError(f"--pca-variance must be in [0, 1) (0: no PCA), got {self.pca_variance}")
        if self.reduce_clusters < 0:
            raise ValueError(f"--reduce-clusters must be non-negative, got {self.reduce_clusters}")
        if self.max_cluster_size and self.max_cluster_size < self.min_cluster_size:
            raise ValueError(f"--max-cluster-size ({self.max_cluster_size}) must be 0 (no limit) or at least "
                             f"--min-cluster-size ({self.min_cluster_size})")
        self._check_iterations()
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"--keep-fraction must be in (0, 1], got {self.keep_fraction}")
        if self.min_cluster_size < 1:
            raise ValueError(f"--min-cluster-size must be at least 1, got {self.min_cluster_size}")
        if not self.spk_prefix or any(c.isspace() for c in self.spk_prefix):
            raise ValueError(f"--spk-prefix must be a non-empty word, got '{self.spk_prefix}'")


def load_embeddings(xvector_dir: str, src_data_dir: str, options: PseudoLabelOptions) -> tuple[list[str], torch.Tensor]:
    """The usable utterances and their embeddings, mean-subtracted (optionally) and length-normalised."""
    scp = os.path.join(xvector_dir, "xvector.scp")
    keys, matrix = EmbeddingDir(xvector_dir).xvectors()
    utts, notes = usable_utterances(src_data_dir, keys)
    for note in notes:
        log.warning("%s; left out", note)
    if not utts:
        raise DataDirError(scp, 0, f"no embedding belongs to an utterance of {src_data_dir}")
    if len(utts) < len(keys):
        index = {key: i for i, key in enumerate(keys)}
        matrix = matrix[[index[utt] for utt in utts]]
    if options.num_clusters > len(utts):
        raise DataDirError(scp, 0, f"--num-clusters {options.num_clusters} is more than the {len(utts)} usable "
                                   "utterances")
    x = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))
    if options.subtract_mean:
        x = x - x.mean(dim=0, dtype=torch.float64).float()
    return utts, length_normalize(x)


def pca_reduce(x: torch.Tensor, variance_share: float) -> torch.Tensor:
    """The rows of ``x`` on the fewest principal components holding ``variance_share`` of the variance,
    length-normalised again."""
    centred = (x - x.mean(dim=0, dtype=torch.float64).float()).double()
    eigvals, eigvecs = torch.linalg.eigh(centred.T @ centred)
    eigvals, eigvecs = eigvals.flip(0).clamp_min(0.0), eigvecs.flip(1)
    share = torch.cumsum(eigvals, 0) / eigvals.sum()
    dim = int(torch.searchsorted(share, torch.tensor([variance_share], dtype=share.dtype))[0]) + 1
    log.info("PCA: %d of %d dimensions hold %.1f%% of the variance", dim, x.shape[1], 100 * float(share[dim - 1]))
    return length_normalize((centred @ eigvecs[:, :dim]).float())


def select(result: ClusterResult, x: torch.Tensor, options: PseudoLabelOptions) -> np.ndarray:
    """The members of ``result``'s clusters kept as pseudo-labels (options --select ...)."""
    o = options
    if o.select == "posterior":
        posteriors = cluster_posteriors(x, result.centers, result.labels)
        return select_by_posterior(result.labels, posteriors, o.posterior_threshold, o.min_cluster_size,
                                   o.max_cluster_size)
    return select_confident(result.labels, result.distances, o.keep_fraction, o.min_cluster_size,
                            o.max_cluster_size)


def run_clustering(x: torch.Tensor, options: PseudoLabelOptions, device: torch.device, micro) -> ClusterResult:
    o = options
    if o.method == "kmeans":
        return kmeans(x, o.num_clusters, n_init=o.n_init, max_iter=o.max_iter, tol=o.tol, tol_changed=o.tol_changed,
                      init=o.init, spherical=o.spherical, seed=o.seed, device=device, progress=True)
    if o.method == "minibatch":
        return minibatch_kmeans(x, o.num_clusters, batch_size=o.batch_size, max_epochs=o.max_iter, tol=o.tol,
                                init=o.init, spherical=o.spherical, seed=o.seed, device=device, progress=True)
    return agglomerative(x, o.num_clusters, linkage=o.linkage, threshold=o.threshold, max_points=o.agglo_max_points,
                         reduce_clusters=o.reduce_clusters, spherical=o.spherical, seed=o.seed, device=device,
                         micro=micro)


def within_between_pairs(labels: np.ndarray, n_pairs: int = 50000, seed: int = 0):
    """Index arrays ``(first, second)`` of random utterance pairs within one cluster and between two."""
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    first = rng.integers(len(labels), size=n_pairs)
    second = order[starts[labels[first]] + rng.integers(sizes[labels[first]])]
    within = first != second
    a, b = rng.integers(len(labels), size=(2, n_pairs))
    between = labels[a] != labels[b]
    return (first[within], second[within]), (a[between], b[between])


def within_between_threshold(score, labels: np.ndarray, seed: int = 0) -> float:
    """Merge threshold: where the scores of pairs within a first-pass cluster become likelier than those between.

    The first pass is pure (over-clustered on purpose), so pairs within one of
    its clusters stand for same-speaker pairs and pairs of two clusters, all but
    a few, for different speakers. A Gaussian is fitted to each set of
    ``score(first, second)`` (cosine or PLDA LLR of utterance pairs) and the
    threshold is the lowest score above the between-cluster mean where their
    likelihood ratio reaches k - 1, the Bayes decision when each of the k
    clusters has one same-speaker partner among the others at most. A mixture fitted to the
    scores between clusters alone would not do: the pairs of clusters holding
    one speaker are a few in thousands, too rare to form a mode of their own.
    """
    (w1, w2), (b1, b2) = within_between_pairs(labels, seed=seed)
    if len(w1) < 2 or len(b1) < 2:
        raise ValueError("the merge pass needs clusters of two or more utterances and two or more clusters")
    same, other = np.asarray(score(w1, w2), np.float64), np.asarray(score(b1, b2), np.float64)
    (mean_s, sd_s), (mean_o, sd_o) = (same.mean(), same.std() + 1e-12), (other.mean(), other.std() + 1e-12)
    if mean_s <= mean_o:
        raise ValueError(f"pairs within a cluster score no higher than pairs between clusters ({mean_s:.4g} <= "
                         f"{mean_o:.4g}); give --merge-threshold explicitly")
    # Prior odds of one speaker for two clusters: a speaker split by k-means has about one other cluster
    # among the k - 1, so a merge needs a likelihood ratio of k - 1 (equal priors would merge far too much).
    log_prior_odds = np.log(max(int(labels.max()), 1))
    grid = np.linspace(mean_o, mean_s + 6 * sd_s, 8001)
    gap = (-0.5 * ((grid - mean_s) / sd_s) ** 2 - np.log(sd_s)) - (-0.5 * ((grid - mean_o) / sd_o) ** 2 - np.log(sd_o))
    above = np.flatnonzero(gap > log_prior_odds)
    threshold = float(grid[above[0]]) if above.size else float(np.inf)  # never that likely: merge nothing
    log.info("merge threshold %.4f: pairs within clusters %.4f +- %.4f (%d), between %.4f +- %.4f (%d)", threshold,
             mean_s, sd_s, len(same), mean_o, sd_o, len(other))
    return threshold


def merge_clusters(result: ClusterResult, x: torch.Tensor, options: PseudoLabelOptions) -> ClusterResult:
    """Second pass: average-linkage AHC over the first pass's clusters, merging those that are one speaker.

    k-means with more clusters than speakers splits a speaker along its
    sessions (calls, recording rounds) before it mixes two speakers; whole
    clusters are merged while their mean pair score is on the same-speaker
    side of the threshold (cosine, or the LLR of a PLDA trained on the first
    pass's kept members, as hyperion re-clusters). The threshold defaults to
    the crossing of the scores within and between the first pass's clusters
    (:func:`within_between_threshold`), so the number of speakers is found,
    not given.
    """
    codes, labels = np.unique(result.labels, return_inverse=True)  # no empty first-pass cluster
    groups = (labels, np.bincount(labels, minlength=len(codes)))
    if options.merge == "cosine":
        threshold = options.merge_threshold
        if threshold is None:
            unit = length_normalize(x).numpy().astype(np.float64)
            threshold = within_between_threshold(lambda i, j: np.einsum("ij,ij->i", unit[i], unit[j]), labels,
                                                 options.seed)
        merged = agglomerative(x, 0, threshold=1.0 - threshold, seed=options.seed, micro=groups)
    else:
        first_keep = select(result, x, options)
        plda = cluster_plda(x.numpy(), labels, first_keep)  # trained once: for the threshold and the merging
        threshold = options.merge_threshold
        if threshold is None:
            y, _ = plda.transform_vectors(x.numpy().astype(np.float64))
            threshold = within_between_threshold(lambda i, j: plda.log_likelihood_ratio(y[i], 1, y[j]), labels,
                                                 options.seed)
        merged = plda_recluster(x, labels, first_keep, threshold=threshold, micro=groups, seed=options.seed,
                                plda=plda)
    log.info("merge pass (%s): %d clusters merged into %d", options.merge, len(codes), merged.centers.shape[0])
    return merged


def second_pass(result: ClusterResult, x: torch.Tensor, options: PseudoLabelOptions, micro) -> ClusterResult:
    """The clusters after --merge or --plda-recluster (``micro``: the reduction of the PLDA re-clustering)."""
    if options.merge != "none":
        return merge_clusters(result, x, options)
    first_keep = select(result, x, options)
    log.info("first pass: %d clusters; re-clustering with a PLDA trained on its %d kept utterances",
             result.centers.shape[0], first_keep.sum())
    return plda_recluster(x, result.labels, first_keep, threshold=options.plda_threshold, micro=micro,
                          seed=options.seed)


def truth_sections(ref_path: str, utts: list[str], clusters: np.ndarray, keep: np.ndarray,
                   utt2session: str | None = None) -> dict:
    """Report sections comparing clusters with the true speakers of ``ref_path`` (diagnostics only);
    with ``utt2session`` (calls, videos, recording rounds) also how the clusters split speakers by session."""
    ref = read_kv(ref_path)
    known = np.array([utt in ref for utt in utts])
    if not known.any():
        raise DataDirError(ref_path, 0, "no clustered utterance has a reference speaker")
    if not known.all():
        log.warning("%d clustered utterances are not in %s; the diagnostics leave them out", (~known).sum(), ref_path)
    truth = np.array([ref.get(utt, "") for utt in utts])
    sessions = None
    if utt2session:
        session_of = read_kv(utt2session)
        missing = [utt for utt in utts if utt not in session_of]
        if missing:
            raise DataDirError(utt2session, 0, f"no session for {len(missing)} clustered utterances, e.g. "
                                               f"'{missing[0]}'")
        sessions = np.array([session_of[utt] for utt in utts])
    sections = {}
    for name, rows in (("truth_all", known), ("truth_kept", known & keep)):
        if rows.any():
            sections[name] = report.summarize(truth[rows], clusters[rows])
            if sessions is not None:
                sections[name].update(report.session_splitting(truth[rows], sessions[rows], clusters[rows]))
    return sections


def channel_section(src_data_dir: str, utts: list[str], x: torch.Tensor, clusters: np.ndarray,
                    ref_utt2spk: str | None) -> dict:
    """``{"channel": shares}`` where ``src_data_dir`` has utt2session or utt2phonetype (report.channel_shares),
    else {}."""
    factors = report.read_factors(src_data_dir, utts, ref_utt2spk=ref_utt2spk)
    if not factors:
        return {}
    shares = report.channel_shares(x.cpu().numpy(), clusters, factors)
    log.info("channel: %s", ", ".join(f"{key} {value:.3f}" for key, value in shares.items()
                                      if key.endswith(("_share", "_of_clusters"))))
    return {"channel": shares}


def copy_source(copies_from: str | None, combined_dest: str) -> CopySource | None:
    """The combined (clean + augmented) data dir to take copies from, or None (with a warning on a stale twin)."""
    if copies_from:
        copies = CopySource(copies_from)
        for note in copies.notes:
            log.warning("%s; left out of %s", note, combined_dest)
        return copies
    if os.path.isfile(os.path.join(combined_dest, "utt2spk")):
        log.warning("%s is left from an earlier run without --copies-from; it does not match the new %s",
                    combined_dest, combined_dest.removesuffix("_combined"))
    return None


def clustering_section(result: ClusterResult, x: torch.Tensor) -> dict:
    sizes = np.bincount(result.labels, minlength=result.centers.shape[0])
    return {"num_utts": x.shape[0], "dim": x.shape[1], "num_clusters": result.centers.shape[0],
            "inertia": result.inertia, "iterations": result.n_iter,
            "converged": result.converged, "seconds": result.seconds, "empty_clusters": int((sizes == 0).sum()),
            "cluster_size_min": int(sizes.min()), "cluster_size_median": float(np.median(sizes)),
            "cluster_size_max": int(sizes.max())}


def write_selection(src_data_dir: str, dest_data_dir: str, copies: CopySource | None, utts: list[str],
                    clusters: np.ndarray, distances: np.ndarray, keep: np.ndarray) -> dict:
    """Write the pseudo-labelled data dir (and its _combined twin); return the report's selection section."""
    kept_utts = [utt for utt, k in zip(utts, keep, strict=True) if k]
    kept_clusters = len(np.unique(clusters[keep]))
    if copies is not None:
        copies.check_clean(kept_utts)  # before writing anything
    utt2uniq = write_pseudo_label_dir(src_data_dir, dest_data_dir, kept_utts, clusters[keep], distances[keep])
    selection = {"kept_utts": int(keep.sum()), "kept_fraction": float(keep.mean()), "kept_clusters": kept_clusters}
    if copies is not None:
        combined_dest = os.path.normpath(dest_data_dir) + "_combined"
        uniq = [utt2uniq[f"{spk}-{utt}"] for utt, spk in zip(kept_utts, clusters[keep], strict=True)]
        selection["kept_copies"] = write_combined_dir(copies, combined_dest, kept_utts, clusters[keep],
                                                      distances[keep], uniq)
        log.info("wrote %s: %d kept utterances and %d augmented copies from %s", combined_dest, len(kept_utts),
                 selection["kept_copies"], copies.path)
    return selection


def pseudo_label(xvector_dir: str, src_data_dir: str, dest_data_dir: str, report_dir: str,
                 options: PseudoLabelOptions, device: torch.device, copies_from: str | None = None,
                 ref_utt2spk: str | None = None) -> dict:
    """Cluster the embeddings of ``src_data_dir``'s utterances and write ``dest_data_dir``; return the report.

    ``copies_from`` (a clean + augmented data dir) also writes ``<dest_data_dir>_combined``;
    ``ref_utt2spk`` (true labels) adds NMI/purity sections to the report, never used for training.
    """
    options.check()
    utts, x = load_embeddings(xvector_dir, src_data_dir, options)
    copies = copy_source(copies_from, os.path.normpath(dest_data_dir) + "_combined")
    if options.pca_variance:
        x = pca_reduce(x, options.pca_variance)
    log.info("clustering %d embeddings of dimension %d into %s (%s on %s)", x.shape[0], x.shape[1],
             f"{options.num_clusters} clusters" if options.num_clusters else "clusters found by a threshold",
             options.method, device)
    micro = None
    if options.method == "agglomerative" or options.plda_recluster:
        n_micro = reduction_size(x.shape[0], options.agglo_max_points, options.reduce_clusters)
        if n_micro < x.shape[0]:
            micro = micro_clusters(x, n_micro, options.seed, device)
    result = run_clustering(x, options, device, micro)
    utt2session = os.path.join(src_data_dir, "utt2session")
    utt2session = utt2session if os.path.isfile(utt2session) else None
    sections = {}
    if options.plda_recluster or options.merge != "none":
        sections["first_pass"] = clustering_section(result, x)
        if ref_utt2spk:
            first = truth_sections(ref_utt2spk, utts, result.labels, select(result, x, options), utt2session)
            sections.update({f"first_pass_{name}": value for name, value in first.items()})
        result = second_pass(result, x, options, micro)
    keep = select(result, x, options)
    if not keep.any():
        raise ValueError(f"no cluster keeps --min-cluster-size {options.min_cluster_size} members; "
                         "lower it or the number of clusters")
    num_found = result.centers.shape[0]
    clusters = cluster_names(num_found, options.spk_prefix)[result.labels]
    selection = write_selection(src_data_dir, dest_data_dir, copies, utts, clusters, result.distances, keep)
    selection["dropped_clusters"] = num_found - selection["kept_clusters"]
    log.info("%d clusters; kept %d of %d utterances (%.1f%%) in %d of them", num_found, keep.sum(), len(keep),
             100.0 * keep.mean(), selection["kept_clusters"])
    os.makedirs(report_dir, exist_ok=True)
    write_assignments(os.path.join(report_dir, "cluster_assignments.txt"), utts, clusters, result.distances, keep)
    settings = {key: getattr(options, key) for key in (
        "method", "num_clusters", "threshold", "pca_variance", "plda_recluster", "plda_threshold", "merge",
        "merge_threshold", "spherical", "tol_changed",
        "subtract_mean", "select", "keep_fraction", "posterior_threshold", "min_cluster_size", "max_cluster_size",
        "seed")}
    if options.threshold is None:
        settings["threshold"] = "none" if options.num_clusters else "auto"
    for key in ("plda_threshold", "merge_threshold"):
        if settings[key] is None:
            settings[key] = "auto"
    sections = {"settings": {**settings, "device": str(device)}, **sections,
                "clustering": clustering_section(result, x), "selection": selection}
    if ref_utt2spk:
        sections.update(truth_sections(ref_utt2spk, utts, clusters, keep, utt2session))
        for name in ("first_pass_truth_all", "truth_all", "truth_kept"):
            if name in sections:
                s = sections[name]
                log.info("%s: %d clusters, NMI %.4f, purity %.4f, %.2f clusters per speaker%s", name,
                         s["num_clusters"], s["nmi"], s["purity"], s["clusters_per_speaker_mean"],
                         f", {100 * s['sessions_in_largest']:.1f}% of sessions in their speaker's largest cluster"
                         if "sessions_in_largest" in s else "")
    sections.update(channel_section(src_data_dir, utts, x, clusters, ref_utt2spk))
    report.write_report(os.path.join(report_dir, "cluster_report.txt"), sections)
    return sections
