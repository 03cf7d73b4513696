#!/usr/bin/env bash
# Data preparation of the real-speech recipe: Kaldi data dirs <data-root>/train
# and <data-root>/test, cross-session trials <data-root>/test/trials, from the
# Arabic Speech Commands layout <corpus-root>/dataset/<keyword>/<spk>_NO_<round>.flac
# (see local/prepare_data.py). wav.scp joins the keywords with sox pipes, so
# nothing is copied. Re-running with the same options rewrites nothing.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
test_speakers=8
keywords_per_utt=4
speakers=0                # use only the first N speakers (0: all), e.g. for a quick test
rounds=0                  # use only the first N rounds (0: all)
num_trials=30000
seed=777
# End configuration section.

recipe=$(cd "$(dirname "$0")/.." && pwd -P)
. "$recipe/path.sh"
. parse_options.sh

if [ $# != 2 ]; then
  cat >&2 <<HELP
Usage: $0 [options] <corpus-root> <data-root>
e.g.: $0 ../../../../shared/data/arabic_speech_commands data
Options:
  --test-speakers N      held-out speakers, the last ones by id ($test_speakers)
  --keywords-per-utt N   keywords joined per utterance ($keywords_per_utt)
  --speakers N           use only the first N speakers, 0 for all ($speakers)
  --rounds N             use only the first N rounds (sessions), 0 for all ($rounds)
  --num-trials N         trials in <data-root>/test/trials ($num_trials)
  --seed N               keyword order and trial sampling ($seed)
HELP
  exit 1
fi
corpus=$1
data=$2

[ -d "$corpus/dataset" ] || { echo "$0: $corpus/dataset: no such directory (expected the Arabic Speech Commands layout <root>/dataset/<keyword>/<spk>_NO_<round>.flac; relative paths are taken from $PWD). The corpus: Arabic Speech Commands (GitHub abdulkaderghandoura/arabic-speech-commands-dataset), CC BY 4.0, in the project's shared files ../shared/data/arabic_speech_commands" >&2; exit 1; }
command -v sox >/dev/null || { echo "$0: sox is needed for the wav.scp pipes (tools/install.sh installs it)" >&2; exit 1; }

opts="--test-speakers $test_speakers --keywords-per-utt $keywords_per_utt --speakers $speakers --rounds $rounds --num-trials $num_trials --seed $seed"
stamp=$data/.arabic_commands_prepared
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(cd "$corpus" && pwd -P) $opts" ]; then
  echo "$0: $data/train and $data/test are already prepared with these options; nothing to do"
  exit 0
fi
rm -f "$stamp"
python "$recipe/local/prepare_data.py" $opts "$corpus" "$data"
for part in train test; do
  "$recipe/utils/validate_data_dir.sh" --no-feats --no-text "$data/$part"
done
echo "$(cd "$corpus" && pwd -P) $opts" > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
echo "$0: prepared $data/train, $data/test and $data/test/trials"
