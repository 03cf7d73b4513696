#!/usr/bin/env bash
# Download and unpack the augmentation corpora from OpenSLR, checking md5 sums:
#   musan.tar.gz    (SLR17) -> <musan-root>  noise, music, speech (babble)
#   rirs_noises.zip (SLR28) -> <rirs-root>   simulated and real room impulse responses
# Without them (offline), steps/augment_data_dir.sh generates its own sources.
# Re-running resumes partial downloads and skips a corpus already in place.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
mirror=https://www.openslr.org/resources
# End configuration section.

help_message="Usage: $0 [options] <download-dir> <musan-root> <rirs-root>
e.g.: $0 downloads /export/corpora/musan /export/corpora/RIRS_NOISES
Options:
  --mirror URL     OpenSLR mirror ($mirror)"

. ./path.sh
. utils/parse_options.sh

if [ $# -ne 3 ]; then
  printf "%s\n" "$help_message" 1>&2
  exit 1
fi
dir=$1
musan_root=$2
rirs_root=$3
mkdir -p $dir
command -v wget >/dev/null || { echo "$0: wget is not installed" 1>&2; exit 1; }

unpack_tar() { tar -C $1 -xzf $2; }
unpack_zip() { python -m zipfile -e $2 $1; }

# get <url> <md5> <unpack-function> <top-dir-in-archive> <dest>: download, check,
# unpack under <download-dir>/unpack, then move the corpus to <dest>.
get() {
  local url=$1 md5=$2 unpack=$3 top=$4 dest=$5
  local archive
  archive=$dir/$(basename "$url")
  if [ -d $dest ] && [ -n "$(ls -A $dest)" ]; then
    echo "$0: $dest is already there, skipping"
    return 0
  fi
  if [ ! -f $archive ]; then
    wget -c -O $archive.part $url || { echo "$0: failed to download $url" 1>&2; exit 1; }
    mv $archive.part $archive
  fi
  local sum
  sum=$(md5sum $archive | awk '{print $1}')
  [ "$sum" == "$md5" ] || { echo "$0: $archive has md5 $sum, expected $md5; delete it and re-run" 1>&2; exit 1; }
  echo "$0: unpacking $archive into $dest"
  rm -rf $dir/unpack/$top
  mkdir -p $dir/unpack "$(dirname $dest)"
  $unpack $dir/unpack $archive
  rmdir $dest 2>/dev/null || true
  mv $dir/unpack/$top $dest
}

get $mirror/17/musan.tar.gz 0c472d4fc0c5141eca47ad1ffeb2a7df unpack_tar musan $musan_root
get $mirror/28/rirs_noises.zip e6f48e257286e05de56413b4779d8ffb unpack_zip RIRS_NOISES $rirs_root
echo "$0: MUSAN in $musan_root, RIRS_NOISES in $rirs_root"
