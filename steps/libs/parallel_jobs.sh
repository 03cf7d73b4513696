# shellcheck shell=bash
# Shared bookkeeping of steps that fan out "$cmd JOB=1:$nj" jobs writing
# <prefix><n>.scp parts and ending their logs with "Done N utterances, failed
# M" (steps/make_fbank.sh, steps/compute_vad_decision.sh). Source it, don't run
# it:
#   . "$(dirname "$0")/libs/parallel_jobs.sh"
# The functions print messages prefixed with the calling step's $0 and exit
# the step on errors, as the steps themselves would.

# scp_arks_exist <scp>
# True when every ark file that <scp> points to exists.
scp_arks_exist() {
  local ark
  while read -r ark; do
    [ -f "$ark" ] || return 1
  done < <(awk '{sub(/:[0-9]+$/, "", $2); print $2}' "$1" | sort -u)
}

# sum_job_counts <nj> <log-prefix> <log-suffix> <max-fail-fraction> <input>
# Sums the jobs' last "Done N utterances, failed M" lines into num_done,
# num_failed and total, and sets first_failed_log (empty when none failed).
# Exits 1 when a log has no such line, when there were no utterances (in
# <input>), or when more than <max-fail-fraction> of them failed.
sum_job_counts() {
  local nj=$1 prefix=$2 suffix=$3 max_fraction=$4 input=$5 n log counts done_n failed_n
  num_done=0; num_failed=0; first_failed_log=
  for n in $(seq "$nj"); do
    log=$prefix$n$suffix
    counts=$(grep -o "Done [0-9]* utterances, failed [0-9]*" "$log" | tail -n 1 | awk '{print $2, $5}')
    [ -n "$counts" ] || { echo "$0: no 'Done ... failed ...' line in $log" >&2; exit 1; }
    read -r done_n failed_n <<< "$counts"
    num_done=$((num_done + done_n)); num_failed=$((num_failed + failed_n))
    if [ "$failed_n" -gt 0 ] && [ -z "$first_failed_log" ]; then first_failed_log=$log; fi
  done
  total=$((num_done + num_failed))
  [ "$total" -gt 0 ] || { echo "$0: no utterances in $input" >&2; exit 1; }
  if awk -v f="$num_failed" -v t="$total" -v m="$max_fraction" 'BEGIN { exit !(f > m * t) }'; then
    echo "$0: $num_failed of $total utterances failed, more than --max-fail-fraction $max_fraction;" \
         "see $first_failed_log" >&2
    exit 1
  fi
}

# merge_parts <nj> <out> <part-prefix> <part-suffix>
# Writes the C-sorted concatenation of <part-prefix><n><part-suffix>,
# n = 1..<nj>, to <out> in one rename.
merge_parts() {
  local nj=$1 out=$2 prefix=$3 suffix=$4 files=() n
  for n in $(seq "$nj"); do files+=("$prefix$n$suffix"); done
  sort "${files[@]}" > "$out.tmp"
  mv "$out.tmp" "$out"
}
