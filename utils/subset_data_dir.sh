#!/usr/bin/env bash
# Writes a subset of a data directory, as Kaldi's utils/subset_data_dir.sh;
# every per-utterance, per-speaker and per-recording file follows the chosen
# utterances, spk2utt is rebuilt.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
mode=even    # set by the options below; none of them combines with another
# End configuration section.

usage="Usage:
  $0 [--speakers|--shortest|--first|--last|--per-spk] <src-dir> <num-utt> <dest-dir>
  $0 --spk-list <speaker-list-file> <src-dir> <dest-dir>
  $0 --utt-list <utterance-list-file> <src-dir> <dest-dir>
By default (mode $mode) selects <num-utt> utterances spread evenly over the sorted list.
  --first      the first <num-utt> utterances
  --last       the last <num-utt> utterances
  --shortest   the <num-utt> shortest utterances (needs utt2dur or utt2num_frames)
  --per-spk    <num-utt> utterances per speaker (evenly spread), or all it has
  --speakers   random whole speakers (fixed seed) until <num-utt> utterances
  --spk-list   the speakers in the first field of <speaker-list-file>
  --utt-list   the utterances in the first field of <utterance-list-file>
e.g.: $0 --utt-list data/train/utt2spk data/train_combined data/train_clean"

case "${1:-}" in
  --first) mode=first; shift ;;
  --last) mode=last; shift ;;
  --shortest) mode=shortest; shift ;;
  --per-spk) mode=per_spk; shift ;;
  --speakers) mode=speakers; shift ;;
  --spk-list) mode=spk_list; shift ;;
  --utt-list) mode=utt_list; shift ;;
  --help|-h) echo "$usage"; exit 0 ;;
  --*) echo "$0: unknown option $1" >&2; echo "$usage" >&2; exit 1 ;;
esac
if [ $# -ne 3 ]; then
  echo "$usage" >&2
  exit 1
fi

. "$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/path.sh"

if [ $mode = spk_list ] || [ $mode = utt_list ]; then
  list=$1; src=$2; dest=$3
  [ -f "$list" ] || { echo "$0: no such file $list" >&2; exit 1; }
  args=(--id-list "$list")
else
  src=$1; num=$2; dest=$3
  if ! [[ "$num" =~ ^[0-9]+$ ]] || [ "$num" -lt 1 ]; then
    echo "$0: <num-utt> must be a positive integer, got '$num'" >&2
    exit 1
  fi
  args=(--num "$num")
fi
[ -f "$src/utt2spk" ] || { echo "$0: no such file $src/utt2spk" >&2; exit 1; }

python -m pyspk.bin.subset_data_dir --mode $mode "${args[@]}" "$src" "$dest"
echo "$0: wrote $dest"
