#!/usr/bin/env bash
# Synthesise the offline demo corpus with espeak-ng (no download needed):
# pseudo-speakers (language x voice variant x pitch/speed/formant shift)
# reading random pseudo-words through random channels (EQ, noise, reverb),
# 16 kHz mono wavs under <corpus-dir>/wav, speaker-disjoint Kaldi data dirs
# <data-root>/train and <data-root>/test (wav.scp utt2spk spk2utt utt2lang
# spk2gender) and <data-root>/test/trials. Deterministic given the options:
# the same options give the same audio, whatever --nj.
# Re-running is safe: finished wavs are kept, and when everything is in place
# for the same options the script only says so.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
cmd=run.pl
nj=2
num_speakers=200
test_speakers=40
utts_per_speaker=20
seed=777
min_sec=2.0
max_sec=8.0
num_trials=12000
# End configuration section.

root=$(cd "$(dirname "$0")/.." && pwd -P)
. "$root/path.sh"
. "$root/steps/libs/common.sh"
. "$root/utils/parse_options.sh"

if [ $# != 2 ]; then
  cat >&2 <<EOF
Usage: $0 [options] <corpus-dir> <data-root>
e.g.: $0 --nj 2 corpus data
Options:
  --cmd CMD               job launcher ($cmd)
  --nj N                  parallel synthesis jobs ($nj)
  --num-speakers N        speakers in all ($num_speakers)
  --test-speakers N       of which in data/test, the rest in data/train ($test_speakers)
  --utts-per-speaker N    ($utts_per_speaker)
  --seed N                corpus seed ($seed)
  --min-sec S             shortest utterance ($min_sec)
  --max-sec S             longest utterance ($max_sec)
  --num-trials N          trials in data/test/trials, half target when possible ($num_trials)
EOF
  exit 1
fi

corpus=$1
data=$2

command -v espeak-ng >/dev/null 2>&1 || { echo "$0: espeak-ng not found (apt-get install espeak-ng)" >&2; exit 1; }

opts="--num-speakers $num_speakers --test-speakers $test_speakers --utts-per-speaker $utts_per_speaker"
opts="$opts --seed $seed --min-sec $min_sec --max-sec $max_sec"
mkdir -p "$corpus/log" "$data"
data_abs=$(cd "$data" && pwd -P)
done_stamp="$opts --num-trials $num_trials data=$data_abs"

complete=true
for f in train/wav.scp train/utt2spk train/spk2utt train/utt2lang train/spk2gender \
         test/wav.scp test/utt2spk test/spk2utt test/utt2lang test/spk2gender test/trials; do
  [ -f "$data/$f" ] || complete=false
done
if $complete && [ -f "$corpus/.done" ] && [ "$(cat "$corpus/.done")" = "$done_stamp" ]; then
  echo "$0: $data/train, $data/test and $data/test/trials are complete for these options; nothing to do"
  exit 0
fi

# The wavs on disk must come from the same options, or the data dirs would mix corpora.
if [ -f "$corpus/corpus.opts" ]; then
  if [ "$(cat "$corpus/corpus.opts")" != "$opts" ]; then
    echo "$0: $corpus was made with other options ($(cat "$corpus/corpus.opts"));" \
      "remove it or choose another corpus dir" >&2
    exit 1
  fi
else
  echo "$opts" > "$corpus/.corpus.opts.tmp" && mv "$corpus/.corpus.opts.tmp" "$corpus/corpus.opts"
fi
rm -f "$corpus/.done"

total=$((num_speakers * utts_per_speaker))
echo "$0: synthesising $total utterances with $nj jobs (logs: $corpus/log/synth.*.log)"
start=$(date +%s)
$cmd JOB=1:$nj "$corpus/log/synth.JOB.log" \
  python "$root/local/synth_corpus.py" synth $opts --job JOB --nj $nj "$corpus" &
synth_pid=$!

# Progress: count the finished wavs while the jobs run.
last_report=$start
while kill -0 $synth_pid 2>/dev/null; do
  sleep 1
  count=$( { find "$corpus/wav" -name '*.wav' 2>/dev/null || true; } | wc -l)
  now=$(date +%s)
  if [ -t 2 ]; then
    filled=$((count * 40 / total))
    printf '\r%s: [%-40s] %d/%d wavs, %ds' "$0" "$(printf '%*s' $filled '' | tr ' ' '#')" \
      $count $total $((now - start)) >&2
  elif [ $((now - last_report)) -ge 30 ]; then
    echo "$0: $count/$total wavs after $((now - start))s" >&2
    last_report=$now
  fi
done
[ -t 2 ] && echo >&2
if ! wait $synth_pid; then
  show_failed_jobs "$nj" "$corpus/log/synth.JOB.log" synthesis
  exit 1
fi
echo "$0: synthesis took $(( $(date +%s) - start ))s"

python "$root/local/synth_corpus.py" datadirs $opts "$corpus" "$data"
python "$root/local/make_trials.py" --num-trials $num_trials --seed $seed "$data/test" "$data/test/trials"

echo "$done_stamp" > "$corpus/.done.tmp" && mv "$corpus/.done.tmp" "$corpus/.done"
echo "$0: done: $data/train ($(wc -l < "$data/train/utt2spk") utts)," \
  "$data/test ($(wc -l < "$data/test/utt2spk") utts), $(wc -l < "$data/test/trials") trials; audio in $corpus"
