#!/usr/bin/env bash
# Data preparation of the speechocean762 recipe: Kaldi data dirs <data-root>/train
# and <data-root>/test, the trial lists test/trials and test/trials_hard, and
# <data-root>/train_speaker_order (the fixed order of --train-speakers), from
# <corpus-root>/utts.tsv and audio/ (see local/prepare_data.py for the split and
# the trials). wav.scp decodes the Opus files with ffmpeg pipes, so nothing is
# copied. Re-running with the same options rewrites nothing.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
test_speakers=48          # held out, the same number per age group x gender
num_trials=50000          # trials in each list
seed=777
# End configuration section.

recipe=$(cd "$(dirname "$0")/.." && pwd -P)
. "$recipe/path.sh"
. parse_options.sh

if [ $# != 2 ]; then
  cat >&2 <<HELP
Usage: $0 [options] <corpus-root> <data-root>
e.g.: $0 ../../../../shared/data/speechocean762 data
Options:
  --test-speakers N   held-out speakers, a multiple of 4: as many per age group x gender ($test_speakers)
  --num-trials N      trials in each list ($num_trials)
  --seed N            split, training order and trial sampling ($seed)
HELP
  exit 1
fi
corpus=$1
data=$2

[ -f "$corpus/utts.tsv" ] || { echo "$0: $corpus/utts.tsv: no such file (expected the speechocean762 layout <root>/utts.tsv, <root>/audio/<speaker>/<utt>.opus; relative paths are taken from $PWD). The corpus: speechocean762 (Zhang et al., Interspeech 2021; GitHub jimbozhang/speechocean762), free for commercial and non-commercial use, in the project's shared files ../shared/data/speechocean762" >&2; exit 1; }
command -v ffmpeg >/dev/null || { echo "$0: ffmpeg is needed for the wav.scp pipes (tools/install.sh installs it)" >&2; exit 1; }

opts="--test-speakers $test_speakers --num-trials $num_trials --seed $seed"
stamp=$data/.speechocean762_prepared
signature="$(cd "$corpus" && pwd -P) $(cksum < "$corpus/utts.tsv") $opts"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$signature" ]; then
  echo "$0: $data/train and $data/test are already prepared with these options; nothing to do"
  exit 0
fi
rm -f "$stamp"
# shellcheck disable=SC2086  # opts are words
python "$recipe/local/prepare_data.py" $opts "$corpus" "$data"
for part in train test; do
  "$recipe/utils/validate_data_dir.sh" --no-feats --no-text "$data/$part"
done
echo "$signature" > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
echo "$0: prepared $data/train, $data/test, the trial lists $data/test/trials{,_hard} and $data/train_speaker_order"
