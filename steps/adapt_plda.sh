#!/usr/bin/env bash
# Unsupervised in-domain adaptation of a PLDA back-end, as Kaldi's
# egs/sre16/v2 does with ivector-adapt-plda: the unlabelled x-vectors of
# <adapt-xvector-dir>, minus their own mean, through <plda-dir>'s transform.mat
# and length norm, adapt its PLDA. Writes <out-plda-dir>/{mean.vec (the
# adaptation set's mean), transform.mat (copied), plda (adapted), backend.yaml,
# adaptation.yaml}, scored as it is by steps/score_plda.sh (and by Kaldi's
# ivector-plda-scoring). Re-running with other settings re-adapts and rewrites them.
set -euo pipefail
echo "$0 $*"
step_settings="$*"  # what a finished run records (steps/libs/step_done.sh)

# Begin configuration section.
cmd=run.pl
within_covar_scale=0.75
between_covar_scale=0.25
mean_diff_scale=1.0
# End configuration section.

help_message="Usage: $0 [options] <plda-dir> <adapt-xvector-dir> <out-plda-dir>
e.g.: $0 exp/xvectors_train/plda exp/xvectors_sre16_major exp/xvectors_sre16_major/plda_adapt
Options:
  --cmd <run.pl|queue.pl ...>         # how to run the job (default: $cmd)
  --within-covar-scale <f>            # share of the excess in-domain variance added to the
                                      # within-class covariance (default: $within_covar_scale)
  --between-covar-scale <f>           # share added to the between-class covariance
                                      # (default: $between_covar_scale)
  --mean-diff-scale <f>               # scale of the mean shift's outer product added to the
                                      # in-domain variance (default: $mean_diff_scale)"

. "$(dirname "$0")/../path.sh"
. "$(dirname "$0")/libs/common.sh"
. "$(dirname "$0")/libs/step_done.sh"
. parse_options.sh

if [ $# -ne 3 ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
plda_dir=$1
adapt_dir=$2
out_dir=$3

require_files "$plda_dir/plda" "$adapt_dir/xvector.scp"
for opt in within_covar_scale between_covar_scale mean_diff_scale; do
  [[ "${!opt}" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] || {
    echo "$0: --${opt//_/-} must be a non-negative number, got '${!opt}'" >&2; exit 1; }
done
if [ "$(cd "$plda_dir" && pwd -P)" = "$(mkdir -p "$out_dir" && cd "$out_dir" && pwd -P)" ]; then
  echo "$0: <out-plda-dir> must differ from <plda-dir> $plda_dir" >&2; exit 1
fi

marker=$out_dir/log/.adapt_plda.done  # in log/, so the PLDA dir holds only the back-end files
inputs=("$plda_dir/plda" "$adapt_dir/xvector.scp")
add_existing_inputs "$plda_dir/mean.vec" "$plda_dir/transform.mat" "$plda_dir/backend.yaml" \
  "$plda_dir/adaptation.yaml"
exit_if_step_done "$marker" "$step_settings" "$out_dir" "${inputs[@]}" -- "$out_dir/plda" "$out_dir/mean.vec"
mkdir -p "$out_dir/log"
run_or_die "$cmd" "$out_dir/log/adapt_plda.log" "PLDA adaptation" \
  python -m pyspk.bin.adapt_plda --within-covar-scale "$within_covar_scale" \
    --between-covar-scale "$between_covar_scale" --mean-diff-scale "$mean_diff_scale" \
    "$plda_dir" "$adapt_dir" "$out_dir"
mark_step_done "$marker" "$step_settings"
echo "$0: adapted the PLDA back-end in $plda_dir to $adapt_dir in $out_dir"
