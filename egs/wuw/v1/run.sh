#!/usr/bin/env bash
# Telephone recipe: self-supervised speaker verification on real 8 kHz
# telephone speech, WUW Corpus II as shipped in ../shared/data (131 callers,
# 227 calls on landline, cell and speaker phones, headerless mu-law,
# CC BY-SA 4.0). Named callers are held out for cross-call trials; every other
# call trains without labels (README.md: the protocol and the reasons).
#
# Stages (plain ./run.sh runs them all; pick with --stage N --stop-stage M):
#   0  install what is missing (tools/install.sh; idempotent)
#   1  data dirs data/{train,train_named,test}, data/test/trials_crosscall (the
#      headline) and data/test/trials (local/data.sh); with --extra-train, the
#      other data dirs resampled to 8 kHz in their wav.scp pipes and combined
#      with data/train into data/train_extra (the unlabelled training pool)
#   2-9 the generic pipeline, steps/sv_pipeline.sh (see its header): fbank
#      and VAD, augmented 8 kHz copies, fbank baseline, SSL training,
#      embeddings, cosine scoring, pseudo-label rounds, supervised upper bound
#      on the named training speakers (data/train_named), summary
# Results: <exp>/results.txt (exp/results.txt by default).
set -euo pipefail

# Begin configuration section.
stage=0
stop_stage=100
nj=2
corpus=                   # WUW Corpus II root; default: shared/data/wuw_corpus_ii beside the repository
test_multicall=13         # held-out named speakers with several calls
test_singlecall=12        # held-out named speakers with one call
extra_train=              # other data dirs added to the unlabelled training pool, resampled to 8 kHz
ssl=dino                  # dino|contrastive|memo
ssl_config=               # default: conf/<ssl>.yaml
ssl_overrides=            # e.g. "seed=778"
classifier_config=conf/classifier.yaml
classifier_overrides=
rounds=2
num_clusters=80           # about the 93 training callers (59 of them unnamed calls), under a tenth of the utterances
keep_fraction=0.7
cluster_merge=none        # none|cosine|plda: merge whole k-means clusters that are one speaker
pl_init=ssl               # each round's classifier starts from: ssl | previous | scratch
memo_start=fused          # --ssl memo: round 1 starts from the teachers' fused embeddings | <arch>
pl_tag=                   # rounds in <exp>/pl_<ssl>_<tag>_r<r>, to keep several choices side by side
adapt_set=                # unlabelled in-domain set for the back-end (default with --extra-train: train)
plda_adapt_scales=0.75,0.25  # within,between shares of the in-domain excess variance (steps/sv_pipeline.sh)
exp=                      # experiment root (default: exp, or exp_extra with --extra-train)
device=auto
# End configuration section.

# --help: the header comment above, then steps/sv_pipeline.sh's stages 2-9 and result names (from its
# header), then the options: generated, so they cannot drift from the headers.
help_message="$("$(dirname "$0")/utils/print_header.sh" "$0" "$(dirname "$0")/steps/sv_pipeline.sh")

Usage: $0 [options]
  --stage N                first stage to run ($stage)
  --stop-stage N           last stage to run ($stop_stage)
  --nj N                   parallel jobs ($nj)
  --corpus DIR             WUW Corpus II root, with utts.tsv and calls/; a relative path is taken from
                           the directory you call from (default: ../shared/data/wuw_corpus_ii beside the repository)
  --test-multicall N       held-out named speakers with several calls ($test_multicall)
  --test-singlecall N      held-out named speakers with one call ($test_singlecall)
  --extra-train 'DIR ...'  other Kaldi data dirs (wav.scp, utt2spk) added to the unlabelled training
                           pool, resampled to 8 kHz in the wav.scp pipe (relative: from where you call)
  --ssl NAME               dino|contrastive|memo ($ssl)
  --ssl-config FILE        SSL config (default: conf/<ssl>.yaml)
  --ssl-overrides 'K=V ..' overrides of the SSL config
  --classifier-config FILE pseudo-label classifier config ($classifier_config)
  --classifier-overrides 'K=V ..'
  --rounds N               pseudo-labelling rounds ($rounds)
  --num-clusters K         k-means clusters ($num_clusters)
  --keep-fraction F        confident share kept per cluster ($keep_fraction)
  --cluster-merge M        none|cosine|plda: merge k-means clusters that are one speaker ($cluster_merge)
  --pl-init I              ssl|previous|scratch: each round's classifier init ($pl_init)
  --memo-start S           --ssl memo: fused|<arch>: round 1 from the teachers' fused embeddings or one ($memo_start)
  --pl-tag TAG             rounds in <exp>/pl_<ssl>_<TAG>_r<r>
  --adapt-set NAME         data/NAME, unlabelled in-domain data for the back-end: cosine with its mean,
                           PLDA adapted to it (default: none; with --extra-train: train)
  --plda-adapt-scales W,B  shares of the adaptation set's excess variance booked within and between
                           speakers ($plda_adapt_scales, Kaldi's SRE16 recipe)
  --exp DIR                experiment root (default: exp; with --extra-train: exp_extra)
  --device DEV             auto|cpu|cuda[:i] ($device)
e.g.: $0 --stage 4 --stop-stage 6 --ssl contrastive
      $0 --extra-train ../../arabic_commands/v1/data/train   # WUW + Arabic at 8 kHz, in exp_extra"

caller_dir=$PWD
cd "$(dirname "$0")"
. utils/parse_options.sh
. steps/libs/common.sh  # log
# A corpus root given is taken from the caller's directory; the default lies beside the repository.
case $corpus in
  "") corpus=$(dirname "$(readlink -f "$0")")/../../../../shared/data/wuw_corpus_ii ;;
  /*) ;;
  *) corpus=$caller_dir/$corpus ;;
esac
extra_dirs=()
for d in $extra_train; do
  case $d in /*) ;; *) d=$caller_dir/$d ;; esac
  [ -f "$d/wav.scp" ] && [ -f "$d/utt2spk" ] || { log "ERROR: --extra-train $d: not a data dir with wav.scp and utt2spk" >&2; exit 1; }
  extra_dirs+=("$d")
done
train_set=train
if [ ${#extra_dirs[@]} -gt 0 ]; then
  train_set=train_extra
  : "${exp:=exp_extra}" "${adapt_set:=train}"
fi
: "${exp:=exp}"

# The pipeline's options, checked once stage 0 has installed what the check needs, before any other stage.
pipeline_opts=(--nj "$nj" --device "$device" --train-set "$train_set" --test-sets test --ssl "$ssl"
  --ssl-config "${ssl_config:-conf/$ssl.yaml}" --ssl-overrides "$ssl_overrides"
  --classifier-config "$classifier_config" --classifier-overrides "$classifier_overrides"
  --rounds "$rounds" --num-clusters "$num_clusters" --keep-fraction "$keep_fraction" --pl-tag "$pl_tag"
  --cluster-merge "$cluster_merge" --pl-init "$pl_init" --memo-start "$memo_start"
  --use-vad true --supervised-set train_named --adapt-set "$adapt_set" --exp "$exp" --plda-adapt-scales "$plda_adapt_scales")

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: install what is missing"
  "$(dirname "$(readlink -f "$0")")/../../../tools/install.sh"
fi

. ./path.sh
steps/sv_pipeline.sh --check-only true "${pipeline_opts[@]}" >/dev/null

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: data dirs from $corpus"
  local/data.sh --test-multicall $test_multicall --test-singlecall $test_singlecall "$corpus" data
  if [ ${#extra_dirs[@]} -gt 0 ]; then
    parts=(data/train)
    for i in "${!extra_dirs[@]}"; do
      utils/resample_data_dir.sh 8000 "${extra_dirs[$i]}" data/extra$((i + 1))_8k
      parts+=(data/extra$((i + 1))_8k)
    done
    utils/combine_data.sh data/train_extra "${parts[@]}"
    utils/validate_data_dir.sh --no-feats --no-text data/train_extra
  fi
fi

if [ $stop_stage -ge 2 ]; then
  steps/sv_pipeline.sh --stage $(( stage > 2 ? stage : 2 )) --stop-stage $stop_stage "${pipeline_opts[@]}"
fi
log "Done (stages $stage..$stop_stage)"
