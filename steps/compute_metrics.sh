#!/usr/bin/env bash
# EER (as Kaldi's compute-eer) and minDCF at p-target 0.01 and 0.05 with
# c-miss = c-fa = 1 (as Kaldi's sid/compute_min_dcf.py) of a scores file, and
# one line per system in the results file:
#   system=<name> EER=3.224% minDCF(p=0.01)=0.3492 minDCF(p=0.05)=0.2101 trials=<trials> scores=<scores>
# With --calibrated true (scores that are log-likelihood ratios, steps/calibrate_scores.sh)
# the line also holds actDCF(p=0.01)=... actDCF(p=0.05)=... after the minDCFs: the
# cost of deciding at the Bayes threshold log((1 - p) / p).
# Re-running with the same scores and trials replaces that system's line (or,
# finished, does nothing). A line of the same system made from other scores
# (another scores file or trial list: another experiment given the same name)
# is kept and the step fails, naming it, unless --overwrite true.
set -euo pipefail
echo "$0 $*"
step_settings="$*"  # what a finished run records (steps/libs/step_done.sh)

# Begin configuration section.
cmd=run.pl
name=
results=exp/results.txt
p_targets=0.01,0.05
calibrated=false
det_plot=
hist_plot=
skip_missing=false
overwrite=false
# End configuration section.

help_message="Usage: $0 [options] <trials> <scores-file>
e.g.: $0 --name plda_test --det-plot exp/scores/plda_test.det.png data/test/trials exp/scores/plda_test
Options:
  --cmd <run.pl|queue.pl ...>  # how to run the job (default: $cmd)
  --name <system>              # system name in the results line (default: the scores file path)
  --results <file>             # results file to update, empty for none (default: $results)
  --p-targets <p1,p2,...>      # minDCF target priors (default: $p_targets)
  --calibrated <true|false>    # the scores are LLRs: also actDCF at the same priors (default: $calibrated)
  --det-plot <png>             # write a DET curve here (default: none)
  --hist-plot <png>            # write a target/non-target score histogram here (default: none)
  --skip-missing <true|false>  # count trials without a score instead of failing (default: $skip_missing)
  --overwrite <true|false>     # replace a line of the same system made from other scores or trials
                               # (default: $overwrite: fail, naming it)"

. "$(dirname "$0")/../path.sh"
. "$(dirname "$0")/libs/common.sh"
. "$(dirname "$0")/libs/step_done.sh"
. parse_options.sh

if [ $# -ne 2 ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
trials=$1
scores=$2
name=${name:-$scores}

require_files "$trials" "$scores"

# own_result: the results file has this system's line made from these scores (or one older than the
# scores= field). A line of it from other scores is pyspk.bin.compute_metrics's to refuse, naming it.
own_result() {
  [ -f "$results" ] || return 1
  local line old
  line=$(awk -v p="system=$name " 'index($0, p) == 1' "$results")
  [ -n "$line" ] || return 1
  old=$(sed -n 's/.* scores=\([^ ]*\).*/\1/p' <<< "$line")
  [ -z "$old" ] || [ "$(realpath -m -- "$old")" = "$(realpath -m -- "$scores")" ]
}

logdir=$(dirname "$scores")/log
mkdir -p "$logdir"
log=$logdir/compute_metrics.$(basename "$scores").log
marker=$logdir/.compute_metrics.$(basename "$scores").done
outputs=(${results:+"$results"} ${det_plot:+"$det_plot"} ${hist_plot:+"$hist_plot"})
if step_is_done "$marker" "$step_settings" "$trials" "$scores" -- "$log" ${outputs[@]+"${outputs[@]}"} && \
    { [ -z "$results" ] || own_result; }; then
  echo "$0: the metrics of $scores are up to date${results:+ in $results}; nothing to do"
  exit 0
fi
rm -f "$marker"

run_or_die "$cmd" "$log" "computing metrics" \
  python -m pyspk.bin.compute_metrics --name "$name" --results "$results" \
    --p-targets "$p_targets" --calibrated "$calibrated" --det-plot "$det_plot" --hist-plot "$hist_plot" \
    --skip-missing "$skip_missing" --overwrite "$overwrite" "$trials" "$scores"
mark_step_done "$marker" "$step_settings"
grep -E "^(EER|minDCF|actDCF)" "$log"
[ -z "$results" ] || echo "$0: updated $results: $(awk -v p="system=$name " 'index($0, p) == 1' "$results")"
