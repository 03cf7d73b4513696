# Shared body of steps/train_{dino,contrastive,memo}.sh; sourced (so $0 and
# the echoed command line stay the caller's) after the caller sets:
#   ssl_method     dino|contrastive|memo (runs pyspk.bin.train_$ssl_method)
#   example_config a paper-scale config for the usage message
#   trained_what   what final.pt holds, for the success message
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

. "$(dirname "$0")/libs/train_launch.sh"
help_message="Usage: $0 [options] --config <train.yaml> <data-dir> <exp-dir>
e.g.: $0 --cmd \"\$cuda_cmd\" --nj-gpus 4 --config $example_config --overrides \"optim.lr.base=0.1\" data/voxceleb2_dev exp/$(basename "$example_config" .yaml)
Options:
  --config <yaml>               # training config, required (e.g. conf/${ssl_method}_demo.yaml)
  --overrides \"<a.b=v c=w>\"     # space-separated config overrides (default: none)
$(launch_options_help)"

take_config_option "$@"
set -- ${remaining_args[@]+"${remaining_args[@]}"}
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
check_positive_ints nj_gpus num_nodes
exit_if_trained "$dir"
mkdir -p "$dir/log"

read -r -a override_args <<< "$overrides"
set_launcher "$nj_gpus" "$num_nodes" "$node_rank" "$master_addr" "$master_port"
log=$dir/log/train_$ssl_method.log
run_or_die "$cmd" "$log" training "${launcher[@]}" -m pyspk.bin.train_$ssl_method --config "$train_config" \
  --device "$device" "$data" "$dir" ${override_args[@]+"${override_args[@]}"}
check_trained_model "$dir" "$log"
echo "$0: trained $dir/final.pt ($trained_what; losses in $dir/metrics.tsv, $dir/loss.png)"
