#!/usr/bin/env bash
# Real-speech recipe: self-supervised speaker verification on the Arabic
# Speech Commands corpus (20 speakers reading 40 keywords in 10 sessions,
# 16 kHz FLAC, CC BY 4.0), as shipped in ../shared/data. An utterance joins 4
# keywords of one speaker and session (about 4 s); 12 speakers train without
# labels, the other 8 are held out with cross-session target trials.
#
# Stages (plain ./run.sh runs them all; pick with --stage N --stop-stage M):
#   0  install what is missing (tools/install.sh; idempotent)
#   1  data dirs data/{train,test} and data/test/trials (local/data.sh)
#   2-9 the generic pipeline, steps/sv_pipeline.sh (see its header): fbank
#      and VAD, augmented copies, fbank baseline, SSL training, embeddings,
#      cosine scoring, pseudo-label rounds, supervised upper bound, summary
# Results: exp/results.txt; the table in RESULTS.md came from plain ./run.sh
# and ./run.sh --stage 4 --stop-stage 6 --ssl contrastive|memo.
set -euo pipefail

# Begin configuration section.
stage=0
stop_stage=100
nj=2
corpus=../../../../shared/data/arabic_speech_commands   # relative to the directory ./run.sh is called from
test_speakers=8
keywords_per_utt=4
ssl=dino                  # dino|contrastive|memo
ssl_overrides=            # e.g. "optim.lr.base=0.05 train.epochs=20"
rounds=2
num_clusters=24           # k-means k: twice the 12 training speakers (splitting a speaker hurts less than merging two)
keep_fraction=0.7
device=auto
# End configuration section.

help_message="Usage: $0 [options]
  --stage N                first stage to run ($stage)
  --stop-stage N           last stage to run ($stop_stage)
  --nj N                   parallel jobs ($nj)
  --corpus DIR             Arabic Speech Commands root, with dataset/ ($corpus)
  --test-speakers N        held-out speakers ($test_speakers)
  --keywords-per-utt N     keywords joined per utterance ($keywords_per_utt)
  --ssl NAME               dino|contrastive|memo ($ssl)
  --ssl-overrides 'K=V ..' overrides of conf/<ssl>.yaml
  --rounds N               pseudo-labelling rounds ($rounds)
  --num-clusters K         k-means clusters ($num_clusters)
  --keep-fraction F        confident share kept per cluster ($keep_fraction)
  --device DEV             auto|cpu|cuda[:i] ($device)
e.g.: $0 --stage 4 --stop-stage 6 --ssl contrastive"

caller_dir=$PWD
cd "$(dirname "$0")"
. utils/parse_options.sh
# The corpus root is resolved against the directory the caller was in.
case $corpus in /*) ;; *) corpus=$caller_dir/$corpus ;; esac

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') ($fname:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: install what is missing"
  ../../../tools/install.sh
fi

. ./path.sh

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: data dirs from $corpus"
  local/data.sh --test-speakers $test_speakers --keywords-per-utt $keywords_per_utt "$corpus" data
fi

steps/sv_pipeline.sh --stage $((stage > 2 ? stage : 2)) --stop-stage $stop_stage --nj $nj --device $device \
  --train-set train --test-sets test \
  --ssl $ssl --ssl-config conf/$ssl.yaml --ssl-overrides "$ssl_overrides" \
  --classifier-config conf/classifier.yaml \
  --rounds $rounds --num-clusters $num_clusters --keep-fraction $keep_fraction
