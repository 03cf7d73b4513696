#!/usr/bin/env bash
# Kaldi-style augmented copies of a data dir, with written audio:
#   <src>_reverb  room reverberation (RIRS_NOISES small/medium rooms, or simulated rooms)
#   <src>_noise   foreground noises one after the other (SNR 15:10:5:0, 1 s apart)
#   <src>_music   one background music (SNR 15:10:8:5)
#   <src>_babble  3-7 background speakers (SNR 20:17:15:13)
# Utterance ids are <utt>-<type> (same speaker), with utt2uniq pointing back
# to the clean utterance. With --combine true, <src>_combined holds the clean
# and all augmented utterances: the dir a trainer that picks a copy per crop
# consumes. Without --musan-dir / --rir-dir (offline), generated noise,
# synthetic music, babble summed from other speakers of <src> and simulated
# rooms take their place. Output is deterministic under --seed for any --nj;
# re-running keeps audio already made with the same options, and a finished run
# with the same options and source does nothing.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
nj=4
cmd=run.pl
types="reverb noise music babble"
seed=777
rir_dir=
rir_sets=smallroom,mediumroom
musan_dir=
fg_snrs=15:10:5:0
fg_interval=1
music_snrs=15:10:8:5
num_music=1
babble_snrs=20:17:15:13
num_babble_speakers=3:4:5:6:7
audio_format=wav
max_fail_fraction=0.05
combine=true
# End configuration section.

help_message="Usage: $0 [options] <src-data-dir> <audio-dir>
Writes <src-data-dir>_<type> for each type and, with --combine true, <src-data-dir>_combined.
Audio goes to <audio-dir>/<type>/<speaker>/<utt>-<type>.<format>; logs (prepare, augment.<n>, merge) to <audio-dir>/log/.
e.g.: $0 --nj 8 --rir-dir RIRS_NOISES --musan-dir musan data/train exp/augment/train
Options:
  --nj N                        parallel jobs per type ($nj)
  --cmd CMD                     job launcher ($cmd)
  --types \"T ...\"               any of reverb noise music babble ($types)
  --seed N                      random seed ($seed)
  --rir-dir DIR                 RIRS_NOISES directory; empty: simulated rooms ($rir_dir)
  --rir-sets LIST               comma-separated smallroom,mediumroom,largeroom,real ($rir_sets)
  --musan-dir DIR               MUSAN directory; empty: generated sources ($musan_dir)
  --fg-snrs LIST                noise SNRs in dB ($fg_snrs)
  --fg-interval SEC             silence between foreground noises ($fg_interval)
  --music-snrs LIST             music SNRs in dB ($music_snrs)
  --num-music LIST              music sources per utterance ($num_music)
  --babble-snrs LIST            SNR of each babble speaker in dB ($babble_snrs)
  --num-babble-speakers LIST    babble speakers per utterance ($num_babble_speakers)
  --audio-format wav|flac       flac halves the disk space; wav.scp then pipes through sox ($audio_format)
  --max-fail-fraction F         fail if more utterances than this fraction fail ($max_fail_fraction)
  --combine true|false          write <src-data-dir>_combined (clean + augmented) ($combine)"

. "$(dirname "$0")/../path.sh"
. "$(dirname "$0")/libs/common.sh"
. "$(dirname "$0")/../utils/parse_options.sh"

if [ $# -ne 2 ]; then
  printf "%s\n" "$help_message" 1>&2
  exit 1
fi
src=${1%/}
audio_dir=$2

require_files "$src/wav.scp" "$src/utt2spk"
[ -z "$rir_dir" ] || [ -d "$rir_dir" ] || { echo "$0: --rir-dir $rir_dir: no such directory" 1>&2; exit 1; }
[ -z "$musan_dir" ] || [ -d "$musan_dir" ] || { echo "$0: --musan-dir $musan_dir: no such directory" 1>&2; exit 1; }
read -r -a type_list <<< "$types"

opts=(--types "$types" --seed "$seed" --audio-format "$audio_format" --rir-sets "$rir_sets" \
      --fg-snrs "$fg_snrs" --fg-interval "$fg_interval" --music-snrs "$music_snrs" --num-music "$num_music" \
      --babble-snrs "$babble_snrs" --num-babble-speakers "$num_babble_speakers")
[ -z "$rir_dir" ] || opts+=(--rir-dir "$rir_dir")
[ -z "$musan_dir" ] || opts+=(--musan-dir "$musan_dir")
# A finished run with the same options and source is not redone (nothing rewritten).
stamp=$audio_dir/.done
signature="$(cat "$src/wav.scp" "$src/utt2spk" | cksum) ${opts[*]} combine=$combine"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$signature" ]; then
  echo "$0: the augmented copies of $src are complete for these options ($stamp); nothing to do"
  exit 0
fi
rm -f "$stamp"
logdir=$audio_dir/log
mkdir -p "$logdir"
run_or_die "$cmd" "$logdir/prepare.log" "preparing the augmentation" \
  python -m pyspk.bin.augment_data_dir prepare "${opts[@]}" "$src" "$audio_dir"

# Each job does its shard of every type.
run_jobs_or_die "$cmd" "$nj" "$logdir/augment.JOB.log" augmentation \
  python -m pyspk.bin.augment_data_dir run --types "$types" --job JOB --num-jobs "$nj" "$src" "$audio_dir"
run_or_die "$cmd" "$logdir/merge.log" "merging the augmented copies" \
  python -m pyspk.bin.augment_data_dir merge --types "$types" --num-jobs "$nj" \
    --max-fail-fraction "$max_fail_fraction" "$src" "$audio_dir" "$src"
# The per-type counts ("Done N utterances, failed M (<type>, all jobs)").
grep -o "Done [0-9]* utterances, failed [0-9]* (.*)" "$logdir/merge.log" | sed "s|^|$0: |"

outputs=()
for type in "${type_list[@]}"; do
  utils/validate_data_dir.sh --no-text --no-feats "${src}_$type"
  outputs+=("${src}_$type")
done

if $combine; then
  utils/combine_data.sh "${src}_combined" "$src" "${outputs[@]}"
  utils/validate_data_dir.sh --no-text --no-feats "${src}_combined"
  outputs+=("${src}_combined")
fi
echo "$signature" > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
echo "$0: made augmented data dirs: ${outputs[*]}"
