#!/usr/bin/env bash
# Pseudo-labelling round: cluster utterance embeddings (k-means, mini-batch
# k-means or agglomerative; agglomerative with --num-clusters 0 finds the
# number of clusters by a threshold), optionally re-cluster with a PLDA trained
# on the first pass (--plda-recluster true), keep the confident members
# (nearest to their centroid, or by cluster posterior), and
# write a Kaldi data dir whose speakers are the clusters. Utterance ids become
# "<cluster>-<utt>" (Kaldi wants utt2spk sorted by speaker too); feats.scp and
# the other per-utterance files of the source are carried over unchanged,
# utt2uniq maps back to the source ids, utt2dist holds the distance to the
# centroid. The report dir gets cluster_assignments.txt (all utterances) and
# cluster_report.txt (with --ref-utt2spk: NMI, purity, clusters per true
# speaker and, where <src-data-dir>/utt2session exists, the share of a
# speaker's sessions in its largest cluster; where it has utt2session or
# utt2phonetype, the share of the variance between sessions and phone types,
# pyspk.bin.channel_report's; diagnostics only). With
# --copies-from <combined-data-dir> (clean + augmented copies
# <utt>-reverb/-noise/-music/-babble, with feats.scp, as made by
# steps/augment_data_dir.sh and steps/make_fbank.sh), <dest-data-dir>_combined
# also holds each kept utterance's copies under the same cluster, ids
# "<cluster>-<utt>-<suffix>", features from the combined dir: the dir a trainer
# that picks a copy per crop consumes. Each destination dir is built aside and
# swapped in once valid; re-running with the same options when the outputs are
# newer than the inputs does nothing.
set -euo pipefail
echo "$0 $*"
step_settings="$*"  # what a finished run records (steps/libs/step_done.sh)

# Begin configuration section.
cmd=run.pl
num_clusters=500          # 0: found by --threshold (agglomerative only)
method=kmeans            # kmeans|minibatch|agglomerative
threshold=auto
reduce_clusters=0
pca_variance=0
plda_recluster=false
plda_threshold=auto
merge=none               # none|cosine|plda
merge_threshold=auto
select=nearest           # nearest|posterior
keep_fraction=0.8
posterior_threshold=0.9
min_cluster_size=5
max_cluster_size=0
seed=0
device=auto
ref_utt2spk=
subtract_mean=true
spherical=false
init=k-means++
n_init=1
max_iter=100
tol_changed=0.001        # k-means: stop once at most this share of the points changed cluster
num_threads=0            # torch CPU threads; 0: torch's default
batch_size=16384
linkage=average
agglo_max_points=10000
spk_prefix=pl
copies_from=
# End configuration section.

help_message="Usage: $0 [options] <xvector-dir> <src-data-dir> <dest-data-dir> <report-dir>
e.g.: $0 --num-clusters 500 --ref-utt2spk data/train/utt2spk --copies-from data/train_combined \\
        exp/pl/round1/xvectors_train data/train data/train_pl_r1 exp/pl/round1/cluster
Options:
  --cmd <run.pl|queue.pl ...>         # how to run the job (default: $cmd)
  --num-clusters <k>                  # number of clusters; 0: found by --threshold (agglomerative
                                      # only) (default: $num_clusters)
  --method <kmeans|minibatch|agglomerative>  # clustering method (default: $method)
  --threshold <auto|d>                # agglomerative, --num-clusters 0: stop merging above this linkage
                                      # distance (cosine distance for average/complete); auto: from the
                                      # cosine scores of random utterance pairs, no labels (default: $threshold)
  --reduce-clusters <n>               # agglomerative/PLDA re-clustering: merge n k-means micro-clusters;
                                      # 0: only above --agglo-max-points utterances (default: $reduce_clusters)
  --agglo-max-points <n>              # agglomerative: largest number of points merged directly
                                      # (default: $agglo_max_points)
  --pca-variance <f>                  # keep the principal components holding this share of the
                                      # variance before clustering; 0: no PCA (default: $pca_variance)
  --plda-recluster <true|false>       # second pass: AHC on the LLRs of a PLDA trained on the first pass's
                                      # kept members (default: $plda_recluster)
  --plda-threshold <auto|llr>         # merge while the mean LLR between groups exceeds it; auto: from
                                      # the LLRs of random utterance pairs (default: $plda_threshold)
  --merge <none|cosine|plda>          # second pass: merge whole first-pass clusters by average-linkage
                                      # AHC on cosine or PLDA-LLR scores (default: $merge)
  --merge-threshold <auto|score>      # least mean pair score at which clusters merge; auto: from the
                                      # scores of random utterance pairs (default: $merge_threshold)
  --select <nearest|posterior>        # members kept: nearest to their centroid, or by posterior
                                      # (default: $select)
  --keep-fraction <f>                 # --select nearest: fraction of each cluster kept, nearest to its
                                      # centroid first (default: $keep_fraction)
  --posterior-threshold <p>           # --select posterior: least posterior of the own cluster
                                      # (default: $posterior_threshold)
  --min-cluster-size <n>              # drop clusters with fewer kept members (default: $min_cluster_size)
  --max-cluster-size <n>              # keep at most n per cluster, most confident first; 0: no limit
                                      # (default: $max_cluster_size)
  --seed <n>                          # random seed (default: $seed)
  --device <auto|cpu|cuda>            # where to cluster; auto: cuda if available (default: $device)
  --ref-utt2spk <file>                # true labels, for the report only (default: none)
  --subtract-mean <true|false>        # subtract the mean before length-normalising (default: $subtract_mean)
  --spherical <true|false>            # cosine k-means, unit-norm centroids (default: $spherical)
  --init <k-means++|random>           # k-means initialisation (default: $init)
  --n-init <n>                        # k-means runs, best inertia kept (default: $n_init)
  --max-iter <n>                      # k-means iterations / mini-batch epochs at most (default: $max_iter)
  --tol-changed <f>                   # k-means: stop once at most this share of the points changed
                                      # cluster in an iteration; 0: when none did (default: $tol_changed)
  --num-threads <n>                   # torch CPU threads; 0: torch's default (default: $num_threads)
  --batch-size <n>                    # mini-batch size (default: $batch_size)
  --linkage <average|complete|ward>   # agglomerative linkage (default: $linkage)
  --spk-prefix <str>                  # prefix of the cluster ids (default: $spk_prefix)
  --copies-from <combined-data-dir>   # clean + augmented data dir (e.g. data/train_combined): also write
                                      # <dest-data-dir>_combined, the kept utterances with their augmented
                                      # copies (default: '$copies_from', off)"

. "$(dirname "$0")/../path.sh"
. "$(dirname "$0")/libs/common.sh"
. "$(dirname "$0")/libs/step_done.sh"
. parse_options.sh

if [ $# -ne 4 ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
xvector_dir=$1
src_data=$2
dest_data=$3
report_dir=$4

inputs=("$xvector_dir/xvector.scp" "$src_data/utt2spk" ${ref_utt2spk:+"$ref_utt2spk"} ${copies_from:+"$copies_from/utt2spk"})
require_files "${inputs[@]}"

marker=$report_dir/.done
outputs=("$dest_data/utt2spk" "$report_dir/cluster_report.txt" ${copies_from:+"${dest_data%/}_combined/utt2spk"})
exit_if_step_done "$marker" "$step_settings" "$dest_data (report $report_dir)" "${inputs[@]}" -- "${outputs[@]}"
mkdir -p "$report_dir/log"
run_or_die "$cmd" "$report_dir/log/cluster.log" clustering \
  python -m pyspk.bin.cluster --num-clusters "$num_clusters" --method "$method" --threshold "$threshold" \
    --reduce-clusters "$reduce_clusters" --agglo-max-points "$agglo_max_points" --pca-variance "$pca_variance" \
    --plda-recluster "$plda_recluster" --plda-threshold "$plda_threshold" --merge "$merge" \
    --merge-threshold "$merge_threshold" --select "$select" \
    --keep-fraction "$keep_fraction" --posterior-threshold "$posterior_threshold" \
    --min-cluster-size "$min_cluster_size" --max-cluster-size "$max_cluster_size" --seed "$seed" --device "$device" \
    --ref-utt2spk "$ref_utt2spk" --subtract-mean "$subtract_mean" --spherical "$spherical" --init "$init" \
    --n-init "$n_init" --max-iter "$max_iter" --tol-changed "$tol_changed" --num-threads "$num_threads" \
    --batch-size "$batch_size" --linkage "$linkage" \
    --spk-prefix "$spk_prefix" --copies-from "$copies_from" "$xvector_dir" "$src_data" "$dest_data" "$report_dir"
mark_step_done "$marker" "$step_settings"
grep -E '^((first_pass|clustering)\.num_clusters |(selection|first_pass_truth_all|truth_all|truth_kept)\.)' "$report_dir/cluster_report.txt" || true
combined_msg=
if [ -n "$copies_from" ]; then
  combined_msg=" and ${dest_data%/}_combined ($(wc -l < "${dest_data%/}_combined/utt2spk") utterances with copies)"
fi
echo "$0: wrote $dest_data ($(wc -l < "$dest_data/utt2spk") utterances, $(wc -l < "$dest_data/spk2utt") pseudo-speakers)$combined_msg; report in $report_dir/cluster_report.txt"
