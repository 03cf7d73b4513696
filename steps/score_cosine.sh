#!/usr/bin/env bash
# Cosine scoring of a Kaldi trials file, as Kaldi's
#   ivector-subtract-global-mean | ivector-normalize-length | ivector-compute-dot-products
# with optional AS-norm. Writes "<enroll> <test> <score>" lines in trials order
# (only the trials that were scored, see --skip-missing). Re-running rewrites
# the scores file (atomically).
set -euo pipefail
echo "$0 $*"
step_settings="$*"  # what a finished run records (steps/libs/step_done.sh)

# Begin configuration section.
cmd=run.pl
mean_dir=
lnorm=true
enroll_level=utt
asnorm_cohort=
cohort_level=utt
cohort_data=
top_n=300
skip_missing=false
# End configuration section.

help_message="Usage: $0 [options] <trials> <enroll-xvector-dir> <test-xvector-dir> <scores-file>
e.g.: $0 --mean-dir exp/xvectors_train --asnorm-cohort exp/xvectors_train \\
        data/test/trials exp/xvectors_test exp/xvectors_test exp/scores/cosine_test
Options:
  --cmd <run.pl|queue.pl ...>  # how to run the job (default: $cmd)
  --mean-dir <dir>             # subtract this x-vector dir's mean (its mean.vec, else the mean of
                               # its xvector.scp) (default: none)
  --lnorm <true|false>         # length-normalise (cosine); false: plain dot product (default: $lnorm)
  --enroll-level <utt|spk>     # enrolment keys: utterances (xvector.scp) or speakers
                               # (spk_xvector.scp) (default: $enroll_level)
  --asnorm-cohort <dir>        # x-vector dir of the AS-norm cohort (default: none, no AS-norm)
  --cohort-level <utt|spk>     # cohort: utterance embeddings or speaker means (default: $cohort_level)
  --cohort-data <data-dir>     # use only the cohort utterances of this data dir's utt2spk; with
                               # --cohort-level spk, average them per its speakers (default: all)
  --top-n <n>                  # AS-norm: best cohort scores used, <= 0 all (default: $top_n)
  --skip-missing <true|false>  # skip and count trials whose keys have no embedding (default: $skip_missing)"

. "$(dirname "$0")/../path.sh"
. "$(dirname "$0")/libs/common.sh"
. "$(dirname "$0")/libs/step_done.sh"
. parse_options.sh

if [ $# -ne 4 ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
trials=$1
enroll_dir=$2
test_dir=$3
scores=$4

enroll_scp=$enroll_dir/xvector.scp
[ "$enroll_level" = spk ] && enroll_scp=$enroll_dir/spk_xvector.scp
require_files "$trials" "$enroll_scp" "$test_dir/xvector.scp"
if [ -n "$mean_dir" ] && [ ! -f "$mean_dir/mean.vec" ] && [ ! -f "$mean_dir/xvector.scp" ]; then
  echo "$0: --mean-dir $mean_dir has neither mean.vec nor xvector.scp" >&2; exit 1
fi
if [ -n "$asnorm_cohort" ] && [ ! -d "$asnorm_cohort" ]; then
  echo "$0: no such cohort directory $asnorm_cohort" >&2; exit 1
fi
[ -z "$cohort_data" ] || require_files "$cohort_data/utt2spk"

logdir=$(dirname "$scores")/log
mkdir -p "$logdir"
log=$logdir/score_cosine.$(basename "$scores").log
marker=$logdir/.score_cosine.$(basename "$scores").done
inputs=("$trials" "$enroll_scp" "$test_dir/xvector.scp")
add_existing_inputs ${mean_dir:+"$mean_dir"/mean.vec "$mean_dir"/xvector.scp} \
  ${asnorm_cohort:+"$asnorm_cohort"/xvector.scp "$asnorm_cohort"/spk_xvector.scp} ${cohort_data:+"$cohort_data/utt2spk"}
exit_if_step_done "$marker" "$step_settings" "$scores" "${inputs[@]}" -- "$scores"

run_or_die "$cmd" "$log" "cosine scoring" \
  python -m pyspk.bin.score_cosine --mean-dir "$mean_dir" --lnorm "$lnorm" \
    --enroll-level "$enroll_level" --asnorm-cohort "$asnorm_cohort" --cohort-level "$cohort_level" \
    --cohort-data "$cohort_data" --top-n "$top_n" --skip-missing "$skip_missing" \
    "$trials" "$enroll_dir" "$test_dir" "$scores"
mark_step_done "$marker" "$step_settings"
echo "$0: wrote $(wc -l < "$scores") cosine scores of $trials to $scores"
