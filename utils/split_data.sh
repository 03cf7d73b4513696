#!/usr/bin/env bash
# Splits a data directory into N parts for parallel jobs, as Kaldi's
# utils/split_data.sh: <data>/split<N>/{1..N}, or <data>/split<N>utt/{1..N}
# with --per-utt. Without --per-utt, all utterances of a speaker go to the same
# part. Parts are contiguous in sorted order with near-equal utterance counts;
# every per-utterance, per-speaker and per-recording file (segments, wav.scp
# ...) is split consistently. Does nothing if the parts are newer than the
# source files.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
per_utt=false
# End configuration section.

usage="Usage: $0 [--per-utt] <data-dir> <num-to-split>
  --per-utt   split by utterance, speakers may straddle parts ($per_utt)
e.g.: $0 data/train 4"

case "${1:-}" in
  --per-utt) per_utt=true; shift ;;
  --help|-h) echo "$usage"; exit 0 ;;
  --*) echo "$0: unknown option $1" >&2; echo "$usage" >&2; exit 1 ;;
esac
if [ $# -ne 2 ]; then
  echo "$usage" >&2
  exit 1
fi
data=$1
numsplit=$2
if ! [[ "$numsplit" =~ ^[0-9]+$ ]] || [ "$numsplit" -lt 1 ]; then
  echo "$0: invalid num-to-split argument '$numsplit'" >&2
  exit 1
fi
if [ ! -f "$data/utt2spk" ]; then
  echo "$0: no such file $data/utt2spk" >&2
  exit 1
fi

. "$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/path.sh"

opts=()
$per_utt && opts+=(--per-utt)
python -m pyspk.bin.split_data ${opts[@]+"${opts[@]}"} "$data" "$numsplit"
echo "$0: $data/split$numsplit$($per_utt && echo utt || true) is up to date"
