# shellcheck shell=bash
# Environment of the transfer demo: the project's own path.sh (virtual env,
# utils/ and steps/ on PATH, LC_ALL=C). Safe under "set -u".
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/../../path.sh"
