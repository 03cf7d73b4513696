"""Cluster utterance embeddings into pseudo-speakers (run by steps/cluster_embeddings.sh).

Usage:
  python -m pyspk.bin.cluster [options] <xvector-dir> <src-data-dir> <dest-data-dir> <report-dir>
e.g.:
  python -m pyspk.bin.cluster --num-clusters 500 --keep-fraction 0.8 --ref-utt2spk data/train/utt2spk \\
      --copies-from data/train_combined exp/pl/round1/xvectors_train data/train data/train_pl_r1 \\
      exp/pl/round1/cluster

Reads <xvector-dir>/xvector.scp, keeps the utterances that also appear in
<src-data-dir> (and in each of its per-utterance files), optionally subtracts
the mean, length-normalises, optionally projects on the principal components
holding --pca-variance of the variance, clusters (k-means into --num-clusters,
or agglomerative into --num-clusters or, with --num-clusters 0, as many as a
threshold finds), optionally re-clusters with a PLDA trained on the first
pass's kept members (--plda-recluster true) or merges the first pass's
clusters that are one speaker (--merge cosine|plda: average-linkage AHC over
whole clusters, stopping at a threshold found from the data), keeps the most confident members
of each cluster (--select nearest: the --keep-fraction nearest to the centre;
posterior: those with a cluster posterior of at least --posterior-threshold;
at most --max-cluster-size, clusters under --min-cluster-size dropped) and
writes <dest-data-dir>: utt ids "<cluster>-<utt>", utt2spk =
cluster ids, spk2utt, utt2dist, utt2uniq and the source's per-utterance files
(feats.scp ...). <report-dir> gets cluster_assignments.txt (every utterance:
cluster, distance, kept 0/1) and cluster_report.txt (settings, sizes, kept
counts and, with --ref-utt2spk, NMI / purity / clusters per true speaker of
all and of the kept utterances; with <src-data-dir>/utt2spk's sessions in
<src-data-dir>/utt2session, also how many of a speaker's sessions share its
largest cluster; where <src-data-dir> has utt2session or utt2phonetype, a
"channel" section: the share of the embeddings' variance, and of the
between-cluster variance, that lies between sessions, phone types and true
speakers, pyspk.cluster.report.channel_shares; diagnostics only, never used
for training).

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
import dataclasses
import logging

import torch

from pyspk.cli import add_device_option, bool_arg, new_parser, user_errors_exit
from pyspk.cluster.agglomerative import LINKAGES
from pyspk.cluster.pseudo_label import MERGES, METHODS, SELECTIONS, PseudoLabelOptions, pseudo_label
from pyspk.data.datadir import DataDirError
from pyspk.device import pick_device
from pyspk.logutil import setup_logging

log = logging.getLogger("cluster")


def threshold_arg(value):
    """``auto`` (None: from the data) or a number."""
    if value == "auto":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got '{value}'") from None


def get_parser():
    parser = new_parser(__doc__)
    parser.add_argument("--num-clusters", type=int, default=500,
                        help="number of clusters k; 0: found by --threshold (agglomerative only) (default: 500)")
    parser.add_argument("--method", choices=METHODS, default="kmeans",
                        help="full-batch k-means (embeddings held on the device), mini-batch k-means (embeddings "
                             "stay in host memory, batches go to the device) or agglomerative (default: kmeans)")
    parser.add_argument("--threshold", type=threshold_arg, default=None,
                        help="agglomerative with --num-clusters 0: stop merging above this linkage distance (cosine "
                             "distance for average/complete linkage); auto: the equal-prior crossing of a "
                             "Gaussian-mixture (BIC) fit to the cosine scores of random utterance pairs "
                             "(default: auto)")
    parser.add_argument("--reduce-clusters", type=int, default=0,
                        help="agglomerative and PLDA re-clustering: merge this many k-means micro-clusters "
                             "(0: only above --agglo-max-points utterances, that many) (default: 0)")
    parser.add_argument("--pca-variance", type=float, default=0.0,
                        help="keep the principal components holding this share of the variance before clustering "
                             "(0: no PCA) (default: 0)")
    parser.add_argument("--plda-recluster", type=bool_arg, default=False,
                        help="train a PLDA on the kept members of the first clustering and re-cluster by "
                             "average-linkage AHC on its log-likelihood ratios (default: false)")
    parser.add_argument("--plda-threshold", type=threshold_arg, default=None,
                        help="PLDA re-clustering: merge while the mean LLR between two groups is above this; auto: "
                             "the equal-prior crossing of a Gaussian-mixture fit to the LLRs of random utterance "
                             "pairs (an LLR of 0 assumes a calibrated PLDA) (default: auto)")
    parser.add_argument("--merge", choices=MERGES, default="none",
                        help="second pass over the first pass's clusters: average-linkage AHC merging whole "
                             "clusters while their mean pair score (cosine, or the LLR of a PLDA trained on the first "
                             "pass's kept members) is above --merge-threshold; none: no merging (default: none)")
    parser.add_argument("--merge-threshold", type=threshold_arg, default=None,
                        help="--merge: least mean pair score (cosine score, or PLDA LLR) at which two clusters still "
                             "merge; auto: the equal-prior crossing of a Gaussian-mixture fit to the scores of random "
                             "utterance pairs (default: auto)")
    parser.add_argument("--select", choices=SELECTIONS, default="nearest",
                        help="members kept: the --keep-fraction nearest to their centre, or those whose cluster "
                             "posterior reaches --posterior-threshold (default: nearest)")
    parser.add_argument("--keep-fraction", type=float, default=0.8,
                        help="--select nearest: fraction of each cluster kept, nearest to the centroid first "
                             "(default: 0.8)")
    parser.add_argument("--posterior-threshold", type=float, default=0.9,
                        help="--select posterior: least posterior of the own cluster under a mixture of spherical "
                             "Gaussians at the centres (shared variance, weights the cluster sizes) (default: 0.9)")
    parser.add_argument("--min-cluster-size", type=int, default=5,
                        help="clusters with fewer kept members are dropped (default: 5)")
    parser.add_argument("--max-cluster-size", type=int, default=0,
                        help="at most this many members kept per cluster, the most confident first; 0: no limit "
                             "(default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    add_device_option(parser)
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
    parser.add_argument("--tol-changed", type=float, default=1e-3,
                        help="k-means: also stop once at most this share of the points changed cluster in an "
                             "iteration; 0: only when none did (default: 0.001)")
    parser.add_argument("--num-threads", type=int, default=0,
                        help="torch CPU threads, 0 = torch's default (default: 0)")
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


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    options = PseudoLabelOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PseudoLabelOptions)})
    with user_errors_exit("cluster", (DataDirError, ValueError, OSError)):
        try:
            device = pick_device(args.device)
        except RuntimeError as e:
            raise ValueError(str(e)) from None
        sections = pseudo_label(args.xvector_dir, args.src_data_dir, args.dest_data_dir, args.report_dir, options,
                                device, copies_from=args.copies_from or None, ref_utt2spk=args.ref_utt2spk or None)
    selection = sections["selection"]
    log.info("Wrote %s (%d utterances, %d pseudo-speakers of %d clusters found) and %s/cluster_report.txt",
             args.dest_data_dir, selection["kept_utts"], selection["kept_clusters"],
             sections["clustering"]["num_clusters"], args.report_dir)


if __name__ == "__main__":
    main()
