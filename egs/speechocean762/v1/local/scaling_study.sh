#!/usr/bin/env bash
# The scaling study: EER against the number of unlabelled training speakers.
# For each size N of --sizes, ./run.sh --train-speakers N (the first N speakers
# of data/train_speaker_order, nested subsets; 0: all of data/train) runs the
# fbank baseline, SSL, the pseudo-label rounds and the supervised upper bound on
# the true labels of the same N speakers, all against the same test set, each
# size in its own data/train_<N>spk and exp_<N>spk (0: data/train, exp). Then it
# collects every size's result lines into <out>/results.txt (each line prefixed
# train_speakers=<speakers>) and plots EER against the training speakers for
# each method (local/plot_scaling.py: <out>/scaling[_<list>].png, and the
# relative gain of each round and of the bound over SSL in <out>/gains[_<list>].txt).
# A size already finished is not redone (the pipeline's stages are idempotent).
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
sizes="25 50 100 0"       # training speakers per run, smallest first; 0: all of data/train
run_opts=                 # further options of every ./run.sh call, e.g. "--nj 1 --device cpu"
out=exp_scaling
ssl_system=dino_cosine    # the SSL system the gains are measured against (the config's name)
# End configuration section.

recipe=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$recipe"
. ./path.sh
. parse_options.sh
. steps/libs/common.sh  # log

if [ $# != 0 ]; then
  cat >&2 <<HELP
Usage: $0 [options]   (from anywhere; it runs in the recipe directory $recipe)
e.g.: $0 --sizes "25 50 100 0"
Options:
  --sizes 'N ...'      training speakers per run, 0 for all ($sizes)
  --run-opts 'OPTS'    further options of every ./run.sh call ($run_opts)
  --out DIR            collected results and plots ($out)
  --ssl-system NAME    the SSL system the gains are measured against ($ssl_system)
HELP
  exit 1
fi
for n in $sizes; do
  [[ $n =~ ^[0-9]+$ ]] || { log "ERROR: --sizes must hold non-negative integers, got '$n'" >&2; exit 1; }
done
[ -n "$sizes" ] || { log "ERROR: --sizes is empty" >&2; exit 1; }

mkdir -p "$out"
collected=$out/results.txt.tmp
: > "$collected"
for n in $sizes; do
  log "Training size $n (0: all training speakers)"
  # shellcheck disable=SC2086  # run_opts are words
  ./run.sh --stage 1 --train-speakers "$n" $run_opts
  train_set=train exp=exp
  [ "$n" = 0 ] || { train_set=train_${n}spk; exp=exp_${n}spk; }
  require_files "data/$train_set/spk2utt" "$exp/results.txt"
  speakers=$(wc -l < "data/$train_set/spk2utt")
  sed "s/^/train_speakers=$speakers /" "$exp/results.txt" >> "$collected"
done
mv "$collected" "$out/results.txt"
log "Collected the result lines of sizes $sizes in $out/results.txt"
for list in "" hard; do
  python local/plot_scaling.py --list "$list" --ssl-system "$ssl_system" \
    --gains "$out/gains${list:+_$list}.txt" "$out/results.txt" "$out/scaling${list:+_$list}.png"
done
log "Done: $out/scaling.png, $out/scaling_hard.png, $out/gains.txt, $out/gains_hard.txt"
