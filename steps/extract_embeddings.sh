#!/usr/bin/env bash
# Extract utterance embeddings with a backbone file, as Kaldi's
# steps/nnet3/xvector/extract_xvectors.sh: writes <out-dir>/xvector.<n>.ark,
# xvector.scp (sorted), spk_xvector.ark/.scp (mean of each speaker's
# utterance embeddings, as ivector-mean) and num_utts.ark (text: "spk N").
#
# Long utterances are embedded in chunks of --chunk-size frames and the chunk
# embeddings averaged (a tail shorter than --min-chunk-size is dropped);
# utterances shorter than --min-chunk-size are padded by repetition.
# Utterances that fail (unreadable features, wrong dim, no voiced frames) are
# logged by id in log/extract.*.log and left out; the script fails if more than
# --max-fail-fraction of them fail. Re-running with the same options when the
# outputs are newer than the model and the features does nothing.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
nj=4
cmd=run.pl
backbone=
chunk_size=1000
min_chunk_size=100
batch_size=32
device=auto
use_vad=false
max_fail_fraction=0.05
# End configuration section.

help_message="Usage: $0 [options] <model-file> <data-dir> <out-dir>
e.g.: $0 --nj 8 --cmd \"\$train_cmd\" exp/dino/final.pt data/voxceleb1_test exp/dino/xvectors_voxceleb1_test
Options:
  --nj <n>                     # number of parallel jobs (default: $nj)
  --cmd <run.pl|queue.pl ...>  # how to run the jobs (default: $cmd)
  --backbone <name>            # backbone in the model file, e.g. student (default: the file's
                               # default_backbone, the teacher for DINO)
  --chunk-size <frames>        # chunk length for long utterances (default: $chunk_size)
  --min-chunk-size <frames>    # drop shorter tails, pad shorter utterances (default: $min_chunk_size)
  --batch-size <n>             # chunks per forward pass (default: $batch_size)
  --device <auto|cpu|cuda>     # auto: cuda if available (default: $device)
  --use-vad <true|false>       # drop frames marked 0 in <data-dir>/vad.scp (default: $use_vad)
  --max-fail-fraction <f>      # fail if more than this fraction of utterances fail (default: $max_fail_fraction)"

. "$(dirname "$0")/../path.sh"
. "$(dirname "$0")/libs/common.sh"
. parse_options.sh

if [ $# -ne 3 ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
model=$1
data=$2
dir=$3

inputs=("$model" "$data/feats.scp" "$data/utt2spk")
if $use_vad; then inputs+=("$data/vad.scp"); fi
require_files "${inputs[@]}"
check_positive_ints nj chunk_size min_chunk_size batch_size
[ "$min_chunk_size" -le "$chunk_size" ] || \
  { echo "$0: --min-chunk-size ($min_chunk_size) must not exceed --chunk-size ($chunk_size)" >&2; exit 1; }
check_fractions max_fail_fraction

# The marker records what was extracted; outputs are reused only for the same
# model, backbone and options, and when newer than every input.
settings="model=$(cd "$(dirname "$model")" && pwd -P)/$(basename "$model") data=$(cd "$data" && pwd -P)"
settings+=" backbone=$backbone chunk_size=$chunk_size min_chunk_size=$min_chunk_size use_vad=$use_vad"
marker=$dir/.extract_done
up_to_date() {
  local f
  [ -f "$marker" ] && [ "$(cat "$marker")" = "$settings" ] || return 1
  for f in xvector.scp spk_xvector.scp num_utts.ark; do [ -f "$dir/$f" ] || return 1; done
  for f in "${inputs[@]}"; do [ "$marker" -nt "$f" ] || return 1; done
}
if up_to_date; then
  echo "$0: $dir is complete and newer than its inputs; nothing to do"
  exit 0
fi

mkdir -p "$dir/log"
rm -f "$marker" "$dir"/xvector.*.ark "$dir"/xvector.*.scp

# Share the CPU cores between the jobs (ignored when they run on a GPU).
num_threads=$(( $(nproc) / nj ))
[ "$num_threads" -ge 1 ] || num_threads=1
backbone_opt=()
[ -n "$backbone" ] && backbone_opt=(--backbone "$backbone")

run_jobs_or_die "$cmd" "$nj" "$dir/log/extract.JOB.log" extraction \
  python -m pyspk.bin.extract_embeddings extract "${backbone_opt[@]}" --chunk-size "$chunk_size" \
    --min-chunk-size "$min_chunk_size" --batch-size "$batch_size" --device "$device" --use-vad "$use_vad" \
    --num-threads "$num_threads" --job JOB --num-jobs "$nj" "$model" "$data" "$dir"

if ! python -m pyspk.bin.extract_embeddings merge --num-jobs "$nj" --max-fail-fraction "$max_fail_fraction" \
    "$data" "$dir" > "$dir/log/merge.log" 2>&1; then
  show_log_end merging "$dir/log/merge.log"
  # The reasons are in the job logs; the commonest ones (e.g. a feature-dim mismatch) belong in this message.
  reasons=$(sed -n 's/.*: failed: //p' "$dir"/log/extract.*.log | sort | uniq -c | sort -rn | head -n 3)
  if [ -n "$reasons" ]; then
    echo "$0: most frequent reasons (count, reason) in $dir/log/extract.*.log:" >&2
    echo "$reasons" >&2
  fi
  exit 1
fi
counts=$(grep -o "^Done [0-9]*, failed [0-9]*" "$dir/log/merge.log" | tail -n 1)
if [ "${counts##* }" != 0 ]; then
  echo "$0: some utterances failed (listed by id in $dir/log/extract.*.log); they have no embedding"
fi
echo "$settings" > "$marker"
echo "$0: succeeded extracting embeddings into $dir ($counts)"
