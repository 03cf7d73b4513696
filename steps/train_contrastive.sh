#!/usr/bin/env bash
# Train a speaker-embedding backbone with contrastive SSL (NT-Xent: crops of one
# utterance are positives, crops of other utterances negatives; optional
# channel-invariant term) on <data-dir>/feats.scp; writes <exp-dir>/final.pt
# (backbone "encoder") for steps/extract_embeddings.sh, plus config.yaml,
# checkpoints/, log/train.log, metrics.tsv and loss.png.
# Options and resume behaviour: steps/libs/train_ssl.sh (or --help).
ssl_method=contrastive
example_config=conf/contrastive_ecapa.yaml
trained_what='backbone "encoder"'
. "$(dirname "$0")/libs/train_ssl.sh"
