#!/usr/bin/env bash
# Prints the header comment of <script> (its lines 2.. up to the first line
# that is not a comment, without the leading "# "), for its --help. With
# <pipeline> (steps/sv_pipeline.sh) it then prints that script's stages and
# result names, from its own header, so a recipe's help cannot drift from it.
#
# Usage: utils/print_header.sh <script> [<pipeline>]
# e.g.:  help_message="$(utils/print_header.sh "$0" "$(dirname "$0")/steps/sv_pipeline.sh")
#        Usage: ..."
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "Usage: $0 <script> [<pipeline>]" >&2
  exit 1
fi
for f in "$@"; do
  [ -f "$f" ] || { echo "$0: no such file $f" >&2; exit 1; }
done
sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$1"
if [ $# -eq 2 ]; then
  printf '\nThe pipeline'"'"'s stages, %s (its header):\n' "${2#./}"
  sed -n '/^# Stages (0 and 1/,/^# Experiment dirs/{/^# Experiment dirs/d;s/^# \{0,1\}/  /p;}' "$2"
fi
