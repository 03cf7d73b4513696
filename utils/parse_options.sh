#!/usr/bin/env bash
# Kaldi-style option parsing; source it after declaring defaults:
#   . utils/parse_options.sh
# Turns "--foo-bar x" into foo_bar=x, only for variables already declared;
# an unknown option is an error. "--config file" sources that file first
# (later options win). A variable whose default is true/false only takes
# true or false. "--help"/"-h" prints $help_message and exits 0.

for ((argpos=1; argpos<$#; argpos++)); do
  if [ "${!argpos}" == "--config" ]; then
    argpos_plus1=$((argpos+1))
    config=${!argpos_plus1}
    [ ! -r "$config" ] && echo "$0: missing config '$config'" 1>&2 && exit 1
    . "$config"
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
      name=$(echo "$1" | sed s/^--// | sed s/-/_/g)
      eval '[ -z "${'"$name"'+xxx}" ]' && echo "$0: invalid option $1" 1>&2 && exit 1
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" 1>&2; exit 1; fi
      oldval="$(eval echo "\$$name")"
      if [ "$oldval" == "true" ] || [ "$oldval" == "false" ]; then
        was_bool=true
      else
        was_bool=false
      fi
      # Single-quote the value so that any characters survive the eval.
      eval "$name=\"\$2\""
      if $was_bool && [[ "$2" != "true" && "$2" != "false" ]]; then
        echo "$0: expected \"true\" or \"false\": $1 $2" 1>&2
        exit 1
      fi
      shift 2 ;;
    *) break ;;
  esac
done

true  # so that "set -e" callers do not fail on the last test
