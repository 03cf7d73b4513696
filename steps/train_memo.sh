#!/usr/bin/env bash
# Train speaker-embedding backbones with MeMo (multi-head multi-mode
# distillation between two architectures, e.g. ECAPA-TDNN and ResNet) on
# <data-dir>/feats.scp; writes <exp-dir>/final.pt with backbones
# "teacher_<arch>" (the first architecture of model.archs is the default) and
# "student_<arch>" for steps/extract_embeddings.sh --backbone, plus
# config.yaml, checkpoints/, log/train.log (with the step at which the
# contrastive loss stopped), metrics.tsv and loss.png.
# Options and resume behaviour: steps/libs/train_ssl.sh (or --help).
ssl_method=memo
example_config=conf/memo_ecapa_resnet.yaml
trained_what="backbones teacher_<arch> (default: the first of model.archs) and student_<arch>"
. "$(dirname "$0")/libs/train_ssl.sh"
