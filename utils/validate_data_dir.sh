#!/usr/bin/env bash
# Checks a Kaldi data directory, with the semantics of Kaldi's
# utils/validate_data_dir.sh: utt2spk/spk2utt consistent, every file sorted
# (LC_ALL=C) with unique keys and no empty lines, per-utterance / per-speaker /
# per-recording files covering exactly the utterances / speakers / recordings,
# sane values (segments, utt2dur, utt2num_frames ...). Every problem is printed
# as file:line: message; exits 1 if there is any.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
no_feats=false
no_wav=false
no_text=false
no_spk_sort=false
non_print=false
# End configuration section.

usage="Usage: $0 [--no-feats] [--no-wav] [--no-text] [--no-spk-sort] [--non-print] <data-dir>
The --no-xxx options mean that xxx is not required (it is still checked when present).
  --no-feats      feats.scp not required ($no_feats)
  --no-wav        wav.scp not required ($no_wav)
  --no-text       text not required ($no_text)
  --no-spk-sort   do not require utt2spk to be sorted by speaker as well as by
                  utterance; by default it must be, which holds when speaker ids
                  are prefixes of utterance ids ($no_spk_sort)
  --non-print     allow non-printable characters in text ($non_print)
e.g.: $0 --no-text --no-feats data/train"

while [ $# -gt 0 ]; do
  case "$1" in
    --no-feats) no_feats=true ;;
    --no-wav) no_wav=true ;;
    --no-text) no_text=true ;;
    --no-spk-sort) no_spk_sort=true ;;
    --non-print) non_print=true ;;
    --help|-h) echo "$usage"; exit 0 ;;
    --*) echo "$0: unknown option $1" >&2; echo "$usage" >&2; exit 1 ;;
    *) break ;;
  esac
  shift
done
if [ $# -ne 1 ]; then
  echo "$usage" >&2
  exit 1
fi
data=$1

. "$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/path.sh"

opts=()
$no_feats && opts+=(--no-feats)
$no_wav && opts+=(--no-wav)
$no_text && opts+=(--no-text)
$no_spk_sort && opts+=(--no-spk-sort)
$non_print && opts+=(--non-print)
python -m pyspk.bin.validate_data_dir ${opts[@]+"${opts[@]}"} "$data"
