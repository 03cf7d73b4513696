#!/usr/bin/env bash
# Self-supervised speaker verification on VoxCeleb: train on VoxCeleb2 dev
# without speaker labels, test on VoxCeleb1-O/E/H (cleaned lists).
#
# Stages (./run.sh runs all; pick with --stage N --stop-stage M):
#   0  install what is missing (tools/install.sh; idempotent), then download
#      VoxCeleb, MUSAN, RIRS_NOISES (only with --download true)
#   1  data dirs: data/voxceleb2_dev (m4a through ffmpeg), data/voxceleb1 (+ _dev, _test),
#      Kaldi trials data/voxceleb1/trials_{o,e,h} (and data/voxceleb1_test/trials, = O)
#   2-9 the generic pipeline, steps/sv_pipeline.sh (its header lists the stages):
#      fbank and VAD, augmented copies of voxceleb2_dev, fbank baseline, SSL
#      training, embeddings, cosine scoring on O/E/H, pseudo-label rounds
#      (k-means, AAM classifier, PLDA), supervised upper bound, summary
#   Result lines are named <system>_o, <system>_e, <system>_h.
#
# Disk: VoxCeleb2 dev is 1,092,009 utterances (about 2,360 h); each augmented
# copy takes about 270 GB as wav, roughly half as flac (used here), and its
# compressed 80-dim fbank about 70 GB: with the four copies, some 540 GB of
# flac and 280 GB of fbank beyond the clean set's 70 GB.
# --online-aug true instead trains from the audio of wav.scp and augments it on
# the training device (reverb, noise, music, babble at the same SNRs): no
# copies and no fbank of copies; only the corpora (VoxCeleb, MUSAN, RIRS_NOISES)
# plus the fbank of the clean train set and of VoxCeleb1, which the embeddings
# are extracted from. With it, --convert-audio true (the default) decodes the
# m4a once at the end of stage 1 (steps/convert_audio.sh) into one 16 kHz
# 16-bit flac (--convert-format wav: wav) file per utterance under --convert-dir,
# and everything from stage 2 on uses data/voxceleb2_dev_flac (_wav): the
# loader then seeks in files instead of running ffmpeg for each item. Estimate, not measured: 2,360 h x 16 kHz x
# ~1 byte per sample in flac is about 135 GB, 2-3 times the m4a.
set -euo pipefail

# Begin configuration section.
stage=0
stop_stage=100
# Corpus locations: the one place to edit. Stage 1 fails if they are missing or empty;
# relative paths are taken from the directory ./run.sh is called from.
vox1_root=/export/corpora/VoxCeleb1     # wav/<spk>/<video>/<seg>.wav, vox1_meta.csv, trial lists
vox2_root=/export/corpora/VoxCeleb2     # dev/aac/<spk>/<video>/<seg>.m4a
musan_root=/export/corpora/musan        # empty: generated noise, music and babble
rirs_root=/export/corpora/RIRS_NOISES   # empty: simulated rooms
download=false                          # stage 0: fetch the corpora into the roots above
download_dir=downloads                  # archives are kept here
vox_user=                               # credentials from the VoxCeleb request form
vox_password=
nj=40                                   # parallel CPU jobs
num_gpus=8                              # training processes, one per GPU (capped to the GPUs found;
                                        # --device cpu: to the cores available)
device=auto
ssl=dino                                # dino|contrastive|memo
ssl_config=conf/dino_ecapa.yaml         # or conf/dino_resnet34.yaml (then --classifier-overrides model=from_init)
ssl_overrides=                          # e.g. "optim.lr.base=0.2 train.epochs=100"
classifier_config=conf/classifier_ecapa.yaml
classifier_overrides=
aug_types="reverb noise music babble"
online_aug=false                        # true: augment raw audio on the GPU, no stored copies (see above)
convert_audio=true                      # with --online-aug true: train from VoxCeleb2 dev converted to files
convert_format=flac                     # flac (~135 GB, estimate) | wav (about twice that; loader 4x as fast)
convert_dir=flac                        # the converted files; relative: in this dir
rounds=2                                # pseudo-labelling rounds
num_clusters=6000                       # about the number of VoxCeleb2 dev speakers (5,994)
keep_fraction=0.8                       # pseudo-labels: most central fraction of each cluster kept
min_cluster_size=5
cluster_method=kmeans                   # kmeans|minibatch|agglomerative; agglomerative with --num-clusters 0 finds k
cluster_threshold=auto                  # agglomerative, --num-clusters 0: cosine-distance threshold (auto fits
                                        # the score modes of random pairs: too few same-speaker pairs at this scale)
plda_recluster=false                    # second clustering pass on the scores of a PLDA trained on the first
cluster_select=nearest                  # nearest|posterior
max_cluster_size=0                      # most members kept per cluster (0: no limit)
pl_tag=                                 # rounds in exp/pl_<ssl>_<tag>_r<r>, to keep several choices side by side
plda_lda_dim=128
# End configuration section.

# --help: the header comment above, then steps/sv_pipeline.sh's stages 2-9 and result names (from its
# header), then the options: generated, so they cannot drift from the headers.
help_message="$("$(dirname "$0")/utils/print_header.sh" "$0" "$(dirname "$0")/steps/sv_pipeline.sh")

Usage: $0 [options]
  --stage N              first stage to run ($stage)
  --stop-stage N         last stage to run ($stop_stage)
  --vox1-root DIR        VoxCeleb1 root ($vox1_root)
  --vox2-root DIR        VoxCeleb2 root ($vox2_root)
  --musan-root DIR       MUSAN root, empty for generated noise ($musan_root)
  --rirs-root DIR        RIRS_NOISES root, empty for simulated rooms ($rirs_root)
  --download BOOL        stage 0 downloads the corpora ($download)
  --download-dir DIR     where archives go ($download_dir)
  --vox-user NAME        VoxCeleb download credentials ($vox_user)
  --vox-password PASS    ($vox_password)
  --nj N                 parallel CPU jobs ($nj)
  --num-gpus N           training processes, one per GPU ($num_gpus; capped to the GPUs found, on CPU to the cores)
  --device DEV           auto|cpu|cuda ($device)
  --ssl NAME             dino|contrastive|memo ($ssl)
  --ssl-config FILE      SSL config ($ssl_config)
  --ssl-overrides 'K=V ..'  overrides of the SSL config
  --classifier-config F  pseudo-label classifier config ($classifier_config)
  --classifier-overrides 'K=V ..'
  --aug-types \"T ...\"    augmentation types ($aug_types)
  --online-aug BOOL      augment raw audio on the training device, no stored copies ($online_aug)
  --convert-audio BOOL   with --online-aug true, stage 1 converts VoxCeleb2 dev to files, trained on ($convert_audio)
  --convert-format F     flac|wav: disk against loader speed ($convert_format)
  --convert-dir DIR      where the converted files go ($convert_dir)
  --rounds N             pseudo-labelling rounds ($rounds)
  --num-clusters N       k-means clusters for pseudo-labels ($num_clusters)
  --keep-fraction F      fraction kept per cluster ($keep_fraction)
  --min-cluster-size N   smaller clusters are dropped ($min_cluster_size)
  --cluster-method M     kmeans|minibatch|agglomerative ($cluster_method)
  --cluster-threshold T  agglomerative threshold with --num-clusters 0 ($cluster_threshold)
  --plda-recluster B     re-cluster with a PLDA (true|false) ($plda_recluster)
  --cluster-select S     nearest|posterior ($cluster_select)
  --max-cluster-size N   most members kept per cluster, 0: no limit ($max_cluster_size)
  --pl-tag TAG           rounds in exp/pl_<ssl>_<TAG>_r<r> (default: exp/pl_<ssl>_r<r>)
  --plda-lda-dim N       LDA dimension before PLDA ($plda_lda_dim)
e.g.: $0 --vox1-root /data/VoxCeleb1 --vox2-root /data/VoxCeleb2 --stage 1 --stop-stage 3"

caller_dir=$PWD
cd "$(dirname "$0")"
. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
. steps/libs/common.sh  # log
# Corpus roots given as relative paths are taken from the caller's directory.
for root_var in vox1_root vox2_root musan_root rirs_root download_dir; do
  case ${!root_var} in ""|/*) ;; *) printf -v $root_var '%s' "$caller_dir/${!root_var}" ;; esac
done

require_dir() {  # <dir> <what>: fail loudly on a missing or empty corpus directory
  if [ ! -d "$1" ] || [ -z "$(ls -A "$1" 2>/dev/null)" ]; then
    log "ERROR: $2 '$1' is missing or empty: set it at the top of $0 (or --download true)"
    exit 1
  fi
}

require_ffmpeg() {  # VoxCeleb2's wav.scp decodes m4a through ffmpeg
  command -v ffmpeg >/dev/null || { log "ERROR: ffmpeg is not on PATH (needed to read VoxCeleb2 m4a)"; exit 1; }
}

[[ "$convert_audio" =~ ^(true|false)$ ]] || { log "ERROR: --convert-audio must be true or false, got '$convert_audio'"; exit 1; }
[[ "$convert_format" =~ ^(flac|wav)$ ]] || { log "ERROR: --convert-format must be flac or wav, got '$convert_format'"; exit 1; }
vox2_dev=voxceleb2_dev
train=$vox2_dev
# Raw-audio training reads the converted files (made at the end of stage 1).
[ "$online_aug" != true ] || [ "$convert_audio" != true ] || train=${vox2_dev}_$convert_format
# The pipeline's options, checked once stage 0 has installed what the check needs, before any download.
pipeline_opts=(--nj "$nj" --device "$device" --num-gpus "$num_gpus" --train-set "$train" --test-sets voxceleb1
  --ssl "$ssl" --ssl-config "$ssl_config" --ssl-overrides "$ssl_overrides"
  --classifier-config "$classifier_config" --classifier-overrides "$classifier_overrides"
  --rounds "$rounds" --num-clusters "$num_clusters" --keep-fraction "$keep_fraction"
  --min-cluster-size "$min_cluster_size" --cluster-method "$cluster_method" --cluster-threshold "$cluster_threshold"
  --plda-recluster "$plda_recluster" --cluster-select "$cluster_select" --max-cluster-size "$max_cluster_size"
  --pl-tag "$pl_tag" --plda-lda-dim "$plda_lda_dim" --aug-types "$aug_types" --aug-audio-format flac
  --online-aug "$online_aug" --rir-dir "$rirs_root" --musan-dir "$musan_root")

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: install what is missing"
  "$(dirname "$(readlink -f "$0")")/../../../tools/install.sh"
  . ./path.sh  # the virtual env on PATH, now that it exists
fi
steps/sv_pipeline.sh --check-only true "${pipeline_opts[@]}" >/dev/null

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  if $download; then
    log "Stage 0: download VoxCeleb, MUSAN and RIRS_NOISES"
    local/download_voxceleb.sh --user "$vox_user" --password "$vox_password" $download_dir $vox1_root $vox2_root
    if [ -n "$musan_root" ] && [ -n "$rirs_root" ]; then
      local/download_musan_rirs.sh $download_dir $musan_root $rirs_root
    fi
  else
    log "Stage 0: download skipped (--download false); using the corpora on disk"
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: data dirs and trials"
  require_dir $vox1_root/wav "VoxCeleb1 audio"
  require_dir $vox2_root/dev "VoxCeleb2 dev"
  require_ffmpeg
  python local/make_voxceleb2.py $vox2_root dev data/$vox2_dev
  python local/make_voxceleb1.py $vox1_root data
  for d in $vox2_dev voxceleb1 voxceleb1_dev voxceleb1_test; do
    utils/validate_data_dir.sh --no-text --no-feats data/$d
  done
  if [ $train != $vox2_dev ]; then
    log "Stage 1: converting data/$vox2_dev (m4a through ffmpeg) to $convert_format in $convert_dir/$vox2_dev -> data/$train" \
        "(--convert-audio true), which stages 2 and on use"
    steps/convert_audio.sh --nj $nj --cmd "$train_cmd" --format $convert_format data/$vox2_dev data/$train $convert_dir/$vox2_dev
  fi
fi

if [ $stop_stage -ge 2 ]; then
  [ -z "$musan_root" ] || require_dir $musan_root "MUSAN"
  [ -z "$rirs_root" ] || require_dir $rirs_root "RIRS_NOISES"
  require_ffmpeg
  steps/sv_pipeline.sh --stage $(( stage > 2 ? stage : 2 )) --stop-stage $stop_stage "${pipeline_opts[@]}"
fi

log "Done (stages $stage..$stop_stage)"
