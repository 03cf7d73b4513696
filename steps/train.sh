#!/usr/bin/env bash
# Train a speaker-embedding network with pyspk.bin.train; the method is the
# config's "objective": dino, contrastive, memo (self-supervised, feats.scp
# only), classifier (AAM-softmax on the speakers of <data-dir>/utt2spk: true
# speakers or the cluster ids of pseudo-labels) or finetune (staged, on
# utt2label; steps/finetune.sh also evaluates). Writes <exp-dir>/final.pt for
# steps/extract_embeddings.sh, plus config.yaml, checkpoints/, log/train.log,
# metrics.tsv and loss.png; what run.pl captured of the job is log/launch.log.
#
# --init-model starts the network from a backbone file: the DINO teacher for
# the first round of pseudo-labels, the previous round's final.pt after that.
# Killing the job at any time and re-running the same command resumes from the
# latest checkpoint exactly; once <exp-dir>/.done exists re-running the same
# command does nothing, and re-running it with another config or overrides
# stops, naming what differs (train into a new <exp-dir>, or --retrain true to
# train this one again from scratch). The config is loaded and checked here
# (pyspk.bin.train --check-only) before any job is launched. With --nj-gpus N > 1 the trainer runs as N DDP processes under
# torchrun (per-process batch = data.batch_size); for several machines run the
# same command on each with --num-nodes, --node-rank and --master-addr.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
cmd=run.pl
nj_gpus=1
device=auto
init_model=
init_backbone=
overrides=
num_nodes=1
node_rank=0
master_addr=127.0.0.1
master_port=29500
config=         # the training YAML (parse_options.sh stores a .yaml/.yml --config, never sources it)
retrain=false   # true: discard what <exp-dir> holds of an earlier training (finished or not) and train again
# End configuration section.

. "$(dirname "$0")/libs/train_launch.sh"
help_message="Usage: $0 [options] --config <train.yaml> <data-dir> <exp-dir>
e.g.: $0 --cmd \"\$cuda_cmd\" --nj-gpus 4 --config conf/dino_ecapa.yaml data/voxceleb2_dev exp/dino_ecapa
      $0 --config conf/classifier_demo.yaml --init-model exp/dino_demo/final.pt data/train_pl_r1 exp/pl_dino_r1
Options:
  --config <yaml>               # training config with its objective, required (e.g. conf/dino_demo.yaml)
  --init-model <file>           # backbone file to start from, e.g. exp/dino/final.pt (default: the config's)
  --init-backbone <name>        # backbone of --init-model (default: the file's default backbone)
  --overrides \"<a.b=v c=w>\"     # space-separated config overrides (default: none)
  --retrain <true|false>        # train <exp-dir> again from scratch, even when finished (default: $retrain)
$(launch_options_help)"

. "$(dirname "$0")/../path.sh"
. parse_options.sh

if [ $# -ne 2 ] || [ -z "$config" ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
data=$1
dir=$2

require_files "$config" "$data/feats.scp" ${init_model:+"$init_model"}
if [ -n "$init_backbone" ] && [ -z "$init_model" ]; then
  echo "$0: --init-backbone needs --init-model" >&2
  exit 1
fi
check_positive_ints nj_gpus num_nodes
case $retrain in true|false) ;; *) echo "$0: --retrain must be true or false, got '$retrain'" >&2; exit 1 ;; esac

init_args=()
[ -n "$init_model" ] && init_args+=(--init-model "$init_model")
[ -n "$init_backbone" ] && init_args+=(--init-backbone "$init_backbone")
read -r -a override_args <<< "$overrides"
# The config as it will train, checked here before any job: a finished <exp-dir> of the same config
# is a no-op, of another config an error naming what differs.
if [ "$retrain" = true ]; then
  [ "$num_nodes" -eq 1 ] || { echo "$0: --retrain true takes one node (remove $dir before a multi-node run)" >&2; exit 1; }
  python -m pyspk.bin.train --check-only --config "$config" ${init_args[@]+"${init_args[@]}"} \
    ${override_args[@]+"${override_args[@]}"}
  echo "$0: --retrain true: discarding any earlier training in $dir"
  rm -rf "$dir/checkpoints" "$dir/final.pt" "$dir/.done" "$dir/config.yaml" "$dir/metrics.tsv" "$dir/loss.png"
else
  python -m pyspk.bin.train --check-only --config "$config" ${init_args[@]+"${init_args[@]}"} \
    "$data" "$dir" ${override_args[@]+"${override_args[@]}"}
  [ ! -f "$dir/.done" ] || exit 0  # finished with this very config (said above)
fi
mkdir -p "$dir/log"
set_launcher "$nj_gpus" "$num_nodes" "$node_rank" "$master_addr" "$master_port"
log=$dir/log/launch.log
run_or_die "$cmd" "$log" training "${launcher[@]}" -m pyspk.bin.train --config "$config" \
  --device "$device" ${init_args[@]+"${init_args[@]}"} "$data" "$dir" ${override_args[@]+"${override_args[@]}"}
check_trained_model "$dir" "$log"
echo "$0: trained $dir/final.pt (losses in $dir/metrics.tsv, $dir/loss.png)"
