#!/usr/bin/env bash
# Average the backbones of the last N checkpoints of a training run
# (<exp-dir>/checkpoints/ckpt-e*-s*.pt; WeSpeaker averages 10) into one
# backbone file in the final.pt layout, for steps/extract_embeddings.sh.
# The run must keep at least N checkpoints (train.keep_checkpoints).
# Re-running when <out.pt> exists does nothing.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
cmd=run.pl
num=5
# End configuration section.

help_message="Usage: $0 [options] <exp-dir> <out.pt>
e.g.: $0 --num 5 exp/dino exp/dino/avg5.pt
Options:
  --cmd <run.pl|queue.pl ...>  # how to run the job (default: $cmd)
  --num <N>                    # number of most recent checkpoints to average (default: $num)"

. "$(dirname "$0")/../path.sh"
. "$(dirname "$0")/libs/common.sh"
. parse_options.sh

if [ $# -ne 2 ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
dir=$1
out=$2
[ -d "$dir/checkpoints" ] || { echo "$0: no such dir $dir/checkpoints" >&2; exit 1; }
if [ -f "$out" ]; then
  echo "$0: $out exists, nothing to do"
  exit 0
fi
mkdir -p "$dir/log"
run_or_die "$cmd" "$dir/log/average_checkpoints.log" averaging \
  python -m pyspk.bin.average_checkpoints --num "$num" "$dir" "$out"
echo "$0: wrote $out"
