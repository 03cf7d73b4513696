#!/usr/bin/env bash
# Compute Kaldi fbank features for a data dir, as Kaldi's steps/make_fbank.sh:
# writes <fbank-dir>/raw_fbank_<name>.<n>.{ark,scp} and <data-dir>/feats.scp,
# utt2num_frames and (by default) utt2dur. Reads wav.scp (plain paths or
# "command |" extended filenames) and segments when present.
#
# Utterances that fail (unreadable audio, failing pipe, wrong sample rate, too
# short, segment beyond the recording) are logged by id and left out of
# feats.scp; the script fails if more than --max-fail-fraction of them fail.
# Re-running when feats.scp is complete and newer than wav.scp, segments and
# the config does nothing; otherwise everything is recomputed (the old
# feats.scp is first moved to <data-dir>/.backup, as Kaldi does).
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
nj=4
cmd=run.pl
fbank_config=conf/fbank.conf
compress=true
max_fail_fraction=0.05
write_utt2dur=true
backend=kaldi-native
device=cpu
# End configuration section.

help_message="Usage: $0 [options] <data-dir> [<log-dir> [<fbank-dir>]]
e.g.: $0 --nj 8 --cmd \"\$train_cmd\" data/train exp/make_fbank/train fbank
Note: <log-dir> defaults to <data-dir>/log, <fbank-dir> to <data-dir>/data.
Options:
  --nj <n>                         # number of parallel jobs (default: $nj)
  --cmd <run.pl|queue.pl ...>      # how to run the jobs (default: $cmd)
  --fbank-config <file>            # Kaldi-style fbank options (default: $fbank_config)
  --compress <true|false>          # store Kaldi compressed matrices (default: $compress)
  --max-fail-fraction <f>          # fail if more than this fraction of utterances fail (default: $max_fail_fraction)
  --write-utt2dur <true|false>     # also write <data-dir>/utt2dur (default: $write_utt2dur)
  --backend <kaldi-native|torch>   # fbank implementation; torch is pyspk's own, as used in training (default: $backend)
  --device <cpu|cuda|cuda:N>       # device of the torch backend (default: $device)"

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
fbankdir=${3:-$data/data}
name=$(basename "$data")

require_files "$data/wav.scp" "$fbank_config"
check_positive_ints nj
check_fractions max_fail_fraction
[[ "$backend" =~ ^(kaldi-native|torch)$ ]] || { echo "$0: --backend must be kaldi-native or torch, got '$backend'" >&2; exit 1; }

utt_list=$data/wav.scp
[ -f "$data/segments" ] && utt_list=$data/segments

# Temporaries of a killed run (complete outputs only ever appear by rename).
rm -f "$fbankdir/.raw_fbank_$name."*.tmp "$logdir/.utt2num_frames."*.tmp "$logdir/.utt2dur."*.tmp

# True when feats.scp has exactly the utterances, is newer than every input,
# and every ark it points to exists.
feats_up_to_date() {
  local f=$data/feats.scp input
  [ -f "$f" ] && [ -f "$data/utt2num_frames" ] || return 1
  if $write_utt2dur; then [ -f "$data/utt2dur" ] || return 1; fi
  for input in "$data/wav.scp" "$utt_list" "$fbank_config"; do
    [ "$f" -nt "$input" ] || return 1
  done
  cmp -s <(awk '{print $1}' "$f") <(awk '{print $1}' "$utt_list" | sort) || return 1
  scp_arks_exist "$f"
}

if feats_up_to_date; then
  echo "$0: $data/feats.scp is complete and newer than its inputs; nothing to do"
  exit 0
fi

# Validate before computing: a dir that fails only at the end would leave a
# feats.scp that a re-run takes as finished.
validate_data_dir.sh --no-text --no-feats "$data" || { echo "$0: $data does not validate; fix it first" >&2; exit 1; }

mkdir -p "$logdir" "$fbankdir"
if [ -f "$data/feats.scp" ]; then
  mkdir -p "$data/.backup"
  echo "$0: moving $data/feats.scp to $data/.backup"
  mv "$data/feats.scp" "$data/.backup/"
fi

utt2dur_opt=()
if $write_utt2dur; then utt2dur_opt=(--utt2dur-out "$logdir/utt2dur.JOB"); fi

run_jobs_or_die "$cmd" "$nj" "$logdir/make_fbank_$name.JOB.log" fbank \
  python -m pyspk.bin.compute_fbank --config "$fbank_config" --job JOB --num-jobs "$nj" \
    --compress "$compress" --backend "$backend" --device "$device" \
    --utt2num-frames-out "$logdir/utt2num_frames.JOB" "${utt2dur_opt[@]}" \
    "$data" "$fbankdir/raw_fbank_$name.JOB.ark" "$fbankdir/raw_fbank_$name.JOB.scp"

sum_job_counts "$nj" "$logdir/make_fbank_$name." .log "$max_fail_fraction" "$utt_list"

# Merge the parts: C-sorted, each replacing its file in one rename; feats.scp
# last, since its presence marks a finished run.
merge_parts "$nj" "$data/utt2num_frames" "$logdir/utt2num_frames." ""
if $write_utt2dur; then merge_parts "$nj" "$data/utt2dur" "$logdir/utt2dur." ""; fi
merge_parts "$nj" "$data/feats.scp" "$fbankdir/raw_fbank_$name." ".scp"

if [ "$num_failed" -gt 0 ]; then
  echo "$0: $num_failed of $total utterances failed (listed by id in $logdir/make_fbank_$name.*.log," \
       "e.g. $first_failed_log); they are not in $data/feats.scp."
  echo "$0: run utils/fix_data_dir.sh $data to drop them from the other files."
else
  if ! validate_data_dir.sh --no-text "$data"; then
    mkdir -p "$data/.backup"
    mv "$data/feats.scp" "$data/.backup/"  # so that a re-run does not take the invalid result as finished
    echo "$0: $data does not validate; its feats.scp was moved to $data/.backup" >&2
    exit 1
  fi
fi
echo "$0: succeeded making fbank features for $name ($num_done utterances)"
