"""Pseudo-labels from utterance embeddings: cluster, keep the confident members, write a data dir.

:func:`pseudo_label` is what ``pyspk.bin.cluster`` (``steps/cluster_embeddings.sh``)
runs: it reads ``<xvector-dir>/xvector.scp``, keeps the utterances of the source
data dir, optionally subtracts the mean, length-normalises, clusters, keeps
the members nearest to their centre and writes the pseudo-labelled data dir
(and its ``_combined`` twin with the augmented copies), the per-utterance
assignments and the report.
"""

import dataclasses
import logging
import os

import numpy as np
import torch

from pyspk.backend.embeddings import EmbeddingDir
from pyspk.cluster import report
from pyspk.cluster.agglomerative import agglomerative
from pyspk.cluster.kmeans import ClusterResult, kmeans, length_normalize, minibatch_kmeans
from pyspk.cluster.select import (
    CopySource,
    cluster_names,
    select_confident,
    usable_utterances,
    write_assignments,
    write_combined_dir,
    write_pseudo_label_dir,
)
from pyspk.data.datadir import DataDirError, read_kv

log = logging.getLogger(__name__)

METHODS = ("kmeans", "minibatch", "agglomerative")


@dataclasses.dataclass
class PseudoLabelOptions:
    """How to cluster and what to keep (the options of pyspk.bin.cluster, same names)."""

    num_clusters: int = 500
    method: str = "kmeans"
    keep_fraction: float = 0.8
    min_cluster_size: int = 5
    seed: int = 0
    subtract_mean: bool = True
    spherical: bool = False
    init: str = "k-means++"
    n_init: int = 1
    max_iter: int = 100
    tol: float = 1e-4
    batch_size: int = 16384
    linkage: str = "average"
    agglo_max_points: int = 10000
    spk_prefix: str = "pl"

    def check(self) -> None:
        """ValueError naming the option on a value out of range."""
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}, got '{self.method}'")
        if self.num_clusters < 1:
            raise ValueError(f"--num-clusters must be positive, got {self.num_clusters}")
        if self.n_init < 1 or self.max_iter < 1 or self.batch_size < 1:
            raise ValueError("--n-init, --max-iter and --batch-size must be positive")
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


def run_clustering(x: torch.Tensor, options: PseudoLabelOptions, device: torch.device) -> ClusterResult:
    o = options
    if o.method == "kmeans":
        return kmeans(x, o.num_clusters, n_init=o.n_init, max_iter=o.max_iter, tol=o.tol, init=o.init,
                      spherical=o.spherical, seed=o.seed, device=device, progress=True)
    if o.method == "minibatch":
        return minibatch_kmeans(x, o.num_clusters, batch_size=o.batch_size, max_epochs=o.max_iter, tol=o.tol,
                                init=o.init, spherical=o.spherical, seed=o.seed, device=device, progress=True)
    return agglomerative(x, o.num_clusters, linkage=o.linkage, max_points=o.agglo_max_points,
                         spherical=o.spherical, seed=o.seed, device=device)


def truth_sections(ref_path: str, utts: list[str], clusters: np.ndarray, keep: np.ndarray) -> dict:
    """Report sections comparing clusters with the true speakers of ``ref_path`` (diagnostics only)."""
    ref = read_kv(ref_path)
    known = np.array([utt in ref for utt in utts])
    if not known.any():
        raise DataDirError(ref_path, 0, "no clustered utterance has a reference speaker")
    if not known.all():
        log.warning("%d clustered utterances are not in %s; the diagnostics leave them out", (~known).sum(), ref_path)
    truth = np.array([ref.get(utt, "") for utt in utts])
    sections = {"truth_all": report.summarize(truth[known], clusters[known])}
    if (known & keep).any():
        sections["truth_kept"] = report.summarize(truth[known & keep], clusters[known & keep])
    return sections


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


def clustering_section(result: ClusterResult, x: torch.Tensor, num_clusters: int) -> dict:
    sizes = np.bincount(result.labels, minlength=num_clusters)
    return {"num_utts": x.shape[0], "dim": x.shape[1], "inertia": result.inertia, "iterations": result.n_iter,
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
    tables = write_pseudo_label_dir(src_data_dir, dest_data_dir, kept_utts, clusters[keep], distances[keep])
    selection = {"kept_utts": int(keep.sum()), "kept_fraction": float(keep.mean()), "kept_clusters": kept_clusters}
    if copies is not None:
        combined_dest = os.path.normpath(dest_data_dir) + "_combined"
        uniq = [tables["utt2uniq"][f"{spk}-{utt}"] for utt, spk in zip(kept_utts, clusters[keep], strict=True)]
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
    log.info("clustering %d embeddings of dimension %d into %d clusters (%s on %s)", x.shape[0], x.shape[1],
             options.num_clusters, options.method, device)
    result = run_clustering(x, options, device)
    keep = select_confident(result.labels, result.distances, options.keep_fraction, options.min_cluster_size)
    if not keep.any():
        raise ValueError(f"no cluster keeps --min-cluster-size {options.min_cluster_size} members; "
                         "lower it or the number of clusters")
    clusters = cluster_names(options.num_clusters, options.spk_prefix)[result.labels]
    selection = write_selection(src_data_dir, dest_data_dir, copies, utts, clusters, result.distances, keep)
    selection["dropped_clusters"] = options.num_clusters - selection["kept_clusters"]
    log.info("kept %d of %d utterances (%.1f%%) in %d of %d clusters", keep.sum(), len(keep), 100.0 * keep.mean(),
             selection["kept_clusters"], options.num_clusters)
    os.makedirs(report_dir, exist_ok=True)
    write_assignments(os.path.join(report_dir, "cluster_assignments.txt"), utts, clusters, result.distances, keep)
    settings = {key: getattr(options, key) for key in ("method", "num_clusters", "spherical", "subtract_mean",
                                                       "keep_fraction", "min_cluster_size", "seed")}
    sections = {"settings": {**settings, "device": str(device)},
                "clustering": clustering_section(result, x, options.num_clusters), "selection": selection}
    if ref_utt2spk:
        sections.update(truth_sections(ref_utt2spk, utts, clusters, keep))
        for name in ("truth_all", "truth_kept"):
            if name in sections:
                s = sections[name]
                log.info("%s: NMI %.4f, purity %.4f, %.2f clusters per speaker", name, s["nmi"], s["purity"],
                         s["clusters_per_speaker_mean"])
    report.write_report(os.path.join(report_dir, "cluster_report.txt"), sections)
    return sections
