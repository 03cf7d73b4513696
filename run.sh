#!/usr/bin/env bash
# pyspk default recipe: self-supervised speaker verification on the embedded
# offline corpus (espeak-ng pseudo-speakers with random channels).
#
# Stages (run all with ./run.sh; pick with --stage N --stop-stage M):
#   0  install what is missing (tools/install.sh; idempotent)
#   1  synthesise the corpus: data/{train,test}, data/test/trials
#   2  fbank features (+ energy VAD) for data/train and data/test
#   3  no-training baseline: cosine on per-utterance fbank mean+std
#   4  DINO self-supervised training on data/train (no labels)
#   5  embeddings: untrained network and DINO teacher, for train and test
#   6  cosine scoring, EER/minDCF, DET plots -> exp/results.txt
#
# Outputs: data/ (Kaldi data dirs), fbank/ (ark/scp), exp/ (models, logs,
# embeddings, scores); one line per system in exp/results.txt.
set -euo pipefail

# Begin configuration section.
stage=0
stop_stage=100
nj=2                      # parallel jobs for feature extraction / embedding
num_speakers=200          # corpus size: speakers in all (train + test)
test_speakers=40          # of which held out for the test set
utts_per_speaker=20
seed=777
dino_config=conf/dino_demo.yaml
device=auto               # auto (cuda if available), cpu, cuda, cuda:1 ...
# End configuration section.

help_message="Usage: $0 [options]
  --stage N            first stage to run ($stage)
  --stop-stage N       last stage to run ($stop_stage)
  --nj N               parallel jobs ($nj)
  --num-speakers N     speakers in the synthetic corpus ($num_speakers)
  --test-speakers N    held-out test speakers ($test_speakers)
  --utts-per-speaker N ($utts_per_speaker)
  --seed N             corpus seed ($seed)
  --dino-config FILE   DINO training config ($dino_config)
  --device DEV         auto|cpu|cuda[:i] ($device)
e.g.: $0 --stage 4 --stop-stage 6"

cd "$(dirname "$0")"
. utils/parse_options.sh

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') ($fname:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: install what is missing"
  tools/install.sh
fi

. ./path.sh
. ./cmd.sh

dino_exp=exp/dino_$(basename "$dino_config" .yaml)

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
  python local/baseline_eer.py data/test data/test/trials > exp/baseline/eer.txt
  cat exp/baseline/eer.txt
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: DINO training ($dino_config) -> $dino_exp"
  steps/train_dino.sh --cmd "$cuda_cmd" --device $device --config $dino_config data/train $dino_exp
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: embeddings of the untrained network and of the DINO teacher"
  python -m pyspk.bin.init_model --config $dino_config --seed 0 exp/untrained/final.pt
  for model in exp/untrained $dino_exp; do
    for part in train test; do
      steps/extract_embeddings.sh --nj $nj --cmd "$train_cmd" --device $device \
        $model/final.pt data/$part $model/xvectors_$part
    done
  done
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: cosine scoring and metrics"
  for model in exp/untrained $dino_exp; do
    name=$(basename $model)
    steps/score_cosine.sh --mean-dir $model/xvectors_train data/test/trials \
      $model/xvectors_test $model/xvectors_test $model/scores/cosine_test
    steps/compute_metrics.sh --name "${name}_cosine" --results exp/results.txt \
      --det-plot $model/scores/cosine_test_det.png data/test/trials $model/scores/cosine_test
  done
  cat exp/results.txt
fi

log "Done (stages $stage..$stop_stage)"
