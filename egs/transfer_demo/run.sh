#!/usr/bin/env bash
# Transfer demo: from a self-supervised speaker model (DINO, trained by the
# top-level ./run.sh) to an utterance-level task on the embedded corpus,
# language family by default (speaker-independent: train and test speakers
# are disjoint). Compares four systems on the same data:
#   frozen SSL embeddings + logistic regression
#   staged fine-tuning (head + embedding layer, then everything at a lower LR)
#   all-at-once fine-tuning (everything from the first step)
#   the same network trained from scratch (random init, all-at-once config)
#
# Needs the top-level run up to stage 4 first:  (cd ../.. && ./run.sh --stop-stage 4)
# Stages (pick with --stage N --stop-stage M):
#   1  data/{train,test}_<task>: copies of the corpus data dirs with utt2label
#   2  frozen SSL embeddings + logistic regression -> exp/linear_probe
#   3  staged fine-tuning                          -> exp/finetune_staged
#   4  all-at-once fine-tuning                     -> exp/finetune_all
#   5  from scratch                                -> exp/finetune_scratch
#   6  table of accuracy and UAR                   -> exp/results.md
set -euo pipefail

# Begin configuration section.
stage=1
stop_stage=100
nj=2
task=family                 # family | lang | gender (local/make_labels.py)
data_root=../../data        # the top-level corpus data dirs (train, test with feats.scp)
ssl_model=../../exp/dino_demo/final.pt
staged_config=conf/finetune_staged.yaml
all_config=conf/finetune_all.yaml
chunk_frames=               # training chunk length (default: the configs' data.crops)
augment=                    # true|false (default: as the configs say)
device=auto
# End configuration section.

help_message="Usage: $0 [options]
  --stage N              first stage ($stage)
  --stop-stage N         last stage ($stop_stage)
  --nj N                 parallel embedding jobs ($nj)
  --task T               family | lang | gender ($task)
  --data-root DIR        corpus data dirs train/ and test/ ($data_root)
  --ssl-model FILE       self-supervised backbone file ($ssl_model)
  --staged-config FILE   staged fine-tuning config ($staged_config)
  --all-config FILE      all-at-once (and from-scratch) config ($all_config)
  --chunk-frames N       training chunk length in frames (default: the configs')
  --augment true|false   augmentation during fine-tuning (default: the configs')
  --device DEV           auto|cpu|cuda[:i] ($device)
e.g.: $0 --task gender --ssl-model ../../exp/dino_demo/final.pt"

cd "$(dirname "$0")"
. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
. steps/libs/common.sh  # log
if [ $# -ne 0 ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi

train=data/train_$task
test=data/test_$task
ft_opts=(--cmd "$cuda_cmd" --device "$device")
[ -n "$chunk_frames" ] && ft_opts+=(--chunk-frames "$chunk_frames")
[ -n "$augment" ] && ft_opts+=(--augment "$augment")

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: $task labels for $data_root/{train,test}"
  for f in $data_root/train/feats.scp $data_root/test/feats.scp $ssl_model; do
    [ -f "$f" ] || { echo "$0: no such file $f; run the top-level ./run.sh --stop-stage 4 first" >&2; exit 1; }
  done
  for part in train test; do
    python local/make_labels.py --label-type $task $data_root/$part data/${part}_$task
  done
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: frozen SSL embeddings + logistic regression"
  for part in train test; do
    steps/extract_embeddings.sh --nj $nj --cmd "$train_cmd" --device $device \
      $ssl_model data/${part}_$task exp/ssl_xvectors_${part}_$task
  done
  python local/linear_probe.py exp/ssl_xvectors_train_$task $train exp/ssl_xvectors_test_$task $test \
    exp/linear_probe_$task
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: staged fine-tuning ($staged_config)"
  steps/finetune.sh "${ft_opts[@]}" --config $staged_config $ssl_model $train $test exp/finetune_staged_$task
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: all-at-once fine-tuning ($all_config)"
  steps/finetune.sh "${ft_opts[@]}" --config $all_config $ssl_model $train $test exp/finetune_all_$task
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: the same network from scratch ($all_config, random init)"
  steps/finetune.sh "${ft_opts[@]}" --random-init true --config $all_config $ssl_model $train $test \
    exp/finetune_scratch_$task
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: results table"
  python local/make_table.py \
    "frozen SSL + logistic regression=exp/linear_probe_$task/results.txt" \
    "staged fine-tuning=exp/finetune_staged_$task/results.txt" \
    "all-at-once fine-tuning=exp/finetune_all_$task/results.txt" \
    "from scratch=exp/finetune_scratch_$task/results.txt" > exp/results_$task.md
  cat exp/results_$task.md
fi

log "Done (stages $stage..$stop_stage)"
