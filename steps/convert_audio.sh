#!/usr/bin/env bash
# Converts the audio of a data dir to one 16-bit flac (or wav) file per
# utterance, so that training from raw audio (data.source: wav) seeks in files
# instead of decoding pipes such as VoxCeleb2's "ffmpeg ... m4a |" per item.
# Reads wav.scp (paths or "command |") and segments when present; writes
# <audio-dir>/<speaker>/<utt>.<format> with the samples unchanged, and the data
# dir <dest-data-dir>: wav.scp pointing to those files (plain paths, which
# pyspk reads through libsndfile), utt2dur, and the source's other files
# except those of recordings (segments, reco2*) and of features (feats.scp,
# vad.scp, utt2num_frames, cmvn.scp: to be computed for the new dir). One file
# per utterance leaves no segments, the simplest dir for the crop reader.
#
# Utterances that fail are logged by id (<audio-dir>/log/convert.<n>.log) and
# left out of <dest-data-dir>; the script fails if more than
# --max-fail-fraction of them fail. Files already converted are kept (they only
# appear by rename once complete), so a killed run resumes where it stopped; a
# finished run for the same source and format does nothing. An existing file is
# not compared with its source: after changing the audio of an utterance id,
# remove <audio-dir> (or the file) to convert it again.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
nj=4
cmd=run.pl
format=flac
max_fail_fraction=0.05
# End configuration section.

help_message="Usage: $0 [options] <src-data-dir> <dest-data-dir> <audio-dir>
e.g.: $0 --nj 40 --cmd \"\$train_cmd\" data/voxceleb2_dev data/voxceleb2_dev_flac flac/voxceleb2_dev
Options:
  --nj <n>                      # number of parallel jobs (default: $nj)
  --cmd <run.pl|queue.pl ...>   # how to run the jobs (default: $cmd)
  --format <flac|wav>           # output format; flac takes about half the space of wav (default: $format)
  --max-fail-fraction <f>       # fail if more than this fraction of utterances fail (default: $max_fail_fraction)"

. "$(dirname "$0")/../path.sh"
. "$(dirname "$0")/libs/common.sh"
. "$(dirname "$0")/libs/parallel_jobs.sh"
. parse_options.sh

if [ $# -ne 3 ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
src=${1%/}
dest=${2%/}
audio_dir=${3%/}

require_files "$src/wav.scp" "$src/utt2spk"
check_positive_ints nj
check_fractions max_fail_fraction
[[ "$format" =~ ^(flac|wav)$ ]] || { echo "$0: --format must be flac or wav, got '$format'" >&2; exit 1; }
if [ -d "$dest" ] && [ "$(cd "$src" && pwd -P)" = "$(cd "$dest" && pwd -P)" ]; then
  echo "$0: <src-data-dir> and <dest-data-dir> are the same directory $src" >&2
  exit 1
fi

utt_list=$src/wav.scp
[ -f "$src/segments" ] && utt_list=$src/segments

# A finished run for the same source and format is not redone: rewriting
# <dest>/wav.scp would make its fbank look out of date.
stamp=$audio_dir/.done
signature="$(cat "$src/wav.scp" "$src/utt2spk" "$utt_list" | cksum) format=$format dest=$dest"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$signature" ] && [ -f "$dest/wav.scp" ]; then
  echo "$0: $dest is complete for $src in $format ($stamp); nothing to do"
  exit 0
fi
rm -f "$stamp"

validate_data_dir.sh --no-text --no-feats "$src" || { echo "$0: $src does not validate; fix it first" >&2; exit 1; }

logdir=$audio_dir/log
mkdir -p "$logdir"
# Temporaries of a killed run (complete files only ever appear by rename).
find "$audio_dir" -name '.*.tmp' -type f -delete

run_jobs_or_die "$cmd" "$nj" "$logdir/convert.JOB.log" conversion \
  python -m pyspk.bin.convert_audio --format "$format" --job JOB --num-jobs "$nj" \
    "$src" "$audio_dir" "$logdir/wav.scp.JOB" "$logdir/utt2dur.JOB"

sum_job_counts "$nj" "$logdir/convert." .log "$max_fail_fraction" "$utt_list"
echo "$0: Done $num_done, failed $num_failed (logs: $logdir/convert.*.log)"

# Files of an earlier <dest> go to .backup, so that none of them is left
# describing other audio.
mkdir -p "$dest"
old_files=$(find "$dest" -maxdepth 1 -type f)
if [ -n "$old_files" ]; then
  mkdir -p "$dest/.backup"
  find "$dest" -maxdepth 1 -type f -exec mv -t "$dest/.backup" {} +
fi
for f in "$src"/*; do
  [ -f "$f" ] || continue
  case ${f##*/} in
    wav.scp|segments|reco2*|utt2dur|feats.scp|vad.scp|utt2num_frames|cmvn.scp) ;;
    *) cp "$f" "$dest/" ;;
  esac
done
merge_parts "$nj" "$dest/utt2dur" "$logdir/utt2dur." ""
merge_parts "$nj" "$dest/wav.scp" "$logdir/wav.scp." ""

if [ "$num_failed" -gt 0 ]; then
  echo "$0: $num_failed of $(( num_done + num_failed )) utterances failed (listed by id in $logdir/convert.*.log," \
       "e.g. $first_failed_log); dropping them from $dest"
  fix_data_dir.sh "$dest"
fi
validate_data_dir.sh --no-text --no-feats "$dest"
echo "$signature" > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
echo "$0: converted $src to $format files in $audio_dir; data dir $dest"
