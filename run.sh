#!/usr/bin/env bash
# pyspk default recipe: self-supervised speaker verification on the embedded
# offline corpus (espeak-ng pseudo-speakers, each utterance through its own
# random channel). No speaker label is used for training, except by the
# explicitly named "supervised upper bound" (stage 9).
#
# Stages (plain ./run.sh runs them all; pick with --stage N --stop-stage M):
#   0  install what is missing (tools/install.sh; idempotent)
#   1  synthesise the corpus: data/{train,test}, data/test/trials
#   2  fbank features and energy VAD for data/train and data/test
#   3  no-training baseline: cosine on per-utterance fbank mean+std
#   4  self-supervised training on data/train (--ssl dino|contrastive|memo)
#   5  embeddings of the untrained network and of the SSL model (train, test)
#   6  cosine scoring of both, EER/minDCF, DET plots -> exp/results.txt
#   7  pseudo-labelling rounds 1..R: cluster the previous round's train
#      embeddings (k-means), keep confident members, train an AAM-softmax
#      classifier from the previous model, re-extract, score cosine and PLDA
#      (PLDA trained on the round's pseudo-labels); NMI in cluster_report.txt
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
# MeMo exports one teacher per architecture; embeddings come from the first
# (the default backbone); steps/extract_embeddings.sh --backbone picks another.

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

# score_cosine <model-dir> <system-name>
score_cosine() {
  steps/score_cosine.sh --mean-dir $1/xvectors_train data/test/trials \
    $1/xvectors_test $1/xvectors_test $1/scores/cosine_test
  steps/compute_metrics.sh --name "$2" --results exp/results.txt \
    --det-plot $1/scores/cosine_test_det.png data/test/trials $1/scores/cosine_test
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
  steps/train_$ssl.sh --cmd "$cuda_cmd" --device $device --config $ssl_config data/train $ssl_exp
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: embeddings of the untrained network and of the $ssl model"
  [ -f exp/untrained/final.pt ] || \
    python -m pyspk.bin.init_model --config $ssl_config --seed 0 exp/untrained/final.pt
  extract exp/untrained train test
  extract $ssl_exp train test
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: cosine scoring and metrics"
  score_cosine exp/untrained untrained_cosine
  score_cosine $ssl_exp ${ssl}_cosine
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  prev=$ssl_exp
  for r in $(seq 1 $rounds); do
    dir=exp/pl_${ssl}_r$r
    log "Stage 7: pseudo-labelling round $r/$rounds (from $prev) -> $dir"
    steps/cluster_embeddings.sh --num-clusters $num_clusters --keep-fraction $keep_fraction \
      --device $device --ref-utt2spk data/train/utt2spk \
      $prev/xvectors_train data/train data/train_pl_${ssl}_r$r $dir/cluster
    steps/train_classifier.sh --cmd "$cuda_cmd" --device $device --config $classifier_config \
      --init-model $prev/final.pt data/train_pl_${ssl}_r$r $dir
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
    --init-model $ssl_exp/final.pt data/train $dir
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
