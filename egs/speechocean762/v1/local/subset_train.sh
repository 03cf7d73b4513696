#!/usr/bin/env bash
# The training subset of the scaling study: the first <num-speakers> speakers of
# <speaker-order> (local/prepare_data.py's fixed, group-balanced order, so that
# the subsets are nested) taken from <src-dir> with every file it has (features,
# VAD), and, when <src-dir>_combined exists (the augmented copies of the
# pipeline's stage 2), <dest-dir>_combined with those speakers' clean utterances
# and copies, so that every size trains on the same features and copies.
# Re-running with the same speakers rewrites nothing.
set -euo pipefail
echo "$0 $*"

recipe=$(cd "$(dirname "$0")/.." && pwd -P)
. "$recipe/path.sh"
. parse_options.sh
. "$recipe/steps/libs/common.sh"  # require_files

if [ $# != 4 ]; then
  cat >&2 <<HELP
Usage: $0 <num-speakers> <speaker-order> <src-dir> <dest-dir>
e.g.: $0 50 data/train_speaker_order data/train data/train_50spk
Writes <dest-dir> (and <dest-dir>_combined when <src-dir>_combined exists).
HELP
  exit 1
fi
num_speakers=$1
order=$2
src=${3%/}
dest=${4%/}

check_positive_ints num_speakers
require_files "$order" "$src/utt2spk"
available=$(wc -l < "$order")
[ "$num_speakers" -le "$available" ] ||
  { echo "$0: $num_speakers speakers asked for, but $order lists $available" >&2; exit 1; }

list=$(mktemp)
trap 'rm -f "$list"' EXIT
head -n "$num_speakers" "$order" | sort > "$list"
if [ -f "$dest/spk2utt" ] && cmp -s "$list" <(cut -d' ' -f1 "$dest/spk2utt") &&
   { [ ! -d "${src}_combined" ] || [ -f "${dest}_combined/utt2spk" ]; }; then
  echo "$0: $dest already holds these $num_speakers speakers; nothing to do"
  exit 0
fi
# Written under temporary names, renamed when complete: a killed run leaves no half-made dir.
rm -rf "$dest.tmp" "${dest}_combined.tmp"
# validate <dir> <its source>: the features are checked when the source has some (after the pipeline's stage 2).
validate() {
  local no_feats=--no-feats
  [ ! -f "$2/feats.scp" ] || no_feats=
  "$recipe"/utils/validate_data_dir.sh --no-text $no_feats "$1"
}
"$recipe"/utils/subset_data_dir.sh --spk-list "$list" "$src" "$dest.tmp"
validate "$dest.tmp" "$src"
if [ -d "${src}_combined" ]; then
  # A copy belongs to the subset when its clean utterance (utt2uniq) does.
  awk 'NR == FNR { keep[$1] = 1; next } ($2 in keep) { print $1 }' \
    "$dest.tmp/utt2spk" "${src}_combined/utt2uniq" > "$list"
  "$recipe"/utils/subset_data_dir.sh --utt-list "$list" "${src}_combined" "${dest}_combined.tmp"
  validate "${dest}_combined.tmp" "${src}_combined"
  rm -rf "${dest}_combined"
  mv "${dest}_combined.tmp" "${dest}_combined"
fi
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "$0: wrote $dest ($(wc -l < "$dest/utt2spk") utterances of $num_speakers speakers)"
