#!/usr/bin/env bash
# The generic self-supervised speaker-verification pipeline, written once and
# called by every corpus recipe's run.sh after its own data preparation (as
# ESPnet's egs2 TEMPLATE). Run it from the recipe directory, which holds
# path.sh, cmd.sh, steps/, utils/, conf/ and the Kaldi data dirs:
#   data/<train-set>   wav.scp, utt2spk (true labels, if any, are read only by
#                      the supervised upper bound and the cluster diagnostics)
#   data/<test-set>    wav.scp, utt2spk and one or more trial lists, each file
#                      named trials or trials_<name> (e.g. trials_o, trials_e)
#
# Stages (0 and 1, install and data preparation, belong to the recipe):
#   2  fbank and energy VAD of the train and test sets (data/<set>/feats.scp,
#      vad.scp; fbank/); with --augment true, augmented copies of the train
#      set (reverb, noise, music, babble, at the data's sample rate) and their
#      fbank in data/<train-set>_combined, from which training draws (each copy
#      with its clean utterance's VAD); with --online-aug true no copies:
#      training reads the audio of data/<train-set>/wav.scp and augments it on
#      the device (data.source=wav)
#   3  no-training baseline: cosine on per-utterance fbank mean+std
#      -> <exp>/baseline, results fbank_mean_std_cosine
#   4  self-supervised training (--ssl dino|contrastive|memo) -> <exp>/<config name>/final.pt
#   5  embeddings of the untrained network (<exp>/untrained) and of the SSL
#      model (MeMo: of each architecture's teacher) for the train and test sets
#      -> <model-dir>/xvectors_[<teacher>_]<set>
#   6  cosine scoring, EER/minDCF and DET plots (MeMo: each teacher and fused);
#      with --adapt-set also with that unlabelled in-domain set's mean (*_cosine_adapt)
#      -> <model-dir>/scores/, results untrained_cosine, <config name>_cosine
#   7  pseudo-labelling rounds 1..R: k-means of the previous round's train
#      embeddings (--cluster-merge: whole clusters that are one speaker merged),
#      confident members kept, AAM-softmax classifier on them (and their
#      augmented copies; started from --pl-init; the classifier config's
#      train.average_last and classifier.init_weight shape final.pt),
#      re-extraction, cosine and PLDA scoring (with --adapt-set also a PLDA
#      adapted to it, steps/adapt_plda.sh: *_plda_adapt)
#      -> data/<train-set>_pl_<ssl>[_<tag>]_r<r> (pseudo-labels),
#      <exp>/pl_<ssl>[_<tag>]_r<r>/{cluster/cluster_report.txt,final.pt,xvectors_*,plda,scores},
#      results pl_<ssl>[_<tag>]_r<r>_{cosine,plda}
#      with --calibrate true (and a round), calibrated scores: each system's
#      cosine (and PLDA) scores mapped to log-likelihood ratios by a logistic
#      regression (steps/calibrate_scores.sh) trained on pairs of training
#      utterances scored by the same back-end, never on test trials: a round's
#      systems on its own pseudo-labels, the fbank baseline and the SSL model
#      (MeMo: its default teacher) on round 1's (clusters of the SSL model's
#      embeddings; they have no labels of their own); only pairs of two calls
#      where the train set has utt2session
#      -> <model-dir>/calibration/, results <system>_{cosine,plda}_cal with actDCF
#   8  supervised upper bound: the same classifier budget on the true labels of
#      --supervised-set (default the train set; e.g. only its named speakers)
#      (--supervised false skips it, for a train set without labels); it starts
#      from the SSL model as the rounds do (MeMo: --memo-start's teacher); with
#      --calibrate true calibrated on those labels
#      -> <exp>/supervised_upper_bound, results supervised_upper_bound_{cosine,plda}[_cal]
#   9  summary: prints the results file and the rounds' cluster reports; where the
#      train set has utt2session or utt2phonetype, the share of the SSL model's and
#      each round's train embeddings' variance between calls, phone types and
#      (--supervised true) true speakers (pyspk.bin.channel_report)
#
# Results: one line per system and trial list in --results (default
# <exp>/results.txt), named after the experiment dir of the model, so that two
# configs of one method keep their own lines:
#   <model>_<back-end>[_<test-set>][_<list>]
# <model> is the name of the model's experiment dir: the SSL model's (its
# config's name: exp/dino_rdino -> dino_rdino; MeMo: <name>_<teacher> per
# teacher and <name>_fused), a round's (pl_dino_r2, pl_dino_ahc_r1),
# untrained, supervised_upper_bound; the fbank baseline is fbank_mean_std.
# <back-end> is cosine, cosine_adapt, plda, plda_adapt, cosine_cal or plda_cal (calibrated
# scores: their lines also hold actDCF(p=...) at the minDCF priors); the test set only
# when it is not the first of --test-sets; <list> of trials_<list> (none for
# plain "trials"). E.g. dino_rdino_cosine, pl_dino_r2_plda_o,
# supervised_upper_bound_plda_adapt. A line of the same name made from other
# scores is kept and the run stops (steps/compute_metrics.sh --overwrite).
# Experiment dirs live under --exp (default exp). Every stage is idempotent:
# finished work is kept and not rewritten; to redo a piece of it, delete its
# output (a round: <exp>/pl_<ssl>_r<r>). A finished training (SSL, round or
# bound) re-run with another config or overrides stops, naming what differs:
# give the new setup its own --exp (or --pl-tag), or delete the old one. Before
# any work (and with --check-only true) every config is loaded and checked
# with its overrides (pyspk.bin.train --check-only), the classifier's model
# section against the backbone it starts from.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
stage=2
stop_stage=100
nj=2                      # parallel jobs for features and embeddings
cmd=                      # job launcher of features and embeddings (default: $train_cmd of cmd.sh)
gpu_cmd=                  # job launcher of training (default: $cuda_cmd of cmd.sh)
device=auto               # auto (cuda if available), cpu, cuda, cuda:1 ...
num_gpus=1                # training processes (DDP); capped to the GPUs found (--device cpu: to the cores)
train_set=train
test_sets="test"
ssl=dino                  # dino|contrastive|memo
ssl_config=               # default: conf/<ssl>.yaml
ssl_overrides=            # e.g. "optim.lr.base=0.05 train.epochs=10"
classifier_config=conf/classifier.yaml
classifier_overrides=
rounds=2                  # pseudo-labelling rounds
num_clusters=200          # k (capped to a tenth of the train utterances); 0: found by --cluster-threshold
cluster_method=kmeans     # kmeans|minibatch|agglomerative (only agglomerative takes --num-clusters 0)
cluster_threshold=auto    # agglomerative with --num-clusters 0: cosine-distance threshold, auto: from the data
plda_recluster=false      # re-cluster with a PLDA trained on the first clustering's kept members
cluster_merge=none        # none|cosine|plda: merge whole k-means clusters that are one speaker (AHC, threshold)
cluster_merge_threshold=auto  # least mean pair score (cosine, or PLDA LLR) of two merged clusters; auto: from the data
cluster_select=nearest    # nearest (--keep-fraction) | posterior (cluster posterior >= --posterior-threshold)
keep_fraction=0.7         # share of each cluster kept, nearest to its centroid first
posterior_threshold=0.9
min_cluster_size=5        # smaller clusters are dropped
max_cluster_size=0        # at most this many kept per cluster, most confident first; 0: no limit
pl_init=ssl               # each round's classifier (and the upper bound) starts from: ssl (the SSL model) |
                          # previous (the last round's; the bound: the SSL model) | scratch (random, as Cho et al.)
memo_start=fused          # --ssl memo: what round 1 starts from: fused (labels from the teachers' fused embeddings,
                          # the classifier from the default teacher) | <arch> of model.archs (that teacher's);
                          # the upper bound starts from the same teacher
pl_tag=                   # rounds in <exp>/pl_<ssl>_<tag>_r<r>: several clustering/classifier choices side by side
plda_lda_dim=0            # LDA before PLDA, 0 for none (capped to the pseudo-speakers - 1)
augment=true              # augmented copies of the train set for training
online_aug=false          # train from raw audio, augmented on the device: no stored copies (overrides --augment)
aug_types="reverb noise music babble"
aug_audio_format=wav      # audio of the augmented copies: wav|flac (flac: about half the disk)
rir_dir=                  # RIRS_NOISES; empty: simulated rooms
musan_dir=                # MUSAN; empty: generated noise, music and babble
supervised=true           # stage 8: the upper bound on the true labels of the train set
exp=exp                   # root of the experiment dirs (a second setup of one recipe side by side: exp_<name>)
use_vad=false             # embeddings of voiced frames only (vad.scp), as the training config's data.use_vad
supervised_set=           # stage 8's labelled set, utterances of --train-set (default: --train-set itself)
adapt_set=                # unlabelled in-domain data: scores also with its cosine mean and a PLDA adapted to it
plda_adapt_scales=0.75,0.25  # shares of the in-domain excess variance booked within,between speakers
results=                  # default: <exp>/results.txt
check_only=false          # only check the options (a recipe does so before its own stages)
calibrate=true            # stages 7, 8: calibrated scores (<system>_{cosine,plda}_cal lines with actDCF)
# End configuration section.

# --help prints the header comment above (its stages and what each writes), then the options.
help_message="$("$(dirname "$0")/../utils/print_header.sh" "$0")

Usage: $0 [options]   (run from a recipe directory)
e.g.: $0 --stage 4 --stop-stage 6 --train-set voxceleb2_dev --test-sets voxceleb1 --ssl dino --ssl-config conf/dino_ecapa.yaml
Options:
  --stage N / --stop-stage N   stages to run, 2..9 ($stage..$stop_stage)
  --nj N                       parallel jobs for features and embeddings ($nj)
  --cmd CMD / --gpu-cmd CMD    job launchers (default: \$train_cmd / \$cuda_cmd of cmd.sh)
  --device DEV                 auto|cpu|cuda[:i] ($device)
  --num-gpus N                 training processes ($num_gpus); capped to the GPUs found (--device cpu: to the cores)
  --train-set NAME             data/NAME, trained on without its labels ($train_set)
  --test-sets 'NAME ...'       data/NAME with trials or trials_<list> files ($test_sets)
  --ssl NAME                   dino|contrastive|memo ($ssl)
  --ssl-config FILE            SSL training config (default: conf/<ssl>.yaml)
  --ssl-overrides 'K=V ...'    overrides of the SSL config ($ssl_overrides)
  --classifier-config FILE     pseudo-label classifier config ($classifier_config)
  --classifier-overrides 'K=V ...' ($classifier_overrides)
  --rounds N                   pseudo-labelling rounds ($rounds)
  --num-clusters K             clusters; 0: found by --cluster-threshold ($num_clusters)
  --cluster-method M           kmeans|minibatch|agglomerative ($cluster_method)
  --cluster-threshold T|auto   agglomerative cosine-distance threshold with --num-clusters 0 ($cluster_threshold)
  --plda-recluster true|false  second pass on PLDA scores ($plda_recluster)
  --cluster-merge M            none|cosine|plda: merge whole k-means clusters that are one speaker ($cluster_merge)
  --cluster-merge-threshold T|auto  least mean cosine score / PLDA LLR of merged clusters ($cluster_merge_threshold)
  --cluster-select S           nearest|posterior ($cluster_select)
  --keep-fraction F            confident share kept per cluster ($keep_fraction)
  --posterior-threshold P      least cluster posterior kept with --cluster-select posterior ($posterior_threshold)
  --min-cluster-size N         smaller clusters are dropped ($min_cluster_size)
  --max-cluster-size N         most members kept per cluster, 0: no limit ($max_cluster_size)
  --pl-init ssl|previous|scratch  each round's classifier init; scratch also for the upper bound ($pl_init)
  --memo-start fused|ARCH      --ssl memo: round 1 clusters the teachers' fused embeddings (each mean-removed,
                               length-normalised, concatenated: the fused cosine) and starts from the default
                               teacher, or clusters and starts from teacher_ARCH; the upper bound starts
                               from the same teacher ($memo_start)
  --pl-tag TAG                 rounds in <exp>/pl_<ssl>_<TAG>_r<r>, results pl_<ssl>_<TAG>_r<r>_* (default: no tag)
  --plda-lda-dim N             LDA dimension before PLDA, 0 for none ($plda_lda_dim)
  --augment true|false         augmented copies for training ($augment)
  --online-aug true|false      augment raw audio on the training device instead of stored copies ($online_aug)
  --aug-types 'T ...'          augmentation types ($aug_types)
  --aug-audio-format wav|flac  audio of the augmented copies ($aug_audio_format)
  --rir-dir DIR                RIRS_NOISES directory (default: simulated rooms)
  --musan-dir DIR              MUSAN directory (default: generated sources)
  --supervised true|false      stage 8, the upper bound on true labels ($supervised)
  --exp DIR                    root of the experiment dirs ($exp)
  --use-vad true|false         embeddings of the frames vad.scp marks voiced ($use_vad)
  --supervised-set NAME        stage 8's labelled data dir, a subset of --train-set (default: --train-set)
  --adapt-set NAME             unlabelled in-domain data dir for back-end adaptation: cosine with its mean
                               and PLDA adapted to it (steps/adapt_plda.sh), results <system>_{cosine,plda}_adapt
  --plda-adapt-scales W,B      shares of the adaptation set's excess variance added to the within- and
                               between-speaker covariances ($plda_adapt_scales: Kaldi's SRE16 recipe;
                               Kaldi's library defaults are 0.3,0.7)
  --results FILE               results file (default: <exp>/results.txt)
  --check-only true|false      check the option values and configs, then exit ($check_only)
  --calibrate true|false       calibrated scores of the baseline, SSL, rounds and bound, trained on training
                               pairs of round 1's / each round's pseudo-labels / the bound's labels: results
                               <system>_{cosine,plda}_cal with actDCF ($calibrate)"

. ./path.sh
. ./cmd.sh
. parse_options.sh
# shellcheck source=libs/common.sh
. steps/libs/common.sh  # log
[ $# -eq 0 ] || { printf "%s\n" "$help_message" >&2; exit 1; }
: "${cmd:=$train_cmd}" "${gpu_cmd:=$cuda_cmd}"

die() { log "ERROR: $*" >&2; exit 1; }
warn() { log "WARNING: $*" >&2; }

case $ssl in dino|contrastive|memo) ;; *) die "--ssl must be dino, contrastive or memo, got '$ssl'" ;; esac
case $pl_init in ssl|previous|scratch) ;; *) die "--pl-init must be ssl, previous or scratch, got '$pl_init'" ;; esac
case $cluster_merge in none|cosine|plda) ;; *) die "--cluster-merge must be none, cosine or plda, got '$cluster_merge'" ;; esac
[ $cluster_merge = none ] || [ $plda_recluster = false ] ||
  die "--cluster-merge and --plda-recluster are two second passes; ask for one"
[[ $pl_tag =~ ^[A-Za-z0-9.-]*$ ]] || die "--pl-tag may hold letters, digits, '.' and '-' only, got '$pl_tag'"
case $cluster_method in kmeans|minibatch|agglomerative) ;;
  *) die "--cluster-method must be kmeans, minibatch or agglomerative, got '$cluster_method'" ;; esac
case $cluster_select in nearest|posterior) ;; *) die "--cluster-select must be nearest or posterior, got '$cluster_select'" ;; esac
for opt in augment online_aug supervised check_only plda_recluster use_vad calibrate; do
  case ${!opt} in true|false) ;; *) die "--$opt must be true or false, got '${!opt}'" ;; esac
done
for opt in nj num_gpus rounds num_clusters min_cluster_size max_cluster_size; do
  [[ "${!opt}" =~ ^[0-9]+$ ]] || die "--${opt//_/-} must be a non-negative integer, got '${!opt}'"
done
[ "$num_clusters" -gt 0 ] || [ $cluster_method = agglomerative ] ||
  die "--num-clusters 0 (found by a threshold) needs --cluster-method agglomerative"
[[ "$plda_lda_dim" =~ ^[0-9]+$ ]] || die "--plda-lda-dim must be a non-negative integer, got '$plda_lda_dim'"
[[ "$plda_adapt_scales" =~ ^[0-9.]+,[0-9.]+$ ]] ||
  die "--plda-adapt-scales must be two non-negative numbers W,B, got '$plda_adapt_scales'"
[ -n "$ssl_config" ] || ssl_config=conf/$ssl.yaml
for f in "$ssl_config" "$classifier_config"; do
  [ -f "$f" ] || die "no such config $f (relative paths are taken from the recipe directory $PWD)"
done
require_pyspk  # the config checks below and every stage run python
# runs <stage>...: whether this run (--stage..--stop-stage) takes in one of the stages.
runs() {
  local st
  for st in "$@"; do
    if [ "$stage" -le "$st" ] && [ "$stop_stage" -ge "$st" ]; then return 0; fi
  done
  return 1
}

# MeMo's rounds start (--memo-start): an architecture of the MeMo config, its teacher the backbone the
# rounds' classifier starts from (checked against the classifier config below).
memo_backbone=
if [ $ssl = memo ]; then
  [[ $memo_start =~ ^[A-Za-z0-9_]+$ ]] || die "--memo-start must be fused or an architecture name, got '$memo_start'"
  # shellcheck disable=SC2086  # overrides are K=V words
  memo_backbone=$(python -c 'import sys
from pyspk.config import ConfigError
from pyspk.ssl.memo import rounds_start
from pyspk.train.objectives import load_training_config
try:
    print(rounds_start(load_training_config(sys.argv[1], sys.argv[3:]), sys.argv[2]))
except ConfigError as e:
    sys.exit(str(e))' "$ssl_config" "$memo_start" $ssl_overrides) || die "--memo-start $memo_start: see above"
fi
[ -n "$test_sets" ] || die "--test-sets is empty"
[[ $exp =~ ^[A-Za-z0-9._/-]+$ ]] || die "--exp may hold letters, digits, '.', '_', '-' and '/' only, got '$exp'"
: "${results:=$exp/results.txt}" "${supervised_set:=$train_set}"
# Online augmentation: every training reads wav.scp and augments on the device, with the same
# types, corpora and SNRs as the stored copies (values in JSON: train.sh splits overrides on spaces).
wav_overrides=
if [ $online_aug = true ]; then
  augment=false
  types=$(printf '"%s":1,' $aug_types)
  wav_overrides="data.source=wav data.fbank_conf=conf/fbank.conf data.online_aug={\"types\":{${types%,}}"
  wav_overrides+="${rir_dir:+,\"rir_dir\":\"$rir_dir\"}${musan_dir:+,\"musan_dir\":\"$musan_dir\"}}"
fi

# Every config the run trains with, loaded and checked before any work (pyspk.bin.train --check-only):
# the SSL and classifier configs with their overrides (any key the objective knows, each value's type),
# and that the classifier's model section fits the backbone it starts from (the SSL model's, which
# it takes when the section leaves it out; with --pl-init scratch its own).
if [ $check_only = true ] || runs 4 5 6 7 8; then
  # shellcheck disable=SC2086  # overrides are K=V words
  if [ $pl_init = scratch ]; then
    python -m pyspk.bin.train --check-only --config "$ssl_config" $wav_overrides $ssl_overrides >/dev/null &&
      python -m pyspk.bin.train --check-only --config "$classifier_config" $wav_overrides $classifier_overrides \
        >/dev/null
  else
    python -m pyspk.bin.train --check-only --config "$classifier_config" --init-config "$ssl_config" \
      --init-overrides "$wav_overrides $ssl_overrides" ${memo_backbone:+--init-backbone "$memo_backbone"} \
      $wav_overrides $classifier_overrides >/dev/null
  fi || die "--ssl-config $ssl_config / --classifier-config $classifier_config: see the error above"
fi
[ $check_only = false ] || exit 0
for d in $train_set $test_sets $supervised_set $adapt_set; do
  [ -d data/$d ] || die "no data dir data/$d: run the recipe's data preparation (stage 1) first"
done
first_test=${test_sets%% *}

# Experiment dirs are named after the config file: conf/dino_demo.yaml -> <exp>/dino_demo;
# result lines after the experiment dir (the header's "Results").
ssl_exp=$exp/$(basename "$ssl_config" .yaml)
ssl_name=$(basename "$ssl_exp")
train_data=$train_set
[ $augment = false ] || train_data=${train_set}_combined
num_train_utts=$(wc -l < data/$train_set/utt2spk)

# Never more training processes than devices (GPUs found; on --device cpu, the cores available):
# said once, by a run that trains (stages 4, 7, 8).
if [ "$num_gpus" -gt 1 ] && [ "$device" = cpu ]; then
  cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # the cores this process may run on
  if [ "$cores" -lt "$num_gpus" ]; then
    runs 4 7 8 && warn "--num-gpus $num_gpus with --device cpu but $cores core(s) available:" \
                       "training with $cores CPU process(es)"
    num_gpus=$cores
  fi
elif [ "$num_gpus" -gt 1 ] && runs 4 7 8; then
  found=$(python -c "import torch; print(torch.cuda.device_count())")
  if [ "$found" -lt "$num_gpus" ]; then
    warn "--num-gpus $num_gpus but $found GPU(s) found: training with $(( found > 0 ? found : 1 )) process(es)" \
         "(--device cpu --num-gpus N runs up to N CPU processes, one per core)"
    num_gpus=$(( found > 0 ? found : 1 ))
  fi
fi
# A size option larger than the data allows is capped; said once, by a run that clusters (stage 7).
max_clusters=$(( num_train_utts / 10 > 2 ? num_train_utts / 10 : 2 ))
if [ "$num_clusters" -gt "$max_clusters" ]; then
  if runs 7 && [ "$rounds" -gt 0 ]; then
    warn "--num-clusters $num_clusters is more than a tenth of the $num_train_utts utterances of data/$train_set:" \
         "using $max_clusters"
  fi
  num_clusters=$max_clusters
fi

# trial_lists: "<test-set> <trials-file> <suffix>" per trial list of every test set.
trial_lists() {
  local t f name suffix
  for t in $test_sets; do
    for f in data/$t/trials data/$t/trials_*; do
      [ -f "$f" ] || continue
      name=$(basename "$f")
      suffix=
      [ "$t" = "$first_test" ] || suffix=_$t
      [ "$name" = trials ] || suffix=${suffix}_${name#trials_}
      echo "$t $f $suffix"
    done
  done
}
[ -n "$(trial_lists)" ] || die "no trial list (data/<test-set>/trials or trials_<name>) in any of: $test_sets"

# metrics <name> <trials> <scores> [<det-plot>]: one results line (the step skips a finished one).
metrics() {
  local name=$1 trials=$2 scores=$3 det=${4:-}
  steps/compute_metrics.sh --name "$name" --results "$results" ${det:+--det-plot "$det"} "$trials" "$scores"
}

# The data dirs every model embeds: the train and test sets, and the adaptation set if any.
embed_sets="$train_set $test_sets"
[ -z "$adapt_set" ] || [[ " $embed_sets " == *" $adapt_set "* ]] || embed_sets+=" $adapt_set"

# extract <model-dir> <backbone|""> <part>...: embeddings of <model-dir>/final.pt for data/<part>
# into <model-dir>/xvectors_[<backbone>_]<part> (the step itself skips finished work).
extract() {
  local model=$1 backbone=$2 part; shift 2
  for part in "$@"; do
    steps/extract_embeddings.sh --nj $nj --cmd "$cmd" --device $device --use-vad $use_vad ${backbone:+--backbone $backbone} \
      $model/final.pt data/$part $model/xvectors_${backbone:+${backbone}_}$part
  done
}

# score_cosine <model-dir> <system> [<backbone>]: every trial list, the train-set mean removed; with
# --adapt-set (other than the train set) also with the adaptation set's mean (<system>_cosine_adapt).
score_cosine() {
  local dir=$1 system=$2 tag=${3:+${3}_} t trials suffix scores mean_set name mean_sets=$train_set
  [ -z "$adapt_set" ] || [ "$adapt_set" = "$train_set" ] || mean_sets+=" $adapt_set"
  while read -r t trials suffix; do
    for mean_set in $mean_sets; do
      name=cosine
      [ "$mean_set" = "$train_set" ] || name=cosine_adapt
      scores=$dir/scores/${name}_${tag}$(basename $trials)_$t
      steps/score_cosine.sh --mean-dir $dir/xvectors_${tag}$mean_set $trials \
        $dir/xvectors_${tag}$t $dir/xvectors_${tag}$t $scores
      metrics ${system}_$name$suffix $trials $scores ${scores}_det.png
    done
  done < <(trial_lists)
}

# score_plda <model-dir> <system> <labels-dir>: PLDA trained on <model-dir>'s embeddings of the
# utterances of <labels-dir> with its labels (true or pseudo), every trial list scored; with
# --adapt-set also with the PLDA adapted to it (<system>_plda_adapt).
score_plda() {
  local dir=$1 system=$2 labels=$3 t trials suffix scores backend lda_dim=$plda_lda_dim num_spk
  num_spk=$(cut -d' ' -f2 data/$labels/utt2spk | sort -u | wc -l)
  if [ "$lda_dim" -ge "$num_spk" ]; then
    warn "--plda-lda-dim $lda_dim needs more than $num_spk speakers in data/$labels: using $((num_spk - 1))"
    lda_dim=$((num_spk - 1))
  fi
  steps/train_plda.sh --lda-dim $lda_dim $dir/xvectors_$labels data/$labels $dir/plda
  [ -z "$adapt_set" ] || steps/adapt_plda.sh --within-covar-scale ${plda_adapt_scales%,*} \
    --between-covar-scale ${plda_adapt_scales#*,} $dir/plda $dir/xvectors_$adapt_set $dir/plda_adapt
  while read -r t trials suffix; do
    for backend in plda ${adapt_set:+plda_adapt}; do
      scores=$dir/scores/${backend}_$(basename $trials)_$t
      steps/score_plda.sh $dir/$backend $trials $dir/xvectors_$t $dir/xvectors_$t $scores
      metrics ${system}_$backend$suffix $trials $scores
    done
  done < <(trial_lists)
}

# calibrate <model-dir> <system> <labels> <back-end>...: each back-end's (cosine, plda; fbank: the
# baseline's) scores of every trial list calibrated on trials of data/<labels>'s speakers, training
# utterances scored by that back-end, into <model-dir>/calibration (steps/calibrate_scores.sh);
# results <system>_<back-end>_cal<suffix>, with actDCF. A list without scores (its stage not run) is left out.
calibrate() {
  local dir=$1 system=$2 labels=$3 cal=$1/calibration backend t trials suffix scores train_scores cross=false
  local exclude=()
  shift 3
  [ -f data/$labels/utt2session ] && cross=true
  for t in $test_sets; do exclude+=(--exclude "data/$t/utt2spk"); done
  mkdir -p $cal
  if [ ! -f $cal/trials ] || [ data/$labels/utt2spk -nt $cal/trials ]; then
    python -m pyspk.bin.make_calibration_trials --cross-session $cross "${exclude[@]}" data/$labels $cal/trials
  fi
  for backend in "$@"; do
    train_scores=$cal/scores_$backend
    case $backend in
      cosine) steps/score_cosine.sh --mean-dir $dir/xvectors_$train_set $cal/trials $dir/xvectors_$train_set \
                $dir/xvectors_$train_set $train_scores ;;
      plda) steps/score_plda.sh $dir/plda $cal/trials $dir/xvectors_$train_set $dir/xvectors_$train_set $train_scores ;;
      fbank) [ $train_scores -nt $cal/trials ] ||
               python -m pyspk.bin.score_fbank_baseline --scores $train_scores data/$train_set $cal/trials >/dev/null ;;
    esac
    while read -r t trials suffix; do
      scores=$dir/scores/${backend}_$(basename $trials)_$t
      [ $backend != fbank ] || scores=$dir/scores_$(basename $trials)_$t
      [ -f $scores ] || { warn "no $scores to calibrate"; continue; }
      steps/calibrate_scores.sh $cal/trials $train_scores $cal/$backend $scores ${scores}_cal
      steps/compute_metrics.sh --calibrated true --name ${system}_${backend/fbank/cosine}_cal$suffix \
        --results "$results" $trials ${scores}_cal
    done < <(trial_lists)
  done
}

# MeMo keeps one teacher per architecture; the file's default one comes first.
memo_teachers() {
  python -m pyspk.bin.extract_embeddings list $ssl_exp/final.pt | grep '^teacher_'
}

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: fbank features and energy VAD"
  for part in $train_set $test_sets; do
    steps/make_fbank.sh --nj $nj --cmd "$cmd" data/$part $exp/make_fbank/$part fbank
    steps/compute_vad_decision.sh --nj $nj --cmd "$cmd" data/$part $exp/make_vad/$part fbank
  done
  if [ $augment = true ]; then
    log "Stage 2: augmented copies of data/$train_set ($aug_types) -> data/$train_data, and their fbank"
    steps/augment_data_dir.sh --nj $nj --cmd "$cmd" --types "$aug_types" --audio-format $aug_audio_format \
      ${rir_dir:+--rir-dir "$rir_dir"} ${musan_dir:+--musan-dir "$musan_dir"} data/$train_set $exp/augment/$train_set
    steps/make_fbank.sh --nj $nj --cmd "$cmd" data/$train_data $exp/make_fbank/$train_data fbank
    # A copy keeps its clean utterance's length, so it takes that utterance's VAD (as Kaldi's
    # augmentation scripts copy vad.scp): training with data.use_vad crops the same voiced frames.
    awk 'NR == FNR { vad[$1] = $2; next } ($2 in vad) { print $1, vad[$2] }' \
      data/$train_set/vad.scp data/$train_data/utt2uniq > data/$train_data/vad.scp.tmp
    if cmp -s data/$train_data/vad.scp.tmp data/$train_data/vad.scp; then
      rm data/$train_data/vad.scp.tmp  # unchanged: a re-run rewrites nothing
    else
      mv data/$train_data/vad.scp.tmp data/$train_data/vad.scp
    fi
  fi
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: no-training baseline (cosine on fbank mean+std)"
  mkdir -p $exp/baseline
  while read -r t trials suffix; do
    scores=$exp/baseline/scores_$(basename $trials)_$t
    [ -f "$scores" ] || python -m pyspk.bin.score_fbank_baseline --scores $scores data/$t $trials
    metrics fbank_mean_std_cosine$suffix $trials $scores
  done < <(trial_lists)
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: $ssl training ($ssl_config${ssl_overrides:+, overrides: $ssl_overrides}) on data/$train_data${wav_overrides:+ (raw audio, augmented on the device)} -> $ssl_exp"
  steps/train.sh --cmd "$gpu_cmd" --nj-gpus $num_gpus --device $device --config $ssl_config \
    --overrides "$wav_overrides $ssl_overrides" data/$train_data $ssl_exp
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: embeddings of the untrained network and of $ssl_exp"
  [ -f $exp/untrained/final.pt ] || \
    python -m pyspk.bin.init_model --config $ssl_config --seed 0 $ssl_overrides $exp/untrained/final.pt
  extract $exp/untrained "" $embed_sets
  extract $ssl_exp "" $embed_sets
  if [ $ssl = memo ]; then
    for teacher in $(memo_teachers | tail -n +2); do
      extract $ssl_exp $teacher $embed_sets
    done
  fi
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: cosine scoring and metrics"
  score_cosine $exp/untrained untrained
  if [ $ssl = memo ]; then
    teacher_list=$(memo_teachers)
    mapfile -t teachers <<< "$teacher_list"
    score_cosine $ssl_exp ${ssl_name}_${teachers[0]}
    for teacher in "${teachers[@]:1}"; do
      score_cosine $ssl_exp ${ssl_name}_$teacher $teacher
    done
    while read -r t trials suffix; do
      list=$(basename "$trials")_$t
      fused=("$ssl_exp/scores/cosine_$list")
      for teacher in "${teachers[@]:1}"; do
        fused+=("$ssl_exp/scores/cosine_${teacher}_$list")
      done
      scores=$ssl_exp/scores/cosine_fused_$list
      [ -f "$scores" ] || steps/fuse_scores.sh "$trials" "${fused[@]}" "$scores"
      metrics "${ssl_name}_fused_cosine$suffix" "$trials" "$scores" "${scores}_det.png"
    done < <(trial_lists)
  else
    score_cosine $ssl_exp $ssl_name
  fi
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  prev=$ssl_exp
  ref_opt=()
  [ "$supervised" = false ] || ref_opt=(--ref-utt2spk "data/$train_set/utt2spk")
  # Round 1's labels: the SSL model's train embeddings; MeMo: --memo-start's (the teachers' fused, or one's).
  start_xvectors=$ssl_exp/xvectors_$train_set
  start_backbone=()
  if [ $ssl = memo ]; then
    start_backbone=(--init-backbone "$memo_backbone")
    if [ "$memo_start" = fused ]; then
      start_xvectors=$ssl_exp/xvectors_fused_$train_set
      if [ ! -f $start_xvectors/xvector.scp ]; then
        mapfile -t teachers < <(memo_teachers)
        fuse_in=("$ssl_exp/xvectors_$train_set")
        for teacher in "${teachers[@]:1}"; do fuse_in+=("$ssl_exp/xvectors_${teacher}_$train_set"); done
        python -m pyspk.bin.fuse_embeddings "${fuse_in[@]}" $start_xvectors
      fi
    elif [ "$memo_backbone" != "$(memo_teachers | head -n 1)" ]; then
      start_xvectors=$ssl_exp/xvectors_${memo_backbone}_$train_set
    fi
    log "Stage 7: MeMo rounds start from --memo-start $memo_start: labels from $start_xvectors," \
        "classifier from $memo_backbone"
  fi
  for r in $(seq 1 $rounds); do
    dir=$exp/pl_${ssl}${pl_tag:+_$pl_tag}_r$r
    pl_data=${train_set}_pl_${ssl}${pl_tag:+_$pl_tag}_r$r
    init_opt=(--init-model "$ssl_exp/final.pt" ${start_backbone[@]+"${start_backbone[@]}"})
    [ $pl_init != previous ] || [ "$prev" = "$ssl_exp" ] || init_opt=(--init-model "$prev/final.pt")
    [ $pl_init != scratch ] || init_opt=()
    # The round's own marker: steps/train.sh's <dir>/.done says only that training finished.
    if [ -f $dir/.scored ]; then
      # ... of this classifier config and overrides: of others it stops, naming what differs.
      # shellcheck disable=SC2086  # overrides are K=V words
      python -m pyspk.bin.train --check-only --config $classifier_config ${init_opt[@]+"${init_opt[@]}"} \
        data/$train_set $dir $wav_overrides $classifier_overrides >/dev/null
      log "Stage 7: round $r/$rounds is finished ($dir/.scored); nothing to do"
      prev=$dir
      continue
    fi
    labels_from=$prev/xvectors_$train_set
    [ "$prev" != "$ssl_exp" ] || labels_from=$start_xvectors
    log "Stage 7: pseudo-labelling round $r/$rounds (labels from $labels_from, init from ${init_opt[1]:-scratch}${init_opt[3]:+ ${init_opt[3]}}) -> $dir"
    copies_opt=()
    pl_train=$pl_data
    if [ $augment = true ]; then
      copies_opt=(--copies-from "data/$train_data")
      pl_train=${pl_data}_combined
    fi
    steps/cluster_embeddings.sh --num-clusters $num_clusters --method $cluster_method \
      --threshold $cluster_threshold --plda-recluster $plda_recluster --merge $cluster_merge \
      --merge-threshold $cluster_merge_threshold --select $cluster_select \
      --keep-fraction $keep_fraction --posterior-threshold $posterior_threshold \
      --min-cluster-size $min_cluster_size --max-cluster-size $max_cluster_size --device $device \
      "${ref_opt[@]}" "${copies_opt[@]}" "$labels_from" data/$train_set data/$pl_data $dir/cluster
    steps/train.sh --cmd "$gpu_cmd" --nj-gpus $num_gpus --device $device --config $classifier_config \
      --overrides "$wav_overrides $classifier_overrides" ${init_opt[@]+"${init_opt[@]}"} data/$pl_train $dir
    extract $dir "" $embed_sets $pl_data
    score_cosine $dir "$(basename $dir)"
    score_plda $dir "$(basename $dir)" $pl_data
    touch $dir/.scored
    prev=$dir
  done
  if [ $calibrate = true ] && [ "$rounds" -gt 0 ]; then
    log "Stage 7: calibrated scores (training pairs of round 1's / each round's pseudo-labels)"
    r1_labels=${train_set}_pl_${ssl}${pl_tag:+_$pl_tag}_r1
    calibrate $exp/baseline fbank_mean_std $r1_labels fbank
    ssl_system=$ssl_name
    [ $ssl != memo ] || ssl_system=${ssl_name}_$(memo_teachers | head -n 1)
    calibrate $ssl_exp $ssl_system $r1_labels cosine
    for r in $(seq 1 $rounds); do
      dir=$exp/pl_${ssl}${pl_tag:+_$pl_tag}_r$r
      calibrate $dir "$(basename $dir)" ${train_set}_pl_${ssl}${pl_tag:+_$pl_tag}_r$r cosine plda
    done
  fi
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  dir=$exp/supervised_upper_bound
  init_opt=(--init-model "$ssl_exp/final.pt")
  # MeMo: from --memo-start's teacher, as the rounds (named only when it is not the file's default).
  if [ -n "$memo_backbone" ] && [ $pl_init != scratch ] && [ "$memo_backbone" != "$(memo_teachers | head -n 1)" ]; then
    init_opt+=(--init-backbone "$memo_backbone")
  fi
  [ $pl_init != scratch ] || init_opt=()
  if [ $supervised = false ]; then
    log "Stage 8: skipped (--supervised false: data/$train_set has no true labels to bound with)"
  elif [ -f $dir/.scored ]; then
    # ... of this classifier config and overrides: of others it stops, naming what differs.
    # shellcheck disable=SC2086  # overrides are K=V words
    python -m pyspk.bin.train --check-only --config $classifier_config ${init_opt[@]+"${init_opt[@]}"} \
      data/$train_set $dir $wav_overrides $classifier_overrides >/dev/null
    log "Stage 8: the supervised upper bound is finished ($dir/.scored); nothing to do"
  else
    log "Stage 8: supervised upper bound (TRUE speaker labels of data/$supervised_set, same budget) -> $dir"
    sup_data=$train_data
    if [ "$supervised_set" != "$train_set" ]; then
      # The labelled subset takes its features and VAD from data/$train_set (same utterances).
      for f in feats.scp vad.scp utt2num_frames; do
        [ ! -f data/$train_set/$f ] ||
          utils/filter_scp.pl data/$supervised_set/utt2spk data/$train_set/$f > data/$supervised_set/$f
      done
      utils/validate_data_dir.sh --no-text data/$supervised_set
      # ... and its augmented copies: the utterances of data/$train_data whose clean utterance
      # (utt2uniq, which utils/combine_data.sh always writes) is in data/$supervised_set.
      sup_data=$supervised_set
      if [ $augment = true ]; then
        sup_data=${supervised_set}_combined
        list=$(mktemp)
        awk 'NR == FNR { keep[$1] = 1; next } ($2 in keep) { print $1 }' \
          data/$supervised_set/utt2spk data/$train_data/utt2uniq > "$list"
        utils/subset_data_dir.sh --utt-list "$list" data/$train_data data/$sup_data
        rm -f "$list"
      fi
    fi
    steps/train.sh --cmd "$gpu_cmd" --nj-gpus $num_gpus --device $device --config $classifier_config \
      --overrides "$wav_overrides $classifier_overrides" ${init_opt[@]+"${init_opt[@]}"} data/$sup_data $dir
    extract $dir "" $embed_sets $supervised_set
    score_cosine $dir supervised_upper_bound
    score_plda $dir supervised_upper_bound $supervised_set
    touch $dir/.scored
  fi
  if [ $supervised = true ] && [ $calibrate = true ]; then
    calibrate $dir supervised_upper_bound $supervised_set cosine plda
  fi
fi

if [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  log "Stage 9: summary"
  cat $results
  for report in $exp/pl_${ssl}${pl_tag:+_$pl_tag}_r*/cluster/cluster_report.txt; do
    [ -f "$report" ] && { echo "== $report"; cat "$report"; }
  done
  if [ -f data/$train_set/utt2session ] || [ -f data/$train_set/utt2phonetype ]; then
    factors=session,phonetype
    [ $supervised = false ] || factors+=,spk
    for dir in $ssl_exp $exp/pl_${ssl}${pl_tag:+_$pl_tag}_r*; do
      [ -f $dir/xvectors_$train_set/xvector.scp ] || continue
      echo "== channel shares of $dir/xvectors_$train_set"
      python -m pyspk.bin.channel_report --factors $factors $dir/xvectors_$train_set data/$train_set
    done
  fi
fi

log "Done (stages $stage..$stop_stage)"
