#!/usr/bin/env bash
# Real-speech recipe: self-supervised speaker verification on the Arabic
# Speech Commands corpus (20 speakers reading 40 keywords in 10 sessions,
# 16 kHz FLAC, CC BY 4.0), as shipped in ../shared/data. An utterance joins 4
# keywords of one speaker and session (about 4 s); 12 speakers train without
# labels, the other 8 are held out with cross-session target trials.
#
# Stages (plain ./run.sh runs them all; pick with --stage N --stop-stage M):
#   0  install what is missing (tools/install.sh; idempotent)
#   1  data dirs data/{train,test} and data/test/trials (local/data.sh)
#   2-9 the generic pipeline, steps/sv_pipeline.sh (see its header): fbank
#      and VAD, augmented copies, fbank baseline, SSL training, embeddings,
#      cosine scoring, pseudo-label rounds, supervised upper bound, summary
# Results: exp/results.txt; RESULTS.md holds the figures and the commands that made them
# and ./run.sh --stage 4 --stop-stage 6 --ssl dino|memo.
set -euo pipefail

# Begin configuration section.
stage=0
stop_stage=100
nj=2
corpus=                   # Arabic Speech Commands root; default: shared/data/arabic_speech_commands beside the repository
test_speakers=8
keywords_per_utt=4
speakers=0                # use only the first N speakers (0: all), e.g. for a quick test
rounds_used=0             # use only the first N recording rounds (0: all)
ssl=contrastive           # dino|contrastive|memo; contrastive learns best here today (RESULTS.md)
ssl_config=               # default: conf/<ssl>.yaml
ssl_overrides=            # e.g. "optim.lr.base=0.05 train.epochs=20"
classifier_config=conf/classifier.yaml
classifier_overrides=
rounds=2
num_clusters=24           # k-means k: twice the 12 training speakers (splitting a speaker hurts less than merging two)
keep_fraction=0.7
cluster_method=kmeans     # kmeans|minibatch|agglomerative; agglomerative with --num-clusters 0 finds k
cluster_threshold=auto    # agglomerative, --num-clusters 0: cosine-distance threshold (auto: from the data)
plda_recluster=false      # second clustering pass on the scores of a PLDA trained on the first
cluster_merge=none        # none|cosine|plda: merge whole k-means clusters that are one speaker
pl_init=ssl               # each round's classifier starts from: ssl | previous | scratch
memo_start=fused          # --ssl memo: round 1 starts from the teachers' fused embeddings | <arch>
cluster_select=nearest    # nearest|posterior
max_cluster_size=0        # most members kept per cluster (0: no limit)
pl_tag=                   # rounds in exp/pl_<ssl>_<tag>_r<r>, to keep several choices side by side
device=auto
online_aug=false          # true: train from raw audio augmented on the device (no stored copies)
adapt_set=                # unlabelled data for the back-end's cosine mean and PLDA adaptation, e.g. test
plda_adapt_scales=0.75,0.25  # within,between shares of the in-domain excess variance (steps/sv_pipeline.sh)
results=exp/results.txt   # one line per system, named after its experiment dir (steps/sv_pipeline.sh)
# End configuration section.

# --help: the header comment above, then steps/sv_pipeline.sh's stages 2-9 and result names (from its
# header), then the options: generated, so they cannot drift from the headers.
help_message="$("$(dirname "$0")/utils/print_header.sh" "$0" "$(dirname "$0")/steps/sv_pipeline.sh")

Usage: $0 [options]
  --stage N                first stage to run ($stage)
  --stop-stage N           last stage to run ($stop_stage)
  --nj N                   parallel jobs ($nj)
  --corpus DIR             Arabic Speech Commands root, with dataset/; a relative path is taken
                           from the directory you call from (default: ../shared/data/arabic_speech_commands
                           beside the repository)
  --test-speakers N        held-out speakers ($test_speakers)
  --keywords-per-utt N     keywords joined per utterance ($keywords_per_utt)
  --speakers N             use only the first N speakers, 0 for all ($speakers)
  --rounds-used N          use only the first N recording rounds, 0 for all ($rounds_used)
  --ssl NAME               dino|contrastive|memo ($ssl)
  --ssl-config FILE        SSL config (default: conf/<ssl>.yaml)
  --ssl-overrides 'K=V ..' overrides of the SSL config
  --classifier-config FILE pseudo-label classifier config ($classifier_config)
  --classifier-overrides 'K=V ..'
  --rounds N               pseudo-labelling rounds ($rounds)
  --num-clusters K         k-means clusters ($num_clusters)
  --keep-fraction F        confident share kept per cluster ($keep_fraction)
  --cluster-method M       kmeans|minibatch|agglomerative ($cluster_method)
  --cluster-threshold T    agglomerative threshold with --num-clusters 0 ($cluster_threshold)
  --plda-recluster B       re-cluster with a PLDA (true|false) ($plda_recluster)
  --cluster-merge M        none|cosine|plda: merge k-means clusters that are one speaker ($cluster_merge)
  --pl-init I              ssl|previous|scratch: each round's classifier init ($pl_init)
  --memo-start S           --ssl memo: fused|<arch>: round 1 from the teachers' fused embeddings or one ($memo_start)
  --cluster-select S       nearest|posterior ($cluster_select)
  --max-cluster-size N     most members kept per cluster, 0: no limit ($max_cluster_size)
  --pl-tag TAG             rounds in exp/pl_<ssl>_<TAG>_r<r> (default: exp/pl_<ssl>_r<r>)
  --device DEV             auto|cpu|cuda[:i] ($device)
  --online-aug BOOL        augment raw audio on the training device, no stored copies ($online_aug)
  --adapt-set NAME         data/NAME, unlabelled, for the back-end: cosine with its mean, PLDA adapted
                           to it; results <system>_{cosine,plda}_adapt (e.g. test: the held-out
                           utterances without their labels) (default: none)
  --plda-adapt-scales W,B  shares of the adaptation set's excess variance booked within and between
                           speakers ($plda_adapt_scales, Kaldi's SRE16 recipe)
  --results FILE           results file ($results)
e.g.: $0 --stage 4 --stop-stage 6 --ssl contrastive"

caller_dir=$PWD
cd "$(dirname "$0")"
. utils/parse_options.sh
. steps/libs/common.sh  # log
# A corpus root given is taken from the caller's directory; the default lies beside the repository.
case $corpus in
  "") corpus=$(dirname "$(readlink -f "$0")")/../../../../shared/data/arabic_speech_commands ;;
  /*) ;;
  *) corpus=$caller_dir/$corpus ;;
esac

# The pipeline's options, checked once stage 0 has installed what the check needs, before any other stage.
pipeline_opts=(--nj "$nj" --device "$device" --train-set train --test-sets test --ssl "$ssl"
  --ssl-config "${ssl_config:-conf/$ssl.yaml}" --ssl-overrides "$ssl_overrides"
  --classifier-config "$classifier_config" --classifier-overrides "$classifier_overrides"
  --rounds "$rounds" --num-clusters "$num_clusters" --keep-fraction "$keep_fraction" --results "$results"
  --cluster-method "$cluster_method" --cluster-threshold "$cluster_threshold" --plda-recluster "$plda_recluster"
  --cluster-merge "$cluster_merge" --pl-init "$pl_init" --memo-start "$memo_start"
  --cluster-select "$cluster_select" --max-cluster-size "$max_cluster_size" --pl-tag "$pl_tag" --online-aug "$online_aug"
  --adapt-set "$adapt_set" --plda-adapt-scales "$plda_adapt_scales")

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: install what is missing"
  "$(dirname "$(readlink -f "$0")")/../../../tools/install.sh"
fi

. ./path.sh
steps/sv_pipeline.sh --check-only true "${pipeline_opts[@]}" >/dev/null

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: data dirs from $corpus"
  local/data.sh --test-speakers $test_speakers --keywords-per-utt $keywords_per_utt --speakers $speakers \
    --rounds $rounds_used "$corpus" data
fi

if [ $stop_stage -ge 2 ]; then
  steps/sv_pipeline.sh --stage $(( stage > 2 ? stage : 2 )) --stop-stage $stop_stage "${pipeline_opts[@]}"
fi
log "Done (stages $stage..$stop_stage)"
