#!/usr/bin/env bash
# PLDA scoring of a Kaldi trials file, as Kaldi's ivector-plda-scoring after
# ivector-subtract-global-mean (mean.vec), transform-vec (transform.mat) and
# ivector-normalize-length, with optional AS-norm. <plda-dir> is made by
# steps/train_plda.sh, or is Kaldi's own (e.g. exp/xvector_nnet_1a/xvectors_train
# with mean.vec, transform.mat, plda). Writes "<enroll> <test> <score>" lines in
# trials order. Re-running rewrites the scores file (atomically).
set -euo pipefail
echo "$0 $*"
step_settings="$*"  # what a finished run records (steps/libs/step_done.sh)

# Begin configuration section.
cmd=run.pl
enroll_level=utt
normalize_length=true
simple_length_norm=false
smoothing=0.0
asnorm_cohort=
cohort_level=utt
cohort_data=
top_n=300
skip_missing=false
# End configuration section.

help_message="Usage: $0 [options] <plda-dir> <trials> <enroll-xvector-dir> <test-xvector-dir> <scores-file>
e.g.: $0 --asnorm-cohort exp/xvectors_train exp/xvectors_train/plda data/test/trials \\
        exp/xvectors_test exp/xvectors_test exp/scores/plda_test
Options:
  --cmd <run.pl|queue.pl ...>        # how to run the job (default: $cmd)
  --enroll-level <utt|spk>           # enrolment keys: utterances (xvector.scp) or speakers
                                     # (spk_xvector.scp + num_utts.ark, as --num-utts) (default: $enroll_level)
  --normalize-length <true|false>    # PLDA length normalisation (default: $normalize_length)
  --simple-length-norm <true|false>  # normalise to length sqrt(dim) instead (default: $simple_length_norm)
  --smoothing <f>                    # within-class covariance smoothing, as ivector-copy-plda
                                     # (default: $smoothing)
  --asnorm-cohort <dir>              # x-vector dir of the AS-norm cohort (default: none, no AS-norm)
  --cohort-level <utt|spk>           # cohort: utterance embeddings or speaker means (default: $cohort_level)
  --cohort-data <data-dir>           # use only the cohort utterances of this data dir's utt2spk; with
                                     # --cohort-level spk, average them per its speakers (default: all)
  --top-n <n>                        # AS-norm: best cohort scores used, <= 0 all (default: $top_n)
  --skip-missing <true|false>        # skip and count trials whose keys have no embedding
                                     # (default: $skip_missing)"

. "$(dirname "$0")/../path.sh"
. "$(dirname "$0")/libs/common.sh"
. "$(dirname "$0")/libs/step_done.sh"
. parse_options.sh

if [ $# -ne 5 ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
plda_dir=$1
trials=$2
enroll_dir=$3
test_dir=$4
scores=$5

enroll_scp=$enroll_dir/xvector.scp
[ "$enroll_level" = spk ] && enroll_scp=$enroll_dir/spk_xvector.scp
require_files "$plda_dir/plda" "$trials" "$enroll_scp" "$test_dir/xvector.scp"
if [ -n "$asnorm_cohort" ] && [ ! -d "$asnorm_cohort" ]; then
  echo "$0: no such cohort directory $asnorm_cohort" >&2; exit 1
fi
[ -z "$cohort_data" ] || require_files "$cohort_data/utt2spk"

logdir=$(dirname "$scores")/log
mkdir -p "$logdir"
log=$logdir/score_plda.$(basename "$scores").log
marker=$logdir/.score_plda.$(basename "$scores").done
inputs=("$plda_dir/plda" "$trials" "$enroll_scp" "$test_dir/xvector.scp")
add_existing_inputs ${asnorm_cohort:+"$asnorm_cohort"/xvector.scp "$asnorm_cohort"/spk_xvector.scp} \
  ${cohort_data:+"$cohort_data/utt2spk"}
exit_if_step_done "$marker" "$step_settings" "$scores" "${inputs[@]}" -- "$scores"

run_or_die "$cmd" "$log" "PLDA scoring" \
  python -m pyspk.bin.score_plda --enroll-level "$enroll_level" \
    --normalize-length "$normalize_length" --simple-length-norm "$simple_length_norm" \
    --smoothing "$smoothing" --asnorm-cohort "$asnorm_cohort" --cohort-level "$cohort_level" \
    --cohort-data "$cohort_data" --top-n "$top_n" --skip-missing "$skip_missing" \
    "$plda_dir" "$trials" "$enroll_dir" "$test_dir" "$scores"
mark_step_done "$marker" "$step_settings"
echo "$0: wrote $(wc -l < "$scores") PLDA scores of $trials to $scores"
