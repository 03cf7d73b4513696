#!/usr/bin/env bash
# Download and unpack VoxCeleb under the official archive names, checking the
# published md5 sums, then fetch the meta files and the cleaned trial lists:
#   vox1: vox1_dev_wav_parta{a..d} -> vox1_dev_wav.zip, vox1_test_wav.zip -> <vox1-root>/wav/
#         vox1_meta.csv veri_test2.txt list_test_all2.txt list_test_hard2.txt -> <vox1-root>/
#   vox2: vox2_dev_aac_parta{a..h} -> vox2_dev_aac.zip -> <vox2-root>/dev/aac/, vox2_meta.csv
#   vox2_test (optional): vox2_test_aac.zip -> <vox2-root>/test/aac/
# The audio is distributed on request: fill in the VoxCeleb request form and
# pass the host and credentials you receive (--base-url, --user, --password).
# Re-running resumes partial downloads and skips what is already unpacked.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
base_url=https://thor.robots.ox.ac.uk/~vgg/data/voxceleb/vox1a
meta_url=https://www.robots.ox.ac.uk/~vgg/data/voxceleb/meta
user=
password=
parts="vox1 vox2"
# End configuration section.

help_message="Usage: $0 [options] <download-dir> <vox1-root> <vox2-root>
e.g.: $0 --user USER --password PASS downloads /export/corpora/VoxCeleb1 /export/corpora/VoxCeleb2
Options:
  --base-url URL       host of the audio archives ($base_url)
  --meta-url URL       host of the meta files and trial lists ($meta_url)
  --user NAME          credentials from the VoxCeleb request form ($user)
  --password PASS      ($password)
  --parts \"P ...\"      any of vox1 vox2 vox2_test ($parts)"

. ./path.sh
. utils/parse_options.sh

if [ $# -ne 3 ]; then
  printf "%s\n" "$help_message" 1>&2
  exit 1
fi
download_dir=$1
vox1_root=$2
vox2_root=$3
mkdir -p $download_dir
command -v wget >/dev/null || { echo "$0: wget is not installed" 1>&2; exit 1; }

auth=()
[ -z "$user" ] || auth+=(--user "$user")
[ -z "$password" ] || auth+=(--password "$password")

# fetch <url> <file>: resumable; the final name appears only once complete.
fetch() {
  [ -f "$2" ] && return 0
  echo "$0: downloading $1"
  wget -c "${auth[@]}" -O "$2.part" "$1" || { echo "$0: failed to download $1" 1>&2; exit 1; }
  mv "$2.part" "$2"
}

check_md5() {
  local sum
  sum=$(md5sum "$1" | awk '{print $1}')
  if [ "$sum" != "$2" ]; then
    echo "$0: $1 has md5 $sum, expected $2; delete it and re-run" 1>&2
    exit 1
  fi
}

# join <archive> <md5> <part-url-prefix> <suffixes...>: download parts and concatenate.
join_parts() {
  local archive=$1 md5=$2 prefix=$3; shift 3
  if [ ! -f $download_dir/$archive ]; then
    for s in "$@"; do fetch $base_url/${prefix}$s $download_dir/${prefix}$s; done
    (cd "$download_dir" && cat "${@/#/$prefix}" > "$archive.part" && mv "$archive.part" "$archive")
  fi
  check_md5 $download_dir/$archive $md5
}

# unpack <archive> <dest-dir>: once; a marker records completion.
unpack() {
  local marker
  marker=$2/.unpacked_$(basename "$1" .zip)
  [ -f $marker ] && return 0
  mkdir -p $2
  echo "$0: unpacking $1 into $2"
  python -m zipfile -e $1 $2
  touch $marker
}

for part in $parts; do
  case $part in
    vox1)
      join_parts vox1_dev_wav.zip ae63e55b951748cc486645f532ba230b vox1_dev_wav_parta a b c d
      fetch $base_url/vox1_test_wav.zip $download_dir/vox1_test_wav.zip
      check_md5 $download_dir/vox1_test_wav.zip 185fdc63c3c739954633d50379a3d102
      unpack $download_dir/vox1_dev_wav.zip $vox1_root
      unpack $download_dir/vox1_test_wav.zip $vox1_root
      for f in vox1_meta.csv veri_test2.txt list_test_all2.txt list_test_hard2.txt; do
        fetch $meta_url/$f $vox1_root/$f
      done ;;
    vox2)
      join_parts vox2_dev_aac.zip bbc063c46078a602ca71605645c2a402 vox2_dev_aac_parta a b c d e f g h
      unpack $download_dir/vox2_dev_aac.zip $vox2_root
      fetch $meta_url/vox2_meta.csv $vox2_root/vox2_meta.csv ;;
    vox2_test)
      fetch $base_url/vox2_test_aac.zip $download_dir/vox2_test_aac.zip
      check_md5 $download_dir/vox2_test_aac.zip 0d2b3ea430a821c33263b5ea37ede312
      unpack $download_dir/vox2_test_aac.zip $vox2_root/test ;;
    *) echo "$0: unknown part '$part' (known: vox1 vox2 vox2_test)" 1>&2; exit 1 ;;
  esac
done
echo "$0: VoxCeleb ($parts) is in $vox1_root and $vox2_root"
