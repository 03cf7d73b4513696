#!/usr/bin/env bash
# Kaldi energy VAD for a data dir with features, as Kaldi's
# steps/compute_vad_decision.sh: writes <vad-dir>/vad_<name>.<n>.{ark,scp}
# and <data-dir>/vad.scp (per utterance a Kaldi float vector of 0/1, one entry
# per feature frame).
#
# Kaldi thresholds the log energy in column 0 of MFCC features; fbank features
# have no such column, so the log energy of each frame is recomputed from the
# audio with the framing of --fbank-config, which must be the conf the
# features were made with (a frame-count mismatch is reported). See
# pyspk/features/vad.py. Utterance failures are handled as in make_fbank.sh.
# Re-running when vad.scp is complete and newer than feats.scp and the
# configs does nothing; otherwise everything is recomputed.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
nj=4
cmd=run.pl
vad_config=conf/vad.conf
fbank_config=conf/fbank.conf
max_fail_fraction=0.05
# End configuration section.

help_message="Usage: $0 [options] <data-dir> [<log-dir> [<vad-dir>]]
e.g.: $0 --nj 8 --cmd \"\$train_cmd\" data/train exp/make_vad/train vad
Note: <log-dir> defaults to <data-dir>/log, <vad-dir> to <data-dir>/data.
Options:
  --nj <n>                         # number of parallel jobs (default: $nj)
  --cmd <run.pl|queue.pl ...>      # how to run the jobs (default: $cmd)
  --vad-config <file>              # Kaldi-style compute-vad options (default: $vad_config)
  --fbank-config <file>            # fbank conf of the features, for the framing (default: $fbank_config)
  --max-fail-fraction <f>          # fail if more than this fraction of utterances fail (default: $max_fail_fraction)"

. "$(dirname "$0")/../path.sh"
. "$(dirname "$0")/libs/common.sh"
. "$(dirname "$0")/libs/parallel_jobs.sh"
. parse_options.sh

if [ $# -lt 1 ] || [ $# -gt 3 ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
data=$1
logdir=${2:-$data/log}
vaddir=${3:-$data/data}
name=$(basename "$data")

require_files "$data/wav.scp" "$data/feats.scp" "$vad_config" "$fbank_config"
check_positive_ints nj
check_fractions max_fail_fraction

# True when vad.scp has exactly the utterances of feats.scp, is newer than
# every input, and every ark it points to exists.
vad_up_to_date() {
  local f=$data/vad.scp input
  [ -f "$f" ] || return 1
  for input in "$data/feats.scp" "$data/wav.scp" "$vad_config" "$fbank_config"; do
    [ "$f" -nt "$input" ] || return 1
  done
  cmp -s <(awk '{print $1}' "$f") <(awk '{print $1}' "$data/feats.scp") || return 1
  scp_arks_exist "$f"
}

if vad_up_to_date; then
  echo "$0: $data/vad.scp is complete and newer than its inputs; nothing to do"
  exit 0
fi

mkdir -p "$logdir" "$vaddir"
rm -f "$data/vad.scp"

run_jobs_or_die "$cmd" "$nj" "$logdir/vad_$name.JOB.log" VAD \
  python -m pyspk.bin.compute_vad --config "$vad_config" --fbank-config "$fbank_config" \
    --job JOB --num-jobs "$nj" "$data" "$vaddir/vad_$name.JOB.ark" "$vaddir/vad_$name.JOB.scp"

sum_job_counts "$nj" "$logdir/vad_$name." .log "$max_fail_fraction" "$data/feats.scp"

merge_parts "$nj" "$data/vad.scp" "$vaddir/vad_$name." .scp

if [ "$num_failed" -gt 0 ]; then
  echo "$0: $num_failed of $total utterances failed (listed by id in $logdir/vad_$name.*.log," \
       "e.g. $first_failed_log); they are not in $data/vad.scp."
  echo "$0: run utils/fix_data_dir.sh $data to drop them from the other files."
fi
echo "$0: succeeded computing VAD decisions for $name ($num_done utterances)"
