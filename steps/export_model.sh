#!/usr/bin/env bash
# Export a trained model as one self-contained file, usable without the recipe:
# <out-dir>/model.pt holds <exp-dir>/final.pt's backbone with the recipe's fbank
# and VAD options (--fbank-conf, --vad-conf, relative to the recipe directory
# this runs from), whether it embeds voiced frames only (--use-vad auto: the
# training config's data.use_vad), and the back-end steps/sv_pipeline.sh trained
# with it (the mean of <exp-dir>/xvectors_<train-set> for cosine, <exp-dir>/plda).
# Also <out-dir>/fbank.conf, vad.conf and README.md, the model card (training,
# front-end, back-end, the system's lines of <exp-dir>/../results.txt); with
# --torchscript/--onnx true the backbone as model.torchscript.pt/model.onnx,
# checked against it (the features are then the caller's: see the card).
# Use the model with "pyspk embed|score <out-dir>/model.pt ..." or pyspk.load().
# Re-running rewrites the outputs (each atomically).
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
cmd=run.pl
fbank_conf=conf/fbank.conf
vad_conf=conf/vad.conf
use_vad=auto
backbone=
train_set=train
mean_dir=
plda_dir=
results=
system=
chunk_size=1000
min_chunk_size=100
torchscript=false
onnx=false
# End configuration section.

help_message="Usage: $0 [options] <exp-dir> <out-dir>
e.g.: $0 --torchscript true --onnx true exp/pl_dino_r2 exported/dino_r2
Options:
  --cmd <run.pl|queue.pl ...>   # how to run the job (default: $cmd)
  --fbank-conf <file>           # fbank options of the model (default: $fbank_conf)
  --vad-conf <file>             # VAD options (default: $vad_conf)
  --use-vad <auto|true|false>   # embed voiced frames only; auto: the training config's
                                # data.use_vad (default: $use_vad)
  --backbone <name>             # backbone of final.pt (default: its default backbone)
  --train-set <name>            # cosine mean from <exp-dir>/xvectors_[<backbone>_]<train-set>
                                # (default: $train_set)
  --mean-dir <dir|none>         # x-vector dir of the cosine mean instead (default: as --train-set)
  --plda-dir <dir|none>         # PLDA back-end (default: <exp-dir>/plda when present)
  --results <file>              # results file (default: <exp-dir>/../results.txt)
  --system <name>               # system of the results lines (default: as steps/sv_pipeline.sh
                                # names them, after <exp-dir>: exp/pl_dino_r2 -> pl_dino_r2)
  --chunk-size <frames>         # chunk length for long utterances (default: $chunk_size)
  --min-chunk-size <frames>     # drop shorter tails, pad shorter utterances (default: $min_chunk_size)
  --torchscript <true|false>    # also write model.torchscript.pt (default: $torchscript)
  --onnx <true|false>           # also write model.onnx; needs pip install -e '.[export]' (default: $onnx)"

. "$(dirname "$0")/../path.sh"
. "$(dirname "$0")/libs/common.sh"
. parse_options.sh

if [ $# -ne 2 ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
exp_dir=$1
out_dir=$2

require_files "$exp_dir/final.pt" "$fbank_conf" "$vad_conf"
[[ "$use_vad" =~ ^(auto|true|false)$ ]] || { echo "$0: --use-vad must be auto, true or false, got '$use_vad'" >&2; exit 1; }
check_positive_ints chunk_size min_chunk_size
[ "$min_chunk_size" -le "$chunk_size" ] || \
  { echo "$0: --min-chunk-size ($min_chunk_size) must not exceed --chunk-size ($chunk_size)" >&2; exit 1; }
for dir in "$mean_dir" "$plda_dir"; do
  [ -z "$dir" ] || [ "$dir" = none ] || [ -d "$dir" ] || { echo "$0: no such directory $dir" >&2; exit 1; }
done

opts=()
[ -z "$backbone" ] || opts+=(--backbone "$backbone")
[ -z "$mean_dir" ] || opts+=(--mean-dir "$mean_dir")
[ -z "$plda_dir" ] || opts+=(--plda-dir "$plda_dir")
[ -z "$results" ] || opts+=(--results "$results")
[ -z "$system" ] || opts+=(--system "$system")
mkdir -p "$out_dir/log"
run_or_die "$cmd" "$out_dir/log/export_model.log" "model export" \
  python -m pyspk.bin.export_model --fbank-conf "$fbank_conf" --vad-conf "$vad_conf" --use-vad "$use_vad" \
    --train-set "$train_set" --chunk-size "$chunk_size" --min-chunk-size "$min_chunk_size" \
    --torchscript "$torchscript" --onnx "$onnx" ${opts[@]+"${opts[@]}"} "$exp_dir" "$out_dir"
echo "$0: exported $exp_dir to $out_dir/model.pt (model card: $out_dir/README.md)"
