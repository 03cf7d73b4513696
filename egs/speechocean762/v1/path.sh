# shellcheck shell=bash
# Environment of the speechocean762 recipe: the project's own path.sh (virtual env,
# utils/ and steps/ on PATH, LC_ALL=C), found through links. Safe under "set -u".
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../../path.sh"
