#!/usr/bin/env bash
# Copies a data directory with its audio resampled to <rate> Hz in the wav.scp
# pipe (as Kaldi's utils/data/resample_data_dir.sh, into a new dir): an entry
# "cmd |" becomes "cmd | sox -t wav - -t wav -r <rate> - |", a file "f.flac"
# becomes "sox f.flac -t wav -r <rate> - |". Features computed at the old rate
# (feats.scp, vad.scp, utt2num_frames) are not copied. No audio is written.
set -euo pipefail
echo "$0 $*"

root=$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/path.sh"
. "$root/utils/parse_options.sh"

if [ $# -ne 3 ]; then
  cat >&2 <<HELP
Usage: $0 <rate> <src-data-dir> <dest-data-dir>
e.g.: $0 8000 ../../arabic_commands/v1/data/train data/arabic_train_8k
HELP
  exit 1
fi
rate=$1
src=${2%/}
dest=${3%/}

[[ "$rate" =~ ^[1-9][0-9]*$ ]] || { echo "$0: <rate> must be a positive integer (Hz), got '$rate'" >&2; exit 1; }
[ -f "$src/wav.scp" ] || { echo "$0: no such file $src/wav.scp" >&2; exit 1; }
[ "$(cd "$src" && pwd -P)" != "$(mkdir -p "$dest" && cd "$dest" && pwd -P)" ] || \
  { echo "$0: <src-data-dir> and <dest-data-dir> are the same directory ($src)" >&2; exit 1; }

"$root/utils/copy_data_dir.sh" "$src" "$dest" >/dev/null
rm -f "$dest"/feats.scp "$dest"/vad.scp "$dest"/utt2num_frames "$dest"/frame_shift
"$root/utils/filter_wav_scp.sh" "$src/wav.scp" "sox %IN% -t wav -r $rate -" "-t wav -" > "$dest/wav.scp.tmp"
mv "$dest/wav.scp.tmp" "$dest/wav.scp"
"$root/utils/validate_data_dir.sh" --no-feats --no-text "$dest" >/dev/null
echo "$0: $dest holds $(wc -l < "$dest/wav.scp") recordings of $src resampled to $rate Hz in the wav.scp pipe"
