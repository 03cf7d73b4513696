# shellcheck shell=bash
# Idempotent steps (sourced). A finished step writes a marker holding its
# settings (the command line); re-running with the same settings, the marker
# newer than every input and every output present does nothing.
#
#   step_settings="$*"        # before parse_options.sh
#   exit_if_step_done "$marker" "$step_settings" <what> <inputs...> -- <outputs...>
#   ...work...; mark_step_done "$marker" "$step_settings"

# step_is_done <marker> <settings> <input>... -- <output>...
step_is_done() {
  local marker=$1 settings=$2 f
  shift 2
  [ -f "$marker" ] && [ "$(cat "$marker")" = "$settings" ] || return 1
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    [ -e "$1" ] && [ "$marker" -nt "$1" ] || return 1
    shift
  done
  [ $# -eq 0 ] || shift
  for f in "$@"; do [ -e "$f" ] || return 1; done
}

# exit_if_step_done <marker> <settings> <what> <input>... -- <output>...
# Exits 0 saying "nothing to do" when step_is_done; otherwise removes the
# marker, so that a run failing part-way leaves none.
exit_if_step_done() {
  local marker=$1 settings=$2 what=$3
  shift 3
  if step_is_done "$marker" "$settings" "$@"; then
    echo "$0: $what is complete and newer than its inputs; nothing to do"
    exit 0
  fi
  rm -f "$marker"
}

# add_existing_inputs <file>...: append the files that exist to the array "inputs" (optional inputs).
add_existing_inputs() {
  local f
  for f in "$@"; do
    if [ -f "$f" ]; then inputs+=("$f"); fi
  done
}

# mark_step_done <marker> <settings>
mark_step_done() {
  printf '%s\n' "$2" > "$1.tmp"
  mv "$1.tmp" "$1"
}
