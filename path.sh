# shellcheck shell=bash
# Environment for recipes: source it from run.sh and steps/*.sh.
# Safe under "set -u". Puts the project's virtual env, utils/ and steps/ on PATH.
PYSPK_ROOT=${PYSPK_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)}
export PYSPK_ROOT
if [ -x "$PYSPK_ROOT/tools/venv/bin/python" ]; then
  export PATH="$PYSPK_ROOT/tools/venv/bin:$PATH"
fi
export PATH="$PYSPK_ROOT/utils:$PYSPK_ROOT/steps:$PATH"
export LC_ALL=C
export PYTHONUNBUFFERED=1
