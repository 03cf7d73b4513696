#!/usr/bin/env bash
# pyspk default recipe: self-supervised speaker verification on the embedded
# offline corpus (espeak-ng pseudo-speakers, each utterance through its own
# random channel). No speaker label is used for training, except by the
# explicitly named "supervised upper bound" (stage 8).
#
# Stages (plain ./run.sh runs them all; pick with --stage N --stop-stage M):
#   0  install what is missing (tools/install.sh; idempotent)
#   1  synthesise the corpus: data/{train,test}, data/test/trials
#   2-9 the generic pipeline, steps/sv_pipeline.sh (its header lists the
#      stages): fbank and VAD, augmented copies, fbank baseline, SSL training,
#      embeddings, cosine scoring, pseudo-label rounds, supervised upper bound,
#      summary
#
# Outputs: data/ (Kaldi data dirs), fbank/ (ark/scp), exp/ (models, logs,
# embeddings, scores); one line per system in exp/results.txt.
set -euo pipefail

# Begin configuration section.
stage=0
stop_stage=100
nj=2                      # parallel jobs for features and embeddings
num_speakers=200          # corpus size: speakers in all (train + test)
test_speakers=40          # of which held out for the test set
utts_per_speaker=20
seed=777
ssl=dino                  # dino|contrastive|memo
ssl_config=               # default: conf/${ssl}_demo.yaml
ssl_overrides=            # e.g. "optim.lr.base=0.05 train.epochs=10"
classifier_config=conf/classifier_demo.yaml
classifier_overrides=
rounds=2                  # pseudo-labelling rounds
num_clusters=200          # k for k-means (the true number is not assumed known)
keep_fraction=0.7         # share of each cluster kept, nearest to its centroid first
cluster_method=kmeans     # kmeans|minibatch|agglomerative; agglomerative with --num-clusters 0 finds k
cluster_threshold=auto    # agglomerative, --num-clusters 0: cosine-distance threshold (auto: from the data)
plda_recluster=false      # second clustering pass on the scores of a PLDA trained on the first
cluster_merge=none        # none|cosine|plda: merge whole k-means clusters that are one speaker
cluster_select=nearest    # nearest|posterior
max_cluster_size=0        # most members kept per cluster (0: no limit)
pl_tag=                   # rounds in exp/pl_<ssl>_<tag>_r<r>, to keep several choices side by side
pl_init=ssl               # each round's classifier starts from: ssl (the SSL model) | previous | scratch
memo_start=fused          # --ssl memo: round 1 starts from the teachers' fused embeddings | <arch>
augment=true              # augmented copies of data/train for training
rir_dir=                  # RIRS_NOISES; empty: simulated rooms
musan_dir=                # MUSAN; empty: generated noise, music and babble
device=auto               # auto (cuda if available), cpu, cuda, cuda:1 ...
# End configuration section.

# --help: the header comment above, then steps/sv_pipeline.sh's stages 2-9 and result names (from its
# header), then the options: generated, so they cannot drift from the headers.
help_message="$("$(dirname "$0")/utils/print_header.sh" "$0" "$(dirname "$0")/steps/sv_pipeline.sh")

Usage: $0 [options]
  --stage N             first stage to run ($stage)
  --stop-stage N        last stage to run ($stop_stage)
  --nj N                parallel jobs ($nj)
  --num-speakers N      speakers in the synthetic corpus ($num_speakers)
  --test-speakers N     held-out test speakers ($test_speakers)
  --utts-per-speaker N  ($utts_per_speaker)
  --seed N              corpus seed ($seed)
  --ssl NAME            dino|contrastive|memo ($ssl)
  --ssl-config FILE     SSL training config (conf/<ssl>_demo.yaml)
  --ssl-overrides 'K=V ..'  overrides of the SSL config, e.g. 'train.epochs=10'
  --classifier-config F pseudo-label classifier config ($classifier_config)
  --classifier-overrides 'K=V ..'  overrides of the classifier config
  --rounds N            pseudo-labelling rounds ($rounds)
  --num-clusters K      k-means clusters ($num_clusters)
  --keep-fraction F     confident share kept per cluster ($keep_fraction)
  --cluster-method M    kmeans|minibatch|agglomerative ($cluster_method)
  --cluster-threshold T agglomerative threshold with --num-clusters 0 ($cluster_threshold)
  --plda-recluster B    re-cluster with a PLDA (true|false) ($plda_recluster)
  --cluster-merge M     none|cosine|plda: merge k-means clusters that are one speaker ($cluster_merge)
  --cluster-select S    nearest|posterior ($cluster_select)
  --max-cluster-size N  most members kept per cluster, 0: no limit ($max_cluster_size)
  --pl-tag TAG          rounds in exp/pl_<ssl>_<TAG>_r<r> (default: exp/pl_<ssl>_r<r>)
  --pl-init ssl|previous|scratch  each round's classifier init; scratch also the upper bound's ($pl_init)
  --memo-start fused|ARCH  --ssl memo: round 1 from the teachers' fused embeddings or one teacher ($memo_start)
  --augment true|false  augmented copies for training ($augment)
  --rir-dir DIR         RIRS_NOISES directory (default: simulated rooms)
  --musan-dir DIR       MUSAN directory (default: generated sources)
  --device DEV          auto|cpu|cuda[:i] ($device)
e.g.: $0 --stage 4 --stop-stage 6 --ssl memo"

cd "$(dirname "$0")"
. utils/parse_options.sh
. steps/libs/common.sh  # log

# The pipeline's options, checked once stage 0 has installed what the check needs, before any other stage.
pipeline_opts=(--nj "$nj" --device "$device" --train-set train --test-sets test --ssl "$ssl"
  --ssl-config "${ssl_config:-conf/${ssl}_demo.yaml}" --ssl-overrides "$ssl_overrides"
  --classifier-config "$classifier_config" --classifier-overrides "$classifier_overrides" --rounds "$rounds"
  --num-clusters "$num_clusters" --keep-fraction "$keep_fraction" --cluster-method "$cluster_method"
  --cluster-threshold "$cluster_threshold" --plda-recluster "$plda_recluster" --cluster-merge "$cluster_merge" --cluster-select "$cluster_select"
  --max-cluster-size "$max_cluster_size" --pl-tag "$pl_tag" --pl-init "$pl_init" --memo-start "$memo_start"
  --augment "$augment" --rir-dir "$rir_dir" --musan-dir "$musan_dir")

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: install what is missing"
  tools/install.sh
fi

. ./path.sh
steps/sv_pipeline.sh --check-only true "${pipeline_opts[@]}" >/dev/null

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: synthesise the corpus ($num_speakers speakers, $test_speakers for test)"
  local/make_corpus.sh --nj $nj --num-speakers $num_speakers --test-speakers $test_speakers \
    --utts-per-speaker $utts_per_speaker --seed $seed corpus data
fi

if [ $stop_stage -ge 2 ]; then
  steps/sv_pipeline.sh --stage $(( stage > 2 ? stage : 2 )) --stop-stage $stop_stage "${pipeline_opts[@]}"
fi
log "Done (stages $stage..$stop_stage)"
