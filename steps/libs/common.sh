# shellcheck shell=bash
# Helpers shared by the steps and recipes, written once. Source it, don't run it:
#   . "$(dirname "$0")/libs/common.sh"     (a step)
#   . steps/libs/common.sh                 (a recipe's run.sh, from its directory)
# Messages are prefixed with the calling script's $0; the checks and launchers
# exit the calling script with status 1 on failure, as inline code would.

# log <message>...: "<date> <time> (<file>:<line>:<function>) <message>" on stdout.
log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') ($fname:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

# require_files <file>...: exits unless each is an existing regular file.
require_files() {
  local f
  for f in "$@"; do
    [ -f "$f" ] || { echo "$0: no such file $f" >&2; exit 1; }
  done
}

# require_pyspk: exits unless the python on PATH imports pyspk and torch, saying how to get them
# (a fresh clone has no tools/venv until tools/install.sh, every recipe's stage 0, makes it).
require_pyspk() {
  python -c 'import torch, pyspk' >/dev/null 2>&1 || {
    echo "$0: pyspk is not installed for $(command -v python || echo "'python' (none on PATH)"): run" \
      "tools/install.sh in the repository root, or the recipe from stage 0 (./run.sh), which does" >&2
    exit 1
  }
}

# check_positive_ints <var-name>...: exits unless each named variable holds a
# positive integer (the message names the option, --var-name).
check_positive_ints() {
  local opt
  for opt in "$@"; do
    [[ "${!opt}" =~ ^[1-9][0-9]*$ ]] || { echo "$0: --${opt//_/-} must be a positive integer, got '${!opt}'" >&2; exit 1; }
  done
}

# check_fractions <var-name>...: exits unless each named variable holds a
# number in [0, 1].
check_fractions() {
  local opt
  for opt in "$@"; do
    [[ "${!opt}" =~ ^(0|1|0?\.[0-9]+|1\.0*)$ ]] || { echo "$0: --${opt//_/-} must be in [0, 1], got '${!opt}'" >&2; exit 1; }
  done
}

# run_or_die <cmd> <log> <what> <command...>
# Runs <command> as "$cmd <log> <command...>" (<cmd> is split into words, e.g.
# "queue.pl --gpu 1"); on failure prints "<what> failed" and the end of <log>
# and exits 1. When $launch_node_rank is set and not 0 (a node other than the
# first of a multi-node training), <log> becomes <log without .log>.node<rank>.log.
run_or_die() {
  local run_cmd=$1 log=$2 what=$3
  shift 3
  [ "${launch_node_rank:-0}" == 0 ] || log=${log%.log}.node$launch_node_rank.log
  if ! $run_cmd "$log" "$@"; then
    show_log_end "$what" "$log"
    exit 1
  fi
}

# show_log_end <what> <log>: says on stderr that <what> failed, with the last
# lines of <log>.
show_log_end() {
  echo "$0: $1 failed; the end of $2:" >&2
  tail -n 20 "$2" >&2
}

# run_jobs_or_die <cmd> <nj> <log> <what> <command...>
# Runs the job array "$cmd JOB=1:<nj> <log> <command...>" (<log> and <command>
# hold the literal JOB, replaced by each job's number); on failure shows the
# failed jobs (show_failed_jobs) and exits 1.
run_jobs_or_die() {
  local run_cmd=$1 nj=$2 log=$3 what=$4
  shift 4
  if ! $run_cmd JOB=1:"$nj" "$log" "$@"; then
    show_failed_jobs "$nj" "$log" "$what"
    exit 1
  fi
}

# show_failed_jobs <nj> <log> <what>
# For the job array whose logs are <log> with JOB replaced by 1..<nj>: names
# the jobs whose log run.pl (queue.pl, slurm.pl) did not end with code 0, and
# prints the end of the first such log.
show_failed_jobs() {
  local nj=$1 log=$2 what=$3 n job_log failed=() first=
  for n in $(seq "$nj"); do
    job_log=${log//JOB/$n}
    if ! grep -qs "^# Ended (code 0)" "$job_log"; then
      failed+=("$n")
      [ -n "$first" ] || first=$job_log
    fi
  done
  if [ -z "$first" ]; then
    echo "$0: $what failed, though every job log ${log//JOB/*} ends with code 0" >&2
    return 0
  fi
  if [ ${#failed[@]} -gt 1 ]; then
    echo "$0: $what jobs ${failed[*]} of $nj failed (logs: ${log//JOB/*})" >&2
  fi
  if [ -f "$first" ]; then
    show_log_end "$what job ${failed[0]}" "$first"
  else
    echo "$0: $what job ${failed[0]} failed without writing its log $first" >&2
  fi
}
