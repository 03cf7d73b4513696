#!/usr/bin/env bash
# Installs what pyspk needs, idempotently:
#   - Debian packages espeak-ng (the offline demo corpus), sox (wav.scp pipes),
#     ffmpeg (VoxCeleb2 m4a) and shellcheck (tests/test_shell_lint.py),
#     when missing and we are root (otherwise says what to install);
#   - a virtual env in tools/venv with pyspk and its Python dependencies
#     (torch pinned to 2.13.0, the CPU wheel on machines that ship it), with
#     the test and export extras (pytest, ruff; onnx, onnxruntime) and the
#     pyspk command.
# Re-running it does nothing when everything is in place.
set -euo pipefail

root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd -P)  # the repository holding this file, through any link
venv=$root/tools/venv
stamp=$venv/.pyspk-installed

log() { echo "$(date '+%F %T') [tools/install.sh] $*"; }

missing=()
for prog in espeak-ng sox ffmpeg shellcheck; do
  command -v "$prog" >/dev/null 2>&1 || missing+=("$prog")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "$0: please install these packages first (e.g. sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

# What is installed follows the project file and this script (its extras).
want=$(cat "$root/pyproject.toml" "$root/tools/install.sh" | sha1sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual env $venv"
  python3 -m venv "$venv"
fi
log "installing pyspk and its dependencies into $venv"
# Machines with local wheel mirrors make pip warn about every missing mirror entry; drop those lines.
pip_install() {
  "$venv/bin/python" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
pip_install --upgrade pip
pip_install -e "${root}[test,export]"
# The repository root on the venv's sys.path too: "import pyspk" then finds this package even from a folder that
# holds a clone named pyspk, which Python would otherwise import as an empty namespace package (the editable
# install's finder comes after the path's).
site_packages=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$root" > "$site_packages/pyspk-root.pth"
"$venv/bin/python" -c "import torch, kaldiio, kaldi_native_fbank, soundfile, sklearn, yaml, tqdm, matplotlib, onnx, onnxruntime, pyspk"
echo "$want" > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
log "done"
