# shellcheck shell=bash
# Shared launching logic of the training steps (steps/train.sh,
# steps/finetune.sh), on top of steps/libs/common.sh. Source it, don't run it:
#   . "$(dirname "$0")/libs/train_launch.sh"
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# The functions print messages prefixed with the calling step's $0 and exit
# the step on errors, as the steps themselves would.

# launch_options_help
# The usage lines of the options every trainer step declares with the same
# names: cmd nj_gpus device num_nodes node_rank master_addr master_port
# (showing their current values as defaults).
launch_options_help() {
  # shellcheck disable=SC2154  # the calling step's options, declared in its configuration section
  cat <<HELP
  --cmd <run.pl|queue.pl ...>   # how to run the job; use "\$cuda_cmd" for GPUs (default: $cmd)
  --nj-gpus <n>                 # DDP processes on this machine, one per GPU (default: $nj_gpus)
  --device <auto|cpu|cuda>      # auto: cuda if available (default: $device)
  --num-nodes <n>               # machines taking part (default: $num_nodes)
  --node-rank <i|slurm>         # this machine's index, 0..num-nodes-1; slurm: \$SLURM_NODEID (default: $node_rank)
  --master-addr <host|slurm>    # address of node 0; slurm: the Slurm job's first node (default: $master_addr)
  --master-port <port>          # port on node 0 (default: $master_port)
HELP
}

# set_launcher <nj-gpus> <num-nodes> <node-rank> <master-addr> <master-port>
# Sets the array launcher to the Python launcher of a trainer: torchrun with
# <nj-gpus> processes per node when more than one process takes part, plain
# python otherwise. Under srun (one task per node), <node-rank> "slurm" is the
# node's $SLURM_NODEID and <master-addr> "slurm" the job's first node. Sets
# launch_node_rank, which gives the logs of nodes other than 0 their own names.
set_launcher() {
  local node_rank=$3 master_addr=$4
  if [ "$node_rank" == slurm ]; then
    [ -n "${SLURM_NODEID:-}" ] || { echo "$0: --node-rank slurm needs to run under srun (no \$SLURM_NODEID)" >&2; exit 1; }
    node_rank=$SLURM_NODEID
  fi
  if [ "$master_addr" == slurm ]; then
    [ -n "${SLURM_JOB_NODELIST:-}" ] || { echo "$0: --master-addr slurm needs a Slurm job (no \$SLURM_JOB_NODELIST)" >&2; exit 1; }
    master_addr=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
  fi
  [[ "$node_rank" =~ ^[0-9]+$ ]] && [ "$node_rank" -lt "$2" ] || \
    { echo "$0: --node-rank must be in 0..$(( $2 - 1 )) or slurm, got '$node_rank'" >&2; exit 1; }
  # shellcheck disable=SC2034  # read by run_or_die (steps/libs/common.sh) for the node's log name
  launch_node_rank=$node_rank
  if [ "$1" -gt 1 ] || [ "$2" -gt 1 ]; then
    # shellcheck disable=SC2034  # the caller's output: the launcher command
    launcher=(python -m torch.distributed.run --nnodes "$2" --node-rank "$node_rank"
              --nproc-per-node "$1" --master-addr "$master_addr" --master-port "$5")
  else
    # shellcheck disable=SC2034  # the caller's output: the launcher command
    launcher=(python)
  fi
}

# check_trained_model <exp-dir> <log>
# Exits 1 unless the trainer wrote <exp-dir>/final.pt.
# Node 0 writes the model: other nodes of a multi-node training do not check.
check_trained_model() {
  [ "${launch_node_rank:-0}" == 0 ] || return 0
  [ -f "$1/final.pt" ] || { echo "$0: training ended without $1/final.pt; see $2" >&2; exit 1; }
}
