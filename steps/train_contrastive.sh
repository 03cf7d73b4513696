#!/usr/bin/env bash
# Train a speaker-embedding backbone with contrastive SSL (NT-Xent: crops of one
# utterance are positives, crops of other utterances negatives; optional
# channel-invariant term) on <data-dir>/feats.scp; writes <exp-dir>/final.pt
# (backbone "encoder") for steps/extract_embeddings.sh, plus
# config.yaml, checkpoints/, log/train.log, metrics.tsv and loss.png.
#
# Killing the job at any time and re-running the same command resumes from the
# latest checkpoint exactly; once <exp-dir>/.done exists re-running does
# nothing. With --nj-gpus N > 1 the trainer runs as N DDP processes under
# torchrun (per-process batch = data.batch_size); for several machines run the
# same command on each with --num-nodes, --node-rank and --master-addr.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
cmd=run.pl
nj_gpus=1
device=auto
overrides=
num_nodes=1
node_rank=0
master_addr=127.0.0.1
master_port=29500
# End configuration section.
train_config=   # --config; taken out before parse_options.sh, which would source it as shell

help_message="Usage: $0 [options] --config <train.yaml> <data-dir> <exp-dir>
e.g.: $0 --cmd \"\$cuda_cmd\" --nj-gpus 4 --config conf/contrastive_ecapa.yaml --overrides \"optim.lr.base=0.1\" data/voxceleb2_dev exp/contrastive_ecapa
Options:
  --config <yaml>               # training config, required (e.g. conf/contrastive_demo.yaml)
  --overrides \"<a.b=v c=w>\"     # space-separated config overrides (default: none)
  --cmd <run.pl|queue.pl ...>   # how to run the job; use \"\$cuda_cmd\" for GPUs (default: $cmd)
  --nj-gpus <n>                 # DDP processes on this machine, one per GPU (default: $nj_gpus)
  --device <auto|cpu|cuda>      # auto: cuda if available (default: $device)
  --num-nodes <n>               # machines taking part (default: $num_nodes)
  --node-rank <i>               # this machine's index, 0..num-nodes-1 (default: $node_rank)
  --master-addr <host>          # address of node 0 (default: $master_addr)
  --master-port <port>          # port on node 0 (default: $master_port)"

args=()
while [ $# -gt 0 ]; do
  if [ "$1" == "--config" ]; then
    [ $# -ge 2 ] || { echo "$0: option --config needs a value" >&2; exit 1; }
    train_config=$2
    shift 2
  else
    args+=("$1")
    shift
  fi
done
set -- ${args[@]+"${args[@]}"}

. "$(dirname "$0")/../path.sh"
. parse_options.sh

if [ $# -ne 2 ] || [ -z "$train_config" ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
data=$1
dir=$2

for f in "$train_config" "$data/feats.scp"; do
  [ -f "$f" ] || { echo "$0: no such file $f" >&2; exit 1; }
done
for opt in nj_gpus num_nodes; do
  [[ "${!opt}" =~ ^[1-9][0-9]*$ ]] || { echo "$0: --${opt//_/-} must be a positive integer, got '${!opt}'" >&2; exit 1; }
done

if [ -f "$dir/.done" ]; then
  echo "$0: $dir/.done exists: training already finished (remove it to train again)"
  exit 0
fi
mkdir -p "$dir/log"

read -r -a override_args <<< "$overrides"
if [ "$nj_gpus" -gt 1 ] || [ "$num_nodes" -gt 1 ]; then
  launcher=(python -m torch.distributed.run --nnodes "$num_nodes" --node-rank "$node_rank"
            --nproc-per-node "$nj_gpus" --master-addr "$master_addr" --master-port "$master_port")
else
  launcher=(python)
fi

if ! $cmd "$dir/log/train_contrastive.log" \
    "${launcher[@]}" -m pyspk.bin.train_contrastive --config "$train_config" --device "$device" \
    "$data" "$dir" ${override_args[@]+"${override_args[@]}"}; then
  echo "$0: training failed; the end of $dir/log/train_contrastive.log:" >&2
  tail -n 20 "$dir/log/train_contrastive.log" >&2
  exit 1
fi
[ -f "$dir/final.pt" ] || { echo "$0: training ended without $dir/final.pt; see $dir/log/train_contrastive.log" >&2; exit 1; }
echo "$0: trained $dir/final.pt (backbone \"encoder\"; losses in $dir/metrics.tsv, $dir/loss.png)"
