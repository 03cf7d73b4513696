#!/usr/bin/env bash
# Writes <wav.scp> to stdout with every recording passed through a filter
# command in the pipe (Kaldi's extended filenames): the filter is <template>
# with %IN% its input and %ID% the recording id (quoted for the shell). An
# entry "cmd |" becomes "cmd | <template, %IN% = <stdin-input>> |"; a file f
# becomes "<template, %IN% = f> |" (f quoted when it holds spaces). Used by
# utils/resample_data_dir.sh and utils/telephone_data_dir.sh.
set -euo pipefail

if [ $# -ne 3 ]; then
  cat >&2 <<HELP
Usage: $0 <wav.scp> <template> <stdin-input>
e.g.: $0 data/train/wav.scp 'sox %IN% -t wav -r 8000 -' '-t wav -'
HELP
  exit 1
fi
scp=$1
[ -f "$scp" ] || { echo "$0: no such file $scp" >&2; exit 1; }

awk -v template="$2" -v stdin_input="$3" -v src="$scp" '
  function quote(s) { gsub(/\x27/, "\x27\\\x27\x27", s); return "\x27" s "\x27" }
  function fill(t, key, value,    i) {  # every key in t replaced by value (no regex: value is taken as is)
    while ((i = index(t, key)) > 0) t = substr(t, 1, i - 1) value substr(t, i + length(key))
    return t
  }
  NF < 2 { printf "%s:%d: expected <id> <audio>, got \"%s\"\n", src, NR, $0 > "/dev/stderr"; bad = 1; exit 1 }
  {
    id = $1; entry = $0; sub(/^[^ \t]+[ \t]+/, "", entry); sub(/[ \t]+$/, "", entry)
    cmd = fill(template, "%ID%", id ~ /^[A-Za-z0-9_.:+=@,\/-]+$/ ? id : quote(id))
    if (entry ~ /\|$/) print id " " entry " " fill(cmd, "%IN%", stdin_input) " |"
    else print id " " fill(cmd, "%IN%", entry ~ /[ \t]/ ? quote(entry) : entry) " |"
  }
  END { exit bad }' "$scp"
