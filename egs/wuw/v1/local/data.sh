#!/usr/bin/env bash
# Data preparation of the telephone recipe: Kaldi data dirs <data-root>/train,
# <data-root>/train_named and <data-root>/test with the trial lists
# test/trials_crosscall and test/trials, from WUW Corpus II
# (<corpus-root>/utts.tsv and calls/; see local/prepare_data.py for the
# utterances, the split and the trials). wav.scp decodes the headerless 8 kHz
# mu-law with sox pipes, so nothing is copied. Re-running with the same options
# rewrites nothing.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
test_multicall=13         # held-out named speakers with several calls (every other one by calls)
test_singlecall=12        # held-out named speakers with one call
num_trials=30000
max_speaker_share=0.2     # most targets of a list one speaker may give
seed=777
# End configuration section.

recipe=$(cd "$(dirname "$0")/.." && pwd -P)
. "$recipe/path.sh"
. parse_options.sh

if [ $# != 2 ]; then
  cat >&2 <<HELP
Usage: $0 [options] <corpus-root> <data-root>
e.g.: $0 ../../../../shared/data/wuw_corpus_ii data
Options:
  --test-multicall N       held-out named speakers with several calls ($test_multicall)
  --test-singlecall N      held-out named speakers with one call ($test_singlecall)
  --num-trials N           trials in each list, at most ($num_trials)
  --max-speaker-share F    most targets of a list one speaker may give ($max_speaker_share)
  --seed N                 trial sampling ($seed)
HELP
  exit 1
fi
corpus=$1
data=$2

[ -f "$corpus/utts.tsv" ] || { echo "$0: $corpus/utts.tsv: no such file (expected the WUW Corpus II layout <root>/utts.tsv, <root>/calls/; relative paths are taken from $PWD). The corpus: WUW Corpus II, real 8 kHz telephone speech (V. Kepuska, doi 10.5772/16242), CC BY-SA 4.0, in the project's shared files ../shared/data/wuw_corpus_ii" >&2; exit 1; }
command -v sox >/dev/null || { echo "$0: sox is needed for the wav.scp pipes (tools/install.sh installs it)" >&2; exit 1; }

opts="--test-multicall $test_multicall --test-singlecall $test_singlecall --num-trials $num_trials --max-speaker-share $max_speaker_share --seed $seed"
stamp=$data/.wuw_prepared
signature="$(cd "$corpus" && pwd -P) $(cksum < "$corpus/utts.tsv") $opts"
# (a dir prepared before utt2phonetype was written is prepared again)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$signature" ] && [ -f "$data/test/utt2phonetype" ]; then
  echo "$0: $data/train, $data/train_named and $data/test are already prepared with these options; nothing to do"
  exit 0
fi
rm -f "$stamp"
python "$recipe/local/prepare_data.py" $opts "$corpus" "$data"
for part in train train_named test; do
  "$recipe/utils/validate_data_dir.sh" --no-feats --no-text "$data/$part"
done
echo "$signature" > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
echo "$0: prepared $data/train, $data/train_named, $data/test and the trial lists $data/test/trials{_crosscall,}"
