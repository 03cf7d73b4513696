#!/usr/bin/env bash
# Train Kaldi's x-vector PLDA back-end (egs/voxceleb/v2 order): global mean
# (ivector-mean), LDA (ivector-compute-lda), length norm, two-covariance PLDA
# (ivector-compute-plda). Speaker labels come from <data-dir>/utt2spk, true or
# pseudo labels. Writes <plda-dir>/{mean.vec,transform.mat,plda,backend.yaml};
# mean.vec, transform.mat and plda (Kaldi text format) work with Kaldi's own
# ivector-plda-scoring. Re-running retrains and rewrites them.
set -euo pipefail
echo "$0 $*"
step_settings="$*"  # what a finished run records (steps/libs/step_done.sh)

# Begin configuration section.
cmd=run.pl
lda_dim=128
lnorm=true
num_em_iters=10
total_covariance_factor=0.0
# End configuration section.

help_message="Usage: $0 [options] <xvector-dir> <data-dir-with-utt2spk> <plda-dir>
e.g.: $0 --lda-dim 128 exp/xvectors_train data/train exp/xvectors_train/plda
Options:
  --cmd <run.pl|queue.pl ...>         # how to run the job (default: $cmd)
  --lda-dim <n>                       # LDA dimension, 0 for no LDA (default: $lda_dim)
  --lnorm <true|false>                # length-normalise before PLDA (default: $lnorm)
  --num-em-iters <n>                  # PLDA E-M iterations (default: $num_em_iters)
  --total-covariance-factor <f>       # LDA: 0 normalises within-class, 1 total covariance
                                      # (default: $total_covariance_factor)"

. "$(dirname "$0")/../path.sh"
. "$(dirname "$0")/libs/common.sh"
. "$(dirname "$0")/libs/step_done.sh"
. parse_options.sh

if [ $# -ne 3 ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
xvector_dir=$1
data=$2
plda_dir=$3

require_files "$xvector_dir/xvector.scp" "$data/utt2spk"
[[ "$lda_dim" =~ ^[0-9]+$ ]] || { echo "$0: --lda-dim must be a non-negative integer, got '$lda_dim'" >&2; exit 1; }

marker=$plda_dir/log/.train_plda.done  # in log/, so the PLDA dir holds only the back-end files
exit_if_step_done "$marker" "$step_settings" "$plda_dir" "$xvector_dir/xvector.scp" "$data/utt2spk" -- "$plda_dir/plda"
mkdir -p "$plda_dir/log"
run_or_die "$cmd" "$plda_dir/log/train_plda.log" "PLDA training" \
  python -m pyspk.bin.train_plda --lda-dim "$lda_dim" --lnorm "$lnorm" \
    --num-em-iters "$num_em_iters" --total-covariance-factor "$total_covariance_factor" \
    "$xvector_dir" "$data" "$plda_dir"
mark_step_done "$marker" "$step_settings"
echo "$0: trained the PLDA back-end of $xvector_dir (labels of $data) in $plda_dir"
