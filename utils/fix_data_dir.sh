#!/usr/bin/env bash
# Makes a data directory consistent, as Kaldi's utils/fix_data_dir.sh: keeps
# the utterances present in every per-utterance file (utt2spk, text,
# feats.scp, segments, wav.scp, vad.scp, utt2* ...) whose speaker is in every
# per-speaker file and whose recording is in every per-recording file; sorts
# and de-duplicates every file (first line of a key wins); rebuilds spk2utt,
# so speakers without utterances go. Files it changes are first copied to
# <data-dir>/.backup. Re-running on a fixed directory changes nothing.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
utt_extra_files=   # more per-utterance files to filter, e.g. "utt2foo utt2bar"
spk_extra_files=   # more per-speaker files to filter
# End configuration section.

help_message="Usage: $0 [options] <data-dir>
  --utt-extra-files 'f1 f2'   more per-utterance files to filter ('$utt_extra_files')
  --spk-extra-files 'f1 f2'   more per-speaker files to filter ('$spk_extra_files')
e.g.: $0 data/train"

root=$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/path.sh"
. "$root/utils/parse_options.sh"

if [ $# -ne 1 ]; then
  echo "$help_message" >&2
  exit 1
fi
data=$1
if [ ! -f "$data/utt2spk" ]; then
  echo "$0: no such file $data/utt2spk" >&2
  exit 1
fi

python -m pyspk.bin.fix_data_dir --utt-extra-files "$utt_extra_files" --spk-extra-files "$spk_extra_files" "$data"
echo "$0: fixed data directory $data"
