#!/usr/bin/env bash
# Combines data directories, as Kaldi's utils/combine_data.sh. A file is
# combined when every source has it, except utt2uniq (identity where missing)
# and segments (whole-utterance segments, from utt2dur, where missing). Fails on
# a repeated utterance id; a speaker or recording may repeat with the same line.
# Data files of <dest> that are not produced are moved to <dest>/.backup.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
extra_files=   # more per-utterance files to combine, e.g. "utt2foo utt2bar"
skip_fix=false # true: do not run fix_data_dir.sh on the result
# End configuration section.

help_message="Usage: $0 [options] <dest-data-dir> <src-data-dir1> <src-data-dir2> ...
  --extra-files 'f1 f2'   more per-utterance files to combine ('$extra_files')
  --skip-fix true|false   skip fix_data_dir.sh at the end ($skip_fix)
e.g.: $0 data/train_combined data/train data/train_aug"

root=$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/path.sh"
. "$root/utils/parse_options.sh"

if [ $# -lt 2 ]; then
  echo "$help_message" >&2
  exit 1
fi
dest=$1
shift
for dir in "$@"; do
  if [ ! -f "$dir/utt2spk" ]; then
    echo "$0: no such file $dir/utt2spk" >&2
    exit 1
  fi
done

opts=(--extra-files "$extra_files")
$skip_fix && opts+=(--skip-fix)
python -m pyspk.bin.combine_data "${opts[@]}" "$dest" "$@"
echo "$0: combined $# directories into $dest"
