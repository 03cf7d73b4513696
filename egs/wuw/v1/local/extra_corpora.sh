#!/usr/bin/env bash
# The other real corpora of ../shared/data as unlabelled training data for
# pooling (run.sh --extra-corpora): <data-root>/<corpus>_all, every speaker of
# the corpus, made by that corpus's own recipe (its local/data.sh, into
# <data-root>/<corpus>_prep) with its train and test parts combined; its trial
# lists are never used. Ids stay the corpus's own: run.sh prefixes each pool
# part with its name, so that speakers of different corpora cannot collide.
# Re-running with the same options prepares nothing again (the recipes' stamps).
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
corpora="arabic_commands speechocean762"
# End configuration section.

recipe=$(cd "$(dirname "$0")/.." && pwd -P)
. "$recipe/path.sh"
. parse_options.sh

if [ $# != 2 ]; then
  cat >&2 <<HELP
Usage: $0 [options] <shared-data-root> <data-root>
e.g.: $0 ../../../../shared/data data
Options:
  --corpora 'NAME ...'   among arabic_commands (Arabic Speech Commands, 16 kHz, in <root>/arabic_speech_commands)
                         and speechocean762 (16 kHz, in <root>/speechocean762) ('$corpora')
HELP
  exit 1
fi
root=$1
data=$2
egs=$(cd "$(dirname "$(readlink -f "$0")")/../../.." && pwd -P)  # the real egs/, through the links of a linked recipe

[ -n "$corpora" ] || { echo "$0: --corpora is empty" >&2; exit 1; }
for name in $corpora; do
  case $name in
    arabic_commands) dir=arabic_speech_commands ;;
    speechocean762) dir=speechocean762 ;;
    *) echo "$0: --corpora: unknown corpus '$name' (known: arabic_commands speechocean762)" >&2; exit 1 ;;
  esac
  "$egs/$name/v1/local/data.sh" "$root/$dir" "$data/${name}_prep"
  utils/combine_data.sh "$data/${name}_all" "$data/${name}_prep/train" "$data/${name}_prep/test" >/dev/null
  utils/validate_data_dir.sh --no-feats --no-text "$data/${name}_all" >/dev/null
  echo "$0: $data/${name}_all: $(wc -l < "$data/${name}_all/utt2spk") utterances of $(wc -l < "$data/${name}_all/spk2utt") speakers"
done
