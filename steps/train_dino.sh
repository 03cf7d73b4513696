#!/usr/bin/env bash
# Train a speaker-embedding backbone with DINO (self-distillation, no labels)
# on <data-dir>/feats.scp; writes <exp-dir>/final.pt (backbones "teacher",
# the default, and "student") for steps/extract_embeddings.sh, plus
# config.yaml, checkpoints/, log/train.log, metrics.tsv and loss.png.
# Options and resume behaviour: steps/libs/train_ssl.sh (or --help).
ssl_method=dino
example_config=conf/dino_ecapa.yaml
trained_what="teacher backbone by default"
. "$(dirname "$0")/libs/train_ssl.sh"
