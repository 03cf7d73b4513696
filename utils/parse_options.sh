#!/usr/bin/env bash
# Kaldi-style option parsing; source it after declaring defaults:
#   . utils/parse_options.sh
# Turns "--foo-bar x" into foo_bar=x, only for variables already declared;
# an unknown option is an error. A variable whose default is true/false only
# takes true or false. "--help"/"-h" prints $help_message and exits 0.
# "--config <file>":
#   - <file> ending in .yaml or .yml: an ordinary option, setting the variable
#     config (the script must declare config=..., else "invalid option
#     --config"); the file is never sourced (a Python step reads it).
#   - any other <file>: Kaldi's config of shell assignments, sourced before the
#     other options are taken (so the command line wins); config is set to it.
# Internal variables are prefixed with _po_, so they cannot clobber the options.

for ((_po_pos=1; _po_pos<$#; _po_pos++)); do
  if [ "${!_po_pos}" == "--config" ]; then
    _po_next=$((_po_pos+1))
    case "${!_po_next}" in
      *.yaml|*.yml) ;;
      *)
        config=${!_po_next}
        [ ! -r "$config" ] && echo "$0: missing config '$config'" 1>&2 && exit 1
        # shellcheck disable=SC1090  # a Kaldi config named on the command line
        . "$config" ;;
    esac
  fi
done

while true; do
  [ -z "${1:-}" ] && break
  case "$1" in
    --help|-h)
      if [ -z "${help_message:-}" ]; then echo "No help found." 1>&2; else printf "%s\n" "$help_message" 1>&2; fi
      exit 0 ;;
    --*=*)
      echo "$0: options to scripts must be of the form --name value, got '$1'" 1>&2
      exit 1 ;;
    --*)
      _po_name=${1#--}
      _po_name=${_po_name//-/_}
      if ! [[ "$_po_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
        echo "$0: invalid option $1" 1>&2; exit 1
      fi
      eval '[ -z "${'"$_po_name"'+xxx}" ]' && echo "$0: invalid option $1" 1>&2 && exit 1
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" 1>&2; exit 1; fi
      _po_oldval=${!_po_name}
      if [ "$_po_oldval" == "true" ] || [ "$_po_oldval" == "false" ]; then
        _po_was_bool=true
      else
        _po_was_bool=false
      fi
      # The value reaches the assignment unexpanded, so any characters survive the eval.
      eval "$_po_name=\"\$2\""
      if $_po_was_bool && [[ "$2" != "true" && "$2" != "false" ]]; then
        echo "$0: expected \"true\" or \"false\": $1 $2" 1>&2
        exit 1
      fi
      shift 2 ;;
    *) break ;;
  esac
done

true  # so that "set -e" callers do not fail on the last test
