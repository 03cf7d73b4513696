#!/usr/bin/env bash
# Copies a data directory, as Kaldi's utils/copy_data_dir.sh, optionally
# renaming utterances (--utt-prefix/--utt-suffix) and speakers
# (--spk-prefix/--spk-suffix) in every file; values (wav.scp, feats.scp ...)
# are kept. When utterances are renamed and the source has no utt2uniq, one is
# written (new id -> old id). Data files of <dest> that the source lacks are
# moved to <dest>/.backup. The copy is then validated.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
utt_prefix=
utt_suffix=
spk_prefix=
spk_suffix=
validate_opts=   # extra options to validate_data_dir.sh (rarely needed)
# End configuration section.

help_message="Usage: $0 [options] <src-data-dir> <dest-data-dir>
  --utt-prefix P      prefix for utterance ids ('$utt_prefix')
  --utt-suffix S      suffix for utterance ids ('$utt_suffix')
  --spk-prefix P      prefix for speaker ids ('$spk_prefix')
  --spk-suffix S      suffix for speaker ids ('$spk_suffix')
  --validate-opts O   options for validate_data_dir.sh ('$validate_opts')
Use the same prefix for utterances and speakers, so that utt2spk stays sorted by speaker.
e.g.: $0 --utt-prefix rev1- --spk-prefix rev1- data/train data/train_rev1"

root=$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/path.sh"
. "$root/utils/parse_options.sh"

if [ $# -ne 2 ]; then
  echo "$help_message" >&2
  exit 1
fi
src=$1
dest=$2
if [ ! -f "$src/utt2spk" ]; then
  echo "$0: no such file $src/utt2spk" >&2
  exit 1
fi

# "--opt=value": a value such as "-reverb" (Kaldi's recipes) must not read as an option.
python -m pyspk.bin.copy_data_dir --utt-prefix="$utt_prefix" --utt-suffix="$utt_suffix" \
  --spk-prefix="$spk_prefix" --spk-suffix="$spk_suffix" "$src" "$dest"

[ -f "$src/feats.scp" ] || validate_opts="$validate_opts --no-feats"
[ -f "$src/text" ] || validate_opts="$validate_opts --no-text"
[ -f "$src/wav.scp" ] || validate_opts="$validate_opts --no-wav"
# shellcheck disable=SC2086  # validate_opts is a list of options
"$root/utils/validate_data_dir.sh" $validate_opts "$dest"
echo "$0: copied $src to $dest"
