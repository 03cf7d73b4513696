#!/usr/bin/env bash
# Alias of steps/train.sh, kept for recipes written before it: the method is the config's "objective".
exec "$(dirname "$0")/train.sh" "$@"
