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
#      headline) and data/test/trials (local/data.sh); with --extra-corpora the
#      other corpora's data dirs (local/extra_corpora.sh); with them or
#      --extra-train, each other data dir's ids prefixed with its name, its
#      audio made 8 kHz telephone speech (--extra-channel) and written once as
#      flac in audio/ (--extra-write-audio), all combined with data/train into
#      data/train_extra (the unlabelled pool)
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
extra_train=              # other data dirs added to the unlabelled training pool, at 8 kHz
extra_corpora=            # other corpora of ../shared/data added to the pool: arabic_commands speechocean762
extra_root=               # their root; default: shared/data beside the repository
extra_channel=telephone   # telephone|resample: how the pool's other data becomes 8 kHz
extra_write_audio=true    # with telephone: the pool's other data written once as 8 kHz flac (audio/), not re-simulated per read
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
adapt_set=                # unlabelled in-domain set for the back-end (default with --extra-train or --extra-corpora: train)
plda_adapt_scales=0.75,0.25  # within,between shares of the in-domain excess variance (steps/sv_pipeline.sh)
exp=                      # experiment root (default: exp, or exp_extra with --extra-train or --extra-corpora)
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
                           pool, made 8 kHz by --extra-channel in the wav.scp pipe (relative: from where you call)
  --extra-corpora 'C ...'  other corpora added to the pool, every speaker, prepared by their recipes:
                           arabic_commands speechocean762 (local/extra_corpora.sh)
  --extra-root DIR         where they lie (default: ../shared/data beside the repository)
  --extra-channel C        telephone: a simulated telephone channel, one per recording (handset, level,
                           line noise, a codec: utils/telephone_data_dir.sh); resample: plain resampling
                           ($extra_channel)
  --extra-write-audio BOOL with --extra-channel telephone, write that audio once as 8 kHz flac in audio/
                           (steps/convert_audio.sh), read by every later stage instead of a channel per read
                           ($extra_write_audio; to redo it after changing the pool, remove audio/)
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
                           PLDA adapted to it (default: none; with --extra-train or --extra-corpora: train)
  --plda-adapt-scales W,B  shares of the adaptation set's excess variance booked within and between
                           speakers ($plda_adapt_scales, Kaldi's SRE16 recipe)
  --exp DIR                experiment root (default: exp; with --extra-train or --extra-corpora: exp_extra)
  --device DEV             auto|cpu|cuda[:i] ($device)
e.g.: $0 --stage 4 --stop-stage 6 --ssl contrastive
      $0 --extra-corpora 'arabic_commands speechocean762'   # WUW + both through the channel, in exp_extra"

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
case $extra_root in
  "") extra_root=$(dirname "$(readlink -f "$0")")/../../../../shared/data ;;
  /*) ;;
  *) extra_root=$caller_dir/$extra_root ;;
esac
case $extra_channel in
  telephone|resample) ;;
  *) log "ERROR: --extra-channel must be telephone or resample, got '$extra_channel'" >&2; exit 1 ;;
esac
[[ "$extra_write_audio" =~ ^(true|false)$ ]] || { log "ERROR: --extra-write-audio must be true or false, got '$extra_write_audio'" >&2; exit 1; }
# The pool's other parts: a name (the prefix of its ids) and a data dir each.
extra_names=() extra_dirs=()
for d in $extra_train; do
  case $d in /*) ;; *) d=$caller_dir/$d ;; esac
  [ -f "$d/wav.scp" ] && [ -f "$d/utt2spk" ] || { log "ERROR: --extra-train $d: not a data dir with wav.scp and utt2spk" >&2; exit 1; }
  extra_names+=("extra$(( ${#extra_names[@]} + 1 ))") extra_dirs+=("$d")
done
for name in $extra_corpora; do
  case $name in
    arabic_commands|speechocean762) extra_names+=("$name") extra_dirs+=("data/${name}_all") ;;
    *) log "ERROR: --extra-corpora: unknown corpus '$name' (known: arabic_commands speechocean762)" >&2; exit 1 ;;
  esac
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
. ./cmd.sh
steps/sv_pipeline.sh --check-only true "${pipeline_opts[@]}" >/dev/null

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: data dirs from $corpus"
  local/data.sh --test-multicall $test_multicall --test-singlecall $test_singlecall "$corpus" data
  [ -z "$extra_corpora" ] || local/extra_corpora.sh --corpora "$extra_corpora" "$extra_root" data
  if [ ${#extra_dirs[@]} -gt 0 ]; then
    parts=(data/train)
    for i in "${!extra_dirs[@]}"; do
      name=${extra_names[$i]}
      utils/copy_data_dir.sh --utt-prefix "$name-" --spk-prefix "$name-" "${extra_dirs[$i]}" "data/pool_$name"
      if [ "$extra_channel" = resample ]; then
        utils/resample_data_dir.sh 8000 "data/pool_$name" "data/pool_${name}_8k"
      elif $extra_write_audio; then
        utils/telephone_data_dir.sh "data/pool_$name" "data/pool_${name}_tel"
        steps/convert_audio.sh --nj "$nj" --cmd "$train_cmd" "data/pool_${name}_tel" "data/pool_${name}_8k" "audio/pool_$name"
      else
        utils/telephone_data_dir.sh "data/pool_$name" "data/pool_${name}_8k"
      fi
      parts+=("data/pool_${name}_8k")
    done
    utils/combine_data.sh data/train_extra "${parts[@]}"
    utils/validate_data_dir.sh --no-feats --no-text data/train_extra
  fi
fi

if [ $stop_stage -ge 2 ]; then
  steps/sv_pipeline.sh --stage $(( stage > 2 ? stage : 2 )) --stop-stage $stop_stage "${pipeline_opts[@]}"
fi
log "Done (stages $stage..$stop_stage)"
