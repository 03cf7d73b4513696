#!/usr/bin/env bash
# Fine-tune a self-supervised backbone into an utterance-level classifier on
# <train-dir>/utt2label (emotion, language, age group ...) and evaluate it on
# <test-dir>: staged training as the config's finetune.stages say (e.g. new
# head + last affine layers first, then the whole network at a lower LR),
# each stage in <exp-dir>/stage<i>_<name>/ (checkpoints, log/train.log,
# metrics.tsv, loss.png); the classifier in <exp-dir>/final.pt (a backbone
# file: steps/extract_embeddings.sh reads the fine-tuned backbone); accuracy,
# unweighted average recall and per-class recall in <exp-dir>/results.txt,
# predictions in <exp-dir>/utt2pred.
#
# Killing the job and re-running the same command resumes from the latest
# checkpoint; once <exp-dir>/.done exists only the evaluation runs again (a
# changed config or overrides stop instead, naming what differs).
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
cmd=run.pl
nj_gpus=1
device=auto
overrides=
backbone=
label_file=utt2label
random_init=
chunk_frames=
augment=
eval_chunk_size=
master_port=29500
config=         # the fine-tuning YAML (parse_options.sh stores a .yaml/.yml --config, never sources it)
# End configuration section.

. "$(dirname "$0")/libs/train_launch.sh"
help_message="Usage: $0 [options] --config <finetune.yaml> <init-model> <train-dir> <test-dir> <exp-dir>
e.g.: $0 --cmd \"\$cuda_cmd\" --config conf/finetune_staged.yaml exp/dino/final.pt data/train_family data/test_family exp/finetune_staged
Options:
  --config <yaml>               # fine-tuning config with finetune.stages, required
  --overrides \"<a.b=v c=w>\"     # space-separated config overrides (default: none)
  --cmd <run.pl|queue.pl ...>   # how to run the job; use \"\$cuda_cmd\" for GPUs (default: $cmd)
  --nj-gpus <n>                 # DDP processes on this machine, one per GPU (default: $nj_gpus)
  --device <auto|cpu|cuda>      # auto: cuda if available (default: $device)
  --backbone <name>             # backbone in <init-model> (default: the file's default)
  --label-file <name>           # label file in <train-dir> and <test-dir> (default: $label_file)
  --random-init <true|false>    # train the same architecture from random weights (default: the config's)
  --chunk-frames <n>            # training crop length in frames (default: the config's data.crops)
  --augment <true|false>        # false: no augmented copies, SpecAugment or channel augmentation
                                # (default: as the config says)
  --eval-chunk-size <n>         # test chunk length in frames (default: the config's finetune.eval)
  --master-port <port>          # torchrun port with --nj-gpus > 1 (default: $master_port)"

. "$(dirname "$0")/../path.sh"
. parse_options.sh

if [ $# -ne 4 ] || [ -z "$config" ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
init=$1
train=$2
test=$3
dir=$4

require_files "$config" "$init" "$train/feats.scp" "$train/$label_file" "$test/feats.scp" "$test/$label_file"
check_positive_ints nj_gpus
for opt in chunk_frames eval_chunk_size; do
  [ -z "${!opt}" ] || [[ "${!opt}" =~ ^[1-9][0-9]*$ ]] || \
    { echo "$0: --${opt//_/-} must be a positive integer, got '${!opt}'" >&2; exit 1; }
done
for opt in random_init augment; do
  [ -z "${!opt}" ] || [[ "${!opt}" =~ ^(true|false)$ ]] || \
    { echo "$0: --${opt//_/-} must be true or false, got '${!opt}'" >&2; exit 1; }
done
mkdir -p "$dir/log"

# The step's options are config settings of the finetune section (pyspk.transfer.stages).
settings=(finetune.label_file="$label_file")
[ -n "$random_init" ] && settings+=(finetune.random_init="$random_init")
[ -n "$chunk_frames" ] && settings+=(finetune.chunk_frames="$chunk_frames")
[ -n "$augment" ] && settings+=(finetune.augment="$augment")
init_args=(--init-model "$init")
[ -n "$backbone" ] && init_args+=(--init-backbone "$backbone")
read -r -a override_args <<< "$overrides"
# one node: torchrun's defaults for the node options
set_launcher "$nj_gpus" 1 0 127.0.0.1 "$master_port"

if [ -f "$dir/.done" ]; then
  # ... with this config: with another config or other overrides it stops here, naming what differs.
  python -m pyspk.bin.train --check-only --config "$config" "${init_args[@]}" "$train" "$dir" \
    "${settings[@]}" ${override_args[@]+"${override_args[@]}"} >/dev/null
  echo "$0: $dir/.done exists: training already finished (remove it to train again); evaluating"
else
  run_or_die "$cmd" "$dir/log/train.log" fine-tuning "${launcher[@]}" -m pyspk.bin.train \
    --config "$config" --device "$device" "${init_args[@]}" "$train" "$dir" \
    "${settings[@]}" ${override_args[@]+"${override_args[@]}"}
fi
check_trained_model "$dir" "$dir/log/train.log"

eval_opts=(--label-file "$label_file" --device "$device")
[ -n "$eval_chunk_size" ] && eval_opts+=(--chunk-size "$eval_chunk_size")
run_or_die "$cmd" "$dir/log/evaluate.log" evaluation \
  python -m pyspk.bin.evaluate_classifier "${eval_opts[@]}" "$dir/final.pt" "$test" "$dir"
summary=$(grep -o "^Done .*" "$dir/log/evaluate.log" | tail -n 1)
echo "$0: fine-tuned $dir/final.pt; on $test: $summary (details in $dir/results.txt)"
