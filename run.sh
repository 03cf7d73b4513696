#!/usr/bin/env bash
# pyspk default recipe: self-supervised speaker verification on the embedded
# offline corpus (espeak-ng pseudo-speakers, each utterance through its own
# random channel). No speaker label is used for training, except by the
# explicitly named "supervised upper bound" (stage 8).
#
# Stages (plain ./run.sh runs them all; pick with --stage N --stop-stage M):
#   0  install what is missing (tools/install.sh; idempotent)
#   1  synthesise the corpus: data/{train,test}, data/test/trials
#   2  fbank features and energy VAD for data/train and data/test; with
#      --augment true, augmented copies of data/train (reverb, noise, music,
#      babble; simulated rooms and generated sources without --rir-dir /
#      --musan-dir) and their fbank in data/train_combined, from which the
#      trainers draw a copy per crop
#   3  no-training baseline: cosine on per-utterance fbank mean+std
#   4  self-supervised training on data/train_combined (--ssl dino|contrastive|memo)
#   5  embeddings of the untrained network and of the SSL model (train, test);
#      MeMo: of each architecture's teacher
#   6  cosine scoring of both, EER/minDCF, DET plots -> exp/results.txt;
#      MeMo: each teacher and their fused (mean) score
#   7  pseudo-labelling rounds 1..R: cluster the previous round's train
#      embeddings (k-means), keep confident members, train an AAM-softmax
#      classifier on them (and their augmented copies), re-extract, score
#      cosine and PLDA (PLDA trained on the round's pseudo-labels); NMI in
#      cluster_report.txt
#   8  supervised upper bound: the same classifier budget on the true labels
#   9  summary of exp/results.txt and the clustering reports
#
# Outputs: data/ (Kaldi data dirs), fbank/ (ark/scp), exp/ (models, logs,
# embeddings, scores); one line per system in exp/results.txt.
set -euo pipefail

# Begin configuration section.
stage=0
stop_stage=100
nj=2                      # parallel jobs for features and embeddings
num_speakers=200          # corpus size: speakers in all (train + test)
test_speakers=40          # of which held out for the test set
utts_per_speaker=20
seed=777
ssl=dino                  # dino|contrastive|memo
ssl_config=               # default: conf/${ssl}_demo.yaml
classifier_config=conf/classifier_demo.yaml
rounds=2                  # pseudo-labelling rounds
num_clusters=200          # k for k-means (the true number is not assumed known)
keep_fraction=0.7         # share of each cluster kept, nearest to its centroid first
pl_init=ssl               # each round's classifier starts from: ssl (the SSL model) | previous (the last round's)
augment=true              # augmented copies of data/train for training
rir_dir=                  # RIRS_NOISES; empty: simulated rooms
musan_dir=                # MUSAN; empty: generated noise, music and babble
device=auto               # auto (cuda if available), cpu, cuda, cuda:1 ...
# End configuration section.

help_message="Usage: $0 [options]
  --stage N             first stage to run ($stage)
  --stop-stage N        last stage to run ($stop_stage)
  --nj N                parallel jobs ($nj)
  --num-speakers N      speakers in the synthetic corpus ($num_speakers)
  --test-speakers N     held-out test speakers ($test_speakers)
  --utts-per-speaker N  ($utts_per_speaker)
  --seed N              corpus seed ($seed)
  --ssl NAME            dino|contrastive|memo ($ssl)
  --ssl-config FILE     SSL training config (conf/<ssl>_demo.yaml)
  --classifier-config F pseudo-label classifier config ($classifier_config)
  --rounds N            pseudo-labelling rounds ($rounds)
  --num-clusters K      k-means clusters ($num_clusters)
  --keep-fraction F     confident share kept per cluster ($keep_fraction)
  --pl-init ssl|previous  each round's classifier init ($pl_init)
  --augment true|false  augmented copies for training ($augment)
  --rir-dir DIR         RIRS_NOISES directory (default: simulated rooms)
  --musan-dir DIR       MUSAN directory (default: generated sources)
  --device DEV          auto|cpu|cuda[:i] ($device)
e.g.: $0 --stage 4 --stop-stage 6 --ssl memo"

cd "$(dirname "$0")"
. utils/parse_options.sh

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') ($fname:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

case $ssl in
  dino|contrastive|memo) ;;
  *) echo "$0: --ssl must be dino, contrastive or memo, got '$ssl'" >&2; exit 1 ;;
esac
[ -n "$ssl_config" ] || ssl_config=conf/${ssl}_demo.yaml
ssl_exp=exp/${ssl}_$(basename "$ssl_config" .yaml)
case $pl_init in
  ssl|previous) ;;
  *) echo "$0: --pl-init must be ssl or previous, got '$pl_init'" >&2; exit 1 ;;
esac
case $augment in
  true) train_set=train_combined ;;
  false) train_set=train ;;
  *) echo "$0: --augment must be true or false, got '$augment'" >&2; exit 1 ;;
esac

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: install what is missing"
  tools/install.sh
fi

. ./path.sh
. ./cmd.sh

# extract <model-dir> <part>...: embeddings of <model-dir>/final.pt for data/<part>
extract() {
  local model=$1; shift
  for part in "$@"; do
    steps/extract_embeddings.sh --nj $nj --cmd "$train_cmd" --device $device \
      $model/final.pt data/$part $model/xvectors_$part
  done
}

# extract_backbone <model-dir> <backbone> <part>...: the same with a named
# backbone of the file, into <model-dir>/xvectors_<backbone>_<part>
extract_backbone() {
  local model=$1 backbone=$2; shift 2
  for part in "$@"; do
    steps/extract_embeddings.sh --nj $nj --cmd "$train_cmd" --device $device --backbone $backbone \
      $model/final.pt data/$part $model/xvectors_${backbone}_$part
  done
}

# MeMo keeps one teacher per architecture; the file's default one comes first
memo_teachers() {
  python -m pyspk.bin.extract_embeddings list $ssl_exp/final.pt | grep '^teacher_'
}

# score_cosine <model-dir> <system-name> [<tag>]: cosine scoring of
# <model-dir>/xvectors_<tag>test, mean from xvectors_<tag>train
score_cosine() {
  local dir=$1 name=$2 tag=${3:-}
  steps/score_cosine.sh --mean-dir $dir/xvectors_${tag}train data/test/trials \
    $dir/xvectors_${tag}test $dir/xvectors_${tag}test $dir/scores/cosine_${tag}test
  steps/compute_metrics.sh --name "$name" --results exp/results.txt \
    --det-plot $dir/scores/cosine_${tag}test_det.png data/test/trials $dir/scores/cosine_${tag}test
}

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: synthesise the corpus ($num_speakers speakers, $test_speakers for test)"
  local/make_corpus.sh --nj $nj --num-speakers $num_speakers --test-speakers $test_speakers \
    --utts-per-speaker $utts_per_speaker --seed $seed corpus data
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: fbank features and energy VAD"
  for part in train test; do
    steps/make_fbank.sh --nj $nj --cmd "$train_cmd" data/$part exp/make_fbank/$part fbank
    steps/compute_vad_decision.sh --nj $nj --cmd "$train_cmd" data/$part exp/make_vad/$part fbank
  done
  if [ $augment = true ]; then
    log "Stage 2: augmented copies of data/train -> data/train_combined, and their fbank"
    aug_opts=()
    [ -z "$rir_dir" ] || aug_opts+=(--rir-dir "$rir_dir")
    [ -z "$musan_dir" ] || aug_opts+=(--musan-dir "$musan_dir")
    steps/augment_data_dir.sh --nj $nj --cmd "$train_cmd" "${aug_opts[@]}" data/train exp/augment/train
    steps/make_fbank.sh --nj $nj --cmd "$train_cmd" data/train_combined exp/make_fbank/train_combined fbank
  fi
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: no-training baseline (cosine on fbank mean+std)"
  mkdir -p exp/baseline
  python local/baseline_eer.py --scores exp/baseline/scores_test data/test data/test/trials
  steps/compute_metrics.sh --name fbank_mean_std_cosine --results exp/results.txt \
    data/test/trials exp/baseline/scores_test
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: $ssl training ($ssl_config) -> $ssl_exp"
  steps/train_$ssl.sh --cmd "$cuda_cmd" --device $device --config $ssl_config data/$train_set $ssl_exp
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: embeddings of the untrained network and of the $ssl model"
  [ -f exp/untrained/final.pt ] || \
    python -m pyspk.bin.init_model --config $ssl_config --seed 0 exp/untrained/final.pt
  extract exp/untrained train test
  extract $ssl_exp train test
  if [ $ssl = memo ]; then
    for teacher in $(memo_teachers | tail -n +2); do
      extract_backbone $ssl_exp $teacher train test
    done
  fi
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: cosine scoring and metrics"
  score_cosine exp/untrained untrained_cosine
  if [ $ssl = memo ]; then
    teachers=($(memo_teachers))
    score_cosine $ssl_exp ${ssl}_${teachers[0]}_cosine
    fused=($ssl_exp/scores/cosine_test)
    for teacher in "${teachers[@]:1}"; do
      score_cosine $ssl_exp ${ssl}_${teacher}_cosine ${teacher}_
      fused+=($ssl_exp/scores/cosine_${teacher}_test)
    done
    steps/fuse_scores.sh data/test/trials "${fused[@]}" $ssl_exp/scores/cosine_fused_test
    steps/compute_metrics.sh --name ${ssl}_fused_cosine --results exp/results.txt \
      --det-plot $ssl_exp/scores/cosine_fused_test_det.png data/test/trials $ssl_exp/scores/cosine_fused_test
  else
    score_cosine $ssl_exp ${ssl}_cosine
  fi
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  prev=$ssl_exp
  for r in $(seq 1 $rounds); do
    dir=exp/pl_${ssl}_r$r
    pl_data=data/train_pl_${ssl}_r$r
    init=$ssl_exp
    [ $pl_init = ssl ] || init=$prev
    log "Stage 7: pseudo-labelling round $r/$rounds (labels from $prev, init from $init) -> $dir"
    copies_opt=()
    pl_train=$pl_data
    if [ $augment = true ]; then
      copies_opt=(--copies-from data/train_combined)
      pl_train=${pl_data}_combined
    fi
    steps/cluster_embeddings.sh --num-clusters $num_clusters --keep-fraction $keep_fraction \
      --device $device --ref-utt2spk data/train/utt2spk "${copies_opt[@]}" \
      $prev/xvectors_train data/train $pl_data $dir/cluster
    steps/train_classifier.sh --cmd "$cuda_cmd" --device $device --config $classifier_config \
      --init-model $init/final.pt $pl_train $dir
    extract $dir train test train_pl_${ssl}_r$r
    score_cosine $dir ${ssl}_pl_r${r}_cosine
    steps/train_plda.sh --lda-dim 0 $dir/xvectors_train_pl_${ssl}_r$r data/train_pl_${ssl}_r$r $dir/plda
    steps/score_plda.sh $dir/plda data/test/trials $dir/xvectors_test $dir/xvectors_test $dir/scores/plda_test
    steps/compute_metrics.sh --name ${ssl}_pl_r${r}_plda --results exp/results.txt \
      data/test/trials $dir/scores/plda_test
    prev=$dir
  done
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  dir=exp/supervised_upper_bound
  log "Stage 8: supervised upper bound (TRUE speaker labels, same budget) -> $dir"
  steps/train_classifier.sh --cmd "$cuda_cmd" --device $device --config $classifier_config \
    --init-model $ssl_exp/final.pt data/$train_set $dir
  extract $dir train test
  score_cosine $dir supervised_upper_bound_cosine
  steps/train_plda.sh --lda-dim 0 $dir/xvectors_train data/train $dir/plda
  steps/score_plda.sh $dir/plda data/test/trials $dir/xvectors_test $dir/xvectors_test $dir/scores/plda_test
  steps/compute_metrics.sh --name supervised_upper_bound_plda --results exp/results.txt \
    data/test/trials $dir/scores/plda_test
fi

if [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  log "Stage 9: summary"
  cat exp/results.txt
  for report in exp/pl_${ssl}_r*/cluster/cluster_report.txt; do
    [ -f "$report" ] && { echo "== $report"; cat "$report"; }
  done
fi

log "Done (stages $stage..$stop_stage)"
