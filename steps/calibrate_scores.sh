#!/usr/bin/env bash
# Linear score calibration, as BOSARIS and Kaldi users do it: on training
# trials scored by the system (never test trials; e.g. pairs of a round's
# pseudo-speakers, pyspk.bin.make_calibration_trials), a logistic regression
# llr = scale * score + offset minimising the cross-entropy weighted at
# --p-target is trained into <calibration> ("scale", "offset", "p_target"
# lines); <scores-in> (the same system's scores of other trials) is written
# calibrated to <scores-out>, whose scores are then log-likelihood ratios:
# accept when llr > log((1 - p) / p) (steps/compute_metrics.sh --calibrated true
# reports that decision's cost, actDCF). A calibration newer than its
# training trials and scores is kept; re-running with the same inputs does nothing.
set -euo pipefail
echo "$0 $*"
step_settings="$*"  # what a finished run records (steps/libs/step_done.sh)

# Begin configuration section.
cmd=run.pl
p_target=0.01
# End configuration section.

help_message="Usage: $0 [options] <train-trials> <train-scores> <calibration> <scores-in> <scores-out>
e.g.: $0 exp/pl_dino_r1/calibration/trials exp/pl_dino_r1/calibration/scores_cosine \\
        exp/pl_dino_r1/calibration/cosine exp/pl_dino_r1/scores/cosine_trials_test \\
        exp/pl_dino_r1/scores/cosine_cal_trials_test
Options:
  --cmd <run.pl|queue.pl ...>  # how to run the jobs (default: $cmd)
  --p-target <p>               # target prior of the cross-entropy the calibration minimises (default: $p_target)"

. "$(dirname "$0")/../path.sh"
. "$(dirname "$0")/libs/common.sh"
. "$(dirname "$0")/libs/step_done.sh"
. parse_options.sh

if [ $# -ne 5 ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
train_trials=$1
train_scores=$2
calibration=$3
scores_in=$4
scores_out=$5

check_fractions p_target
require_files "$train_trials" "$train_scores" "$scores_in"

cal_log=$(dirname "$calibration")/log
mkdir -p "$cal_log"
cal_marker=$cal_log/.train_calibration.$(basename "$calibration").done
if step_is_done "$cal_marker" "$p_target" "$train_trials" "$train_scores" -- "$calibration"; then
  echo "$0: $calibration is newer than $train_scores; kept"
else
  rm -f "$cal_marker"
  run_or_die "$cmd" "$cal_log/train_calibration.$(basename "$calibration").log" "training the calibration" \
    python -m pyspk.bin.train_calibration --p-target "$p_target" "$train_trials" "$train_scores" "$calibration"
  mark_step_done "$cal_marker" "$p_target"
fi

logdir=$(dirname "$scores_out")/log
mkdir -p "$logdir"
marker=$logdir/.calibrate_scores.$(basename "$scores_out").done
exit_if_step_done "$marker" "$step_settings" "$scores_out" "$calibration" "$scores_in" -- "$scores_out"
run_or_die "$cmd" "$logdir/apply_calibration.$(basename "$scores_out").log" "applying the calibration" \
  python -m pyspk.bin.apply_calibration "$calibration" "$scores_in" "$scores_out"
mark_step_done "$marker" "$step_settings"
echo "$0: wrote $scores_out, the scores of $scores_in as log-likelihood ratios ($(grep -E '^(scale|offset) ' "$calibration" | tr '\n' ' '))"
