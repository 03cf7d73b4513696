#!/usr/bin/env bash
# Linear fusion of the score files of several systems (e.g. the cosine scores
# of MeMo's teachers) on one trial list:
#   fused = sum_k w_k * s_k   (s_k standardised over the trials with --normalize mean-std)
# Every score file must hold each trial of <trials> exactly once (any order);
# the output has one "<enroll> <test> <score>" line per trial, in trials order.
# Re-running rewrites the output (atomically).
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
cmd=run.pl
weights=
normalize=none
# End configuration section.

help_message="Usage: $0 [options] <trials> <scores-1> <scores-2> [<scores-3> ...] <out-scores>
e.g.: $0 --weights \"0.6 0.4\" --normalize mean-std data/test/trials \\
        exp/memo/scores/cosine_test exp/memo/scores/cosine_ecapa_test exp/memo/scores/cosine_fused_test
Options:
  --cmd <run.pl|queue.pl ...>  # how to run the job (default: $cmd)
  --weights \"<w1> <w2> ...\"    # one weight per score file, used as given (default: equal weights summing to 1)
  --normalize <none|mean-std>  # mean-std: standardise each system's scores over the trials before
                               # weighting, for systems with different score scales (default: $normalize)"

. "$(dirname "$0")/../path.sh"
. "$(dirname "$0")/libs/common.sh"
. parse_options.sh

if [ $# -lt 4 ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
args=("$@")
trials=$1
out=${args[$#-1]}
inputs=("${args[@]:1:$#-2}")

case "$normalize" in
  none|mean-std) ;;
  *) echo "$0: --normalize must be none or mean-std, got '$normalize'" >&2; exit 1 ;;
esac
read -ra weight_list <<< "${weights//,/ }"
if [ -n "$weights" ] && [ ${#weight_list[@]} -ne ${#inputs[@]} ]; then
  echo "$0: --weights '$weights' has ${#weight_list[@]} weights for ${#inputs[@]} score files" >&2; exit 1
fi
require_files "$trials" "${inputs[@]}"

logdir=$(dirname "$out")/log
mkdir -p "$logdir"
log=$logdir/fuse_scores.$(basename "$out").log

run_or_die "$cmd" "$log" "score fusion" \
  python -m pyspk.bin.fuse_scores --weights="$weights" --normalize "$normalize" "$trials" "${inputs[@]}" "$out"
echo "$0: wrote $(wc -l < "$out") fused scores of ${#inputs[@]} systems on $trials to $out"
