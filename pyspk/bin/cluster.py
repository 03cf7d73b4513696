"""Cluster utterance embeddings into pseudo-speakers (run by steps/cluster_embeddings.sh).

Usage:
  python -m pyspk.bin.cluster [options] <xvector-dir> <src-data-dir> <dest-data-dir> <report-dir>
e.g.:
  python -m pyspk.bin.cluster --num-clusters 500 --keep-fraction 0.8 --ref-utt2spk data/train/utt2spk \\
      --copies-from data/train_combined exp/pl/round1/xvectors_train data/train data/train_pl_r1 \\
      exp/pl/round1/cluster

Reads <xvector-dir>/xvector.scp, keeps the utterances that also appear in
<src-data-dir> (and in each of its per-utterance files), optionally subtracts
the mean, length-normalises, clusters, keeps the most confident members of
each cluster and writes <dest-data-dir>: utt ids "<cluster>-<utt>", utt2spk =
cluster ids, spk2utt, utt2dist, utt2uniq and the source's per-utterance files
(feats.scp ...). <report-dir> gets cluster_assignments.txt (every utterance:
cluster, distance, kept 0/1) and cluster_report.txt (settings, sizes, kept
counts and, with --ref-utt2spk, NMI / purity / clusters per true speaker of
all and of the kept utterances; diagnostics only, never used for training).

With --copies-from <combined-data-dir> (the clean plus augmented data dir of
steps/augment_data_dir.sh, e.g. data/train_combined, with its own feats.scp),
<dest-data-dir>_combined is written too: every kept utterance and its
augmented copies <utt>-reverb, <utt>-noise, <utt>-music, <utt>-babble (or as
listed in its utt2copies), ids "<cluster>-<utt>" and "<cluster>-<utt>-<suffix>"
so the trainers group them again, all with the clean utterance's cluster,
utt2dist and utt2uniq, and the per-utterance files (feats.scp ...) of the
combined dir. Clustering still uses the embeddings of the clean utterances
only; a kept utterance missing from the combined dir is an error.
"""

import argparse
import logging
import os
import sys

import numpy as np
import torch

from pyspk.backend.cli import bool_arg
from pyspk.backend.embeddings import EmbeddingDir
from pyspk.cluster import report
from pyspk.cluster.agglomerative import LINKAGES, agglomerative
from pyspk.cluster.kmeans import kmeans, length_normalize, minibatch_kmeans
from pyspk.cluster.select import (CopySource, cluster_names, select_confident, usable_utterances,
                                  write_assignments, write_combined_dir, write_pseudo_label_dir)
from pyspk.data.datadir import DataDirError, read_kv
from pyspk.device import pick_device
from pyspk.logutil import setup_logging

log = logging.getLogger("cluster")

METHODS = ("kmeans", "minibatch", "agglomerative")


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-clusters", type=int, default=500, help="number of clusters k (default: 500)")
    parser.add_argument("--method", choices=METHODS, default="kmeans",
                        help="full-batch k-means (embeddings held on the device), mini-batch k-means (embeddings stay in "
                             "host memory, batches go to the device) or agglomerative (default: kmeans)")
    parser.add_argument("--keep-fraction", type=float, default=0.8,
                        help="fraction of each cluster kept, nearest to the centroid first (default: 0.8)")
    parser.add_argument("--min-cluster-size", type=int, default=5,
                        help="clusters with fewer kept members are dropped (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--ref-utt2spk", default="",
                        help="true labels for the report only (e.g. data/train/utt2spk); empty: no diagnostics")
    parser.add_argument("--subtract-mean", type=bool_arg, default=True,
                        help="subtract the embeddings' mean before length normalisation (default: true)")
    parser.add_argument("--spherical", type=bool_arg, default=False,
                        help="cosine k-means with unit-norm centroids (default: false)")
    parser.add_argument("--init", choices=("k-means++", "random"), default="k-means++",
                        help="k-means initialisation (default: k-means++)")
    parser.add_argument("--n-init", type=int, default=1, help="k-means runs, the best inertia is kept (default: 1)")
    parser.add_argument("--max-iter", type=int, default=100,
                        help="k-means iterations (mini-batch: epochs) at most (default: 100)")
    parser.add_argument("--tol", type=float, default=1e-4,
                        help="k-means: stop when the squared centre shift is below tol x mean variance; mini-batch: "
                             "when an epoch improves the inertia by less than tol, relative (default: 1e-4)")
    parser.add_argument("--batch-size", type=int, default=16384, help="mini-batch size (default: 16384)")
    parser.add_argument("--linkage", choices=LINKAGES, default="average",
                        help="agglomerative linkage; average/complete use cosine distance (default: average)")
    parser.add_argument("--agglo-max-points", type=int, default=10000,
                        help="agglomerative: above this many utterances, merge k-means micro-clusters "
                             "(default: 10000)")
    parser.add_argument("--spk-prefix", default="pl", help="prefix of the cluster (speaker) ids (default: pl)")
    parser.add_argument("--copies-from", default="",
                        help="combined (clean + augmented) data dir, e.g. data/train_combined: also write "
                             "<dest-data-dir>_combined with the kept utterances and their augmented copies "
                             "(default: empty, off)")
    parser.add_argument("xvector_dir")
    parser.add_argument("src_data_dir")
    parser.add_argument("dest_data_dir")
    parser.add_argument("report_dir")
    return parser


def check_args(args):
    if args.num_clusters < 1:
        raise ValueError(f"--num-clusters must be positive, got {args.num_clusters}")
    if args.n_init < 1 or args.max_iter < 1 or args.batch_size < 1:
        raise ValueError("--n-init, --max-iter and --batch-size must be positive")
    if not 0.0 < args.keep_fraction <= 1.0:
        raise ValueError(f"--keep-fraction must be in (0, 1], got {args.keep_fraction}")
    if args.min_cluster_size < 1:
        raise ValueError(f"--min-cluster-size must be at least 1, got {args.min_cluster_size}")
    if not args.spk_prefix or any(c.isspace() for c in args.spk_prefix):
        raise ValueError(f"--spk-prefix must be a non-empty word, got '{args.spk_prefix}'")


def load_embeddings(args):
    """The usable utterances and their embeddings, mean-subtracted and length-normalised."""
    scp = os.path.join(args.xvector_dir, "xvector.scp")
    keys, matrix = EmbeddingDir(args.xvector_dir).xvectors()
    utts, notes = usable_utterances(args.src_data_dir, keys)
    for note in notes:
        log.warning("%s; left out", note)
    if not utts:
        raise DataDirError(scp, 0, f"no embedding belongs to an utterance of {args.src_data_dir}")
    if len(utts) < len(keys):
        index = {key: i for i, key in enumerate(keys)}
        matrix = matrix[[index[utt] for utt in utts]]
    if args.num_clusters > len(utts):
        raise DataDirError(scp, 0, f"--num-clusters {args.num_clusters} is more than the {len(utts)} usable "
                                   "utterances")
    x = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))
    if args.subtract_mean:
        x = x - x.mean(dim=0, dtype=torch.float64).float()
    return utts, length_normalize(x)


def run_clustering(args, x, device):
    if args.method == "kmeans":
        return kmeans(x, args.num_clusters, n_init=args.n_init, max_iter=args.max_iter, tol=args.tol,
                      init=args.init, spherical=args.spherical, seed=args.seed, device=device, progress=True)
    if args.method == "minibatch":
        return minibatch_kmeans(x, args.num_clusters, batch_size=args.batch_size, max_epochs=args.max_iter,
                                tol=args.tol, init=args.init, spherical=args.spherical, seed=args.seed,
                                device=device, progress=True)
    return agglomerative(x, args.num_clusters, linkage=args.linkage, max_points=args.agglo_max_points,
                         spherical=args.spherical, seed=args.seed, device=device)


def truth_sections(ref_path, utts, clusters, keep):
    """Report sections comparing clusters with the true speakers of ``ref_path``."""
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


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        check_args(args)
        try:
            device = pick_device(args.device)
        except RuntimeError as e:
            raise ValueError(str(e)) from None
        utts, x = load_embeddings(args)
        combined_dest = os.path.normpath(args.dest_data_dir) + "_combined"
        copies = None
        if args.copies_from:
            copies = CopySource(args.copies_from)
            for note in copies.notes:
                log.warning("%s; left out of %s", note, combined_dest)
        elif os.path.isfile(os.path.join(combined_dest, "utt2spk")):
            log.warning("%s is left from an earlier run without --copies-from; it does not match the new "
                        "%s", combined_dest, args.dest_data_dir)
        log.info("clustering %d embeddings of dimension %d into %d clusters (%s on %s)", x.shape[0], x.shape[1],
                 args.num_clusters, args.method, device)
        result = run_clustering(args, x, device)
        sizes = np.bincount(result.labels, minlength=args.num_clusters)
        keep = select_confident(result.labels, result.distances, args.keep_fraction, args.min_cluster_size)
        if not keep.any():
            raise ValueError(f"no cluster keeps --min-cluster-size {args.min_cluster_size} members; "
                             "lower it or the number of clusters")
        names = cluster_names(args.num_clusters, args.spk_prefix)
        clusters = names[result.labels]
        kept_clusters = len(np.unique(result.labels[keep]))
        log.info("kept %d of %d utterances (%.1f%%) in %d of %d clusters", keep.sum(), len(keep),
                 100.0 * keep.mean(), kept_clusters, args.num_clusters)
        kept_utts = [utt for utt, k in zip(utts, keep) if k]
        if copies is not None:
            copies.check_clean(kept_utts)  # before writing anything
        tables = write_pseudo_label_dir(args.src_data_dir, args.dest_data_dir, kept_utts, clusters[keep],
                                        result.distances[keep])
        selection = {"kept_utts": int(keep.sum()), "kept_fraction": float(keep.mean()),
                     "kept_clusters": kept_clusters, "dropped_clusters": args.num_clusters - kept_clusters}
        if copies is not None:
            uniq = [tables["utt2uniq"][f"{spk}-{utt}"] for utt, spk in zip(kept_utts, clusters[keep])]
            selection["kept_copies"] = write_combined_dir(copies, combined_dest, kept_utts, clusters[keep],
                                                          result.distances[keep], uniq)
            log.info("wrote %s: %d kept utterances and %d augmented copies from %s", combined_dest,
                     len(kept_utts), selection["kept_copies"], args.copies_from)
        os.makedirs(args.report_dir, exist_ok=True)
        write_assignments(os.path.join(args.report_dir, "cluster_assignments.txt"), utts, clusters,
                          result.distances, keep)
        sections = {
            "settings": {"method": args.method, "num_clusters": args.num_clusters, "spherical": args.spherical,
                         "subtract_mean": args.subtract_mean, "keep_fraction": args.keep_fraction,
                         "min_cluster_size": args.min_cluster_size, "seed": args.seed, "device": str(device)},
            "clustering": {"num_utts": len(utts), "dim": x.shape[1], "inertia": result.inertia,
                           "iterations": result.n_iter, "converged": result.converged,
                           "seconds": result.seconds, "empty_clusters": int((sizes == 0).sum()),
                           "cluster_size_min": int(sizes.min()), "cluster_size_median": float(np.median(sizes)),
                           "cluster_size_max": int(sizes.max())},
            "selection": selection,
        }
        if args.ref_utt2spk:
            sections.update(truth_sections(args.ref_utt2spk, utts, clusters, keep))
            for name in ("truth_all", "truth_kept"):
                if name in sections:
                    s = sections[name]
                    log.info("%s: NMI %.4f, purity %.4f, %.2f clusters per speaker", name, s["nmi"], s["purity"],
                             s["clusters_per_speaker_mean"])
        report.write_report(os.path.join(args.report_dir, "cluster_report.txt"), sections)
    except (DataDirError, ValueError, OSError) as e:
        sys.exit(f"cluster: {e}")
    log.info("Wrote %s (%d utterances, %d pseudo-speakers) and %s/cluster_report.txt", args.dest_data_dir,
             keep.sum(), kept_clusters, args.report_dir)


if __name__ == "__main__":
    main()
