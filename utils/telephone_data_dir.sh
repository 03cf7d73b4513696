#!/usr/bin/env bash
# Copies a data directory with its audio passed through a simulated telephone
# channel in the wav.scp pipe (python -m pyspk.bin.telephone_channel; see
# pyspk/augment/telephone.py): a random handset response, the telephone band at
# 8 kHz, a random level, line noise and a random codec of --codecs, drawn from
# --seed and the recording id, so the dir reads the same every time. Entries
# that are pipes ("cmd |", e.g. ffmpeg decoding) and files alike. The pipes
# name the python that runs this step (path.sh's), so that any reader finds
# pyspk. Features computed from the old audio (feats.scp, vad.scp,
# utt2num_frames) are not copied. No audio is written (steps/convert_audio.sh
# can write it, to pay the channel once).
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
codecs="mulaw alaw gsm amr-nb"   # one drawn per recording; python -m pyspk.bin.telephone_channel --list-codecs
seed=777
# End configuration section.

root=$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/path.sh"
. "$root/utils/parse_options.sh"

if [ $# -ne 2 ]; then
  cat >&2 <<HELP
Usage: $0 [options] <src-data-dir> <dest-data-dir>
  --codecs 'C ...'   codecs, one drawn per recording ('$codecs'); usable here:
                     mulaw alaw, and what sox/ffmpeg provide of gsm amr-nb opus speex codec2 g726
  --seed N           with the recording id, draws each channel ($seed)
e.g.: $0 ../../speechocean762/v1/data/train data/speechocean762_tel
HELP
  exit 1
fi
src=${1%/}
dest=${2%/}

[[ "$seed" =~ ^-?[0-9]+$ ]] || { echo "$0: --seed must be an integer, got '$seed'" >&2; exit 1; }
[ -f "$src/wav.scp" ] || { echo "$0: no such file $src/wav.scp" >&2; exit 1; }
[ "$(cd "$src" && pwd -P)" != "$(mkdir -p "$dest" && cd "$dest" && pwd -P)" ] || \
  { echo "$0: <src-data-dir> and <dest-data-dir> are the same directory ($src)" >&2; exit 1; }
codec_list=$(echo "$codecs" | tr -s ' ' ',' | sed 's/^,//; s/,$//')
python -m pyspk.bin.telephone_channel --check --codecs "$codec_list" || \
  { echo "$0: --codecs '$codecs': see above" >&2; exit 1; }

python=$(printf '%q' "$(command -v python)")

"$root/utils/copy_data_dir.sh" "$src" "$dest" >/dev/null
rm -f "$dest"/feats.scp "$dest"/vad.scp "$dest"/utt2num_frames "$dest"/frame_shift
channel="$python -m pyspk.bin.telephone_channel --seed $seed --codecs $codec_list --utt-id %ID% %IN% -"
"$root/utils/filter_wav_scp.sh" "$src/wav.scp" "$channel" "-" > "$dest/wav.scp.tmp"
mv "$dest/wav.scp.tmp" "$dest/wav.scp"
"$root/utils/validate_data_dir.sh" --no-feats --no-text "$dest" >/dev/null
echo "$0: $dest holds $(wc -l < "$dest/wav.scp") recordings of $src through a simulated telephone channel (8 kHz; codecs $codecs) in the wav.scp pipe"
