#!/usr/bin/env bash
# Read-speech recipe: self-supervised speaker verification on real 16 kHz read
# English of 200 Mandarin-L1 speakers (97 children, 103 adults), speechocean762
# as shipped in ../shared/data (Opus, decoded by ffmpeg pipes; free for
# commercial and non-commercial use). 48 speakers, 12 per age group x gender,
# are held out; the other 152 train without labels (README.md: the protocol).
# --train-speakers N trains on the first N of them in a fixed, group-balanced
# order (nested subsets) in exp_<N>spk: local/scaling_study.sh runs every size.
#
# Stages (plain ./run.sh runs them all; pick with --stage N --stop-stage M):
#   0  install what is missing (tools/install.sh; idempotent)
#   1  data dirs data/{train,test}, the trial lists data/test/trials and
#      data/test/trials_hard, data/train_speaker_order (local/data.sh)
#   2  the pipeline's stage 2 on all of data/train (features, VAD and, with
#      --augment true, augmented copies, shared by every training size); with
#      --train-speakers N also data/train_<N>spk (and its copies,
#      data/train_<N>spk_combined), the first N speakers of the order with
#      their features (local/subset_train.sh)
#   3-9 the generic pipeline, steps/sv_pipeline.sh (see its header), on data/train
#      or data/train_<N>spk: fbank baseline, SSL training, embeddings, cosine
#      scoring, pseudo-label rounds, supervised upper bound (true labels of the
#      same speakers), summary
# Results: <exp>/results.txt (exp/results.txt; with --train-speakers N exp_<N>spk/results.txt).
set -euo pipefail

# Begin configuration section.
stage=0
stop_stage=100
nj=2
corpus=                   # speechocean762 root; default: shared/data/speechocean762 beside the repository
test_speakers=48          # held out, 12 per age group x gender
train_speakers=0          # train on the first N speakers of data/train_speaker_order (0: all 152)
utts_per_speaker=20       # the corpus's median utterances per speaker (its README), for --num-clusters auto
ssl=dino                  # dino|contrastive|memo
ssl_config=               # default: conf/<ssl>.yaml
ssl_overrides=            # e.g. "seed=778"
classifier_config=conf/classifier.yaml
classifier_overrides=
rounds=2
num_clusters=auto         # k-means k; auto: the training utterances / --utts-per-speaker (about the speakers)
keep_fraction=0.7
cluster_merge=none        # none|cosine|plda: merge whole k-means clusters that are one speaker
pl_init=ssl               # each round's classifier starts from: ssl | previous | scratch
pl_tag=                   # rounds in <exp>/pl_<ssl>_<tag>_r<r>, to keep several choices side by side
adapt_set=                # unlabelled in-domain data for the back-end's cosine mean and PLDA adaptation
augment=false             # stored augmented copies (README.md: an hour on 2 cores; training crops get the
                          # loader's own per-crop channel changes either way)
exp=                      # experiment root (default: exp, or exp_<N>spk with --train-speakers N)
device=auto
# End configuration section.

# --help: the header comment above, then steps/sv_pipeline.sh's stages 2-9 and result names (from its
# header), then the options: generated, so they cannot drift from the headers.
help_message="$("$(dirname "$0")/utils/print_header.sh" "$0" "$(dirname "$0")/steps/sv_pipeline.sh")

Usage: $0 [options]
  --stage N                first stage to run ($stage)
  --stop-stage N           last stage to run ($stop_stage)
  --nj N                   parallel jobs ($nj)
  --corpus DIR             speechocean762 root, with utts.tsv and audio/; a relative path is taken from
                           the directory you call from (default: ../shared/data/speechocean762 beside the repository)
  --test-speakers N        held-out speakers, a multiple of 4 ($test_speakers)
  --train-speakers N       train on the first N speakers of data/train_speaker_order, in exp_<N>spk
                           (0: all of data/train, in exp) ($train_speakers)
  --utts-per-speaker N     utterances per speaker assumed by --num-clusters auto ($utts_per_speaker)
  --ssl NAME               dino|contrastive|memo ($ssl)
  --ssl-config FILE        SSL config (default: conf/<ssl>.yaml)
  --ssl-overrides 'K=V ..' overrides of the SSL config
  --classifier-config FILE pseudo-label classifier config ($classifier_config)
  --classifier-overrides 'K=V ..'
  --rounds N               pseudo-labelling rounds ($rounds)
  --num-clusters K|auto    k-means clusters; auto: training utterances / --utts-per-speaker ($num_clusters)
  --keep-fraction F        confident share kept per cluster ($keep_fraction)
  --cluster-merge M        none|cosine|plda: merge k-means clusters that are one speaker ($cluster_merge)
  --pl-init I              ssl|previous|scratch: each round's classifier init ($pl_init)
  --pl-tag TAG             rounds in <exp>/pl_<ssl>_<TAG>_r<r>
  --adapt-set NAME         data/NAME, unlabelled in-domain data for the back-end: cosine with its mean,
                           PLDA adapted to it (default: none)
  --augment BOOL           stored augmented copies (reverb, noise, music, babble) to train on ($augment)
  --exp DIR                experiment root (default: exp; with --train-speakers N: exp_<N>spk)
  --device DEV             auto|cpu|cuda[:i] ($device)
e.g.: $0 --stage 4 --stop-stage 6 --ssl contrastive
      $0 --stage 2 --train-speakers 50     # 50 unlabelled training speakers, in exp_50spk"

caller_dir=$PWD
cd "$(dirname "$0")"
. utils/parse_options.sh
. steps/libs/common.sh  # log, check_positive_ints
# A corpus root given is taken from the caller's directory; the default lies beside the repository.
case $corpus in
  "") corpus=$(dirname "$(readlink -f "$0")")/../../../../shared/data/speechocean762 ;;
  /*) ;;
  *) corpus=$caller_dir/$corpus ;;
esac
[[ $train_speakers =~ ^[0-9]+$ ]] || { log "ERROR: --train-speakers must be a non-negative integer, got '$train_speakers'" >&2; exit 1; }
[[ $num_clusters =~ ^([0-9]+|auto)$ ]] || { log "ERROR: --num-clusters must be auto or a non-negative integer, got '$num_clusters'" >&2; exit 1; }
check_positive_ints utts_per_speaker
train_set=train
if [ "$train_speakers" -gt 0 ]; then
  train_set=train_${train_speakers}spk
  : "${exp:=exp_${train_speakers}spk}"
fi
: "${exp:=exp}"

# The pipeline's options, checked once stage 0 has installed what the check needs, before any other stage
# (--num-clusters auto counts the utterances later).
pipeline_opts=(--nj "$nj" --device "$device" --test-sets test --ssl "$ssl"
  --ssl-config "${ssl_config:-conf/$ssl.yaml}" --ssl-overrides "$ssl_overrides"
  --classifier-config "$classifier_config" --classifier-overrides "$classifier_overrides"
  --rounds "$rounds" --keep-fraction "$keep_fraction" --pl-tag "$pl_tag"
  --cluster-merge "$cluster_merge" --pl-init "$pl_init" --adapt-set "$adapt_set" --augment "$augment")

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: install what is missing"
  "$(dirname "$(readlink -f "$0")")/../../../tools/install.sh"
fi

. ./path.sh
steps/sv_pipeline.sh --check-only true "${pipeline_opts[@]}" --num-clusters "${num_clusters/auto/2}" \
  --train-set "$train_set" --exp "$exp" >/dev/null

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: data dirs from $corpus"
  local/data.sh --test-speakers $test_speakers "$corpus" data
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  # Features and copies of all training speakers, in exp/ whatever the training size.
  steps/sv_pipeline.sh --stage 2 --stop-stage 2 "${pipeline_opts[@]}" --num-clusters 2 --train-set train --exp exp
  if [ $train_set != train ]; then
    log "Stage 2: data/$train_set, the first $train_speakers speakers of data/train_speaker_order"
    local/subset_train.sh $train_speakers data/train_speaker_order data/train data/$train_set
  fi
fi

if [ $stop_stage -ge 3 ]; then
  if [ "$num_clusters" = auto ]; then
    [ -f data/$train_set/utt2spk ] || { log "ERROR: no data/$train_set: run stages 1 and 2 first" >&2; exit 1; }
    num_clusters=$(( $(wc -l < data/$train_set/utt2spk) / utts_per_speaker ))
    [ "$num_clusters" -ge 2 ] || num_clusters=2
    log "--num-clusters auto: $num_clusters, the $(wc -l < data/$train_set/utt2spk) utterances of data/$train_set" \
        "/ $utts_per_speaker utterances per speaker"
  fi
  steps/sv_pipeline.sh --stage $(( stage > 3 ? stage : 3 )) --stop-stage $stop_stage "${pipeline_opts[@]}" \
    --num-clusters "$num_clusters" --train-set "$train_set" --exp "$exp"
fi
log "Done (stages $stage..$stop_stage)"
