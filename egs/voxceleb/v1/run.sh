#!/usr/bin/env bash
# Self-supervised speaker verification on VoxCeleb: train on VoxCeleb2 dev
# without speaker labels, test on VoxCeleb1-O/E/H (cleaned lists).
#
# Stages (./run.sh runs all; pick with --stage N --stop-stage M):
#   0  download VoxCeleb, MUSAN, RIRS_NOISES (only with --download true)
#   1  data dirs: data/voxceleb2_dev (m4a through ffmpeg), data/voxceleb1 (+ _dev, _test),
#      Kaldi trials data/voxceleb1_test/trials (O), data/voxceleb1/trials_{o,e,h}
#   2  augmented copies of voxceleb2_dev (reverb, noise, music, babble) -> data/voxceleb2_dev_combined
#   3  fbank features and energy VAD
#   4  DINO training on data/voxceleb2_dev_combined (no labels; one copy drawn per crop)
#   5  embeddings of VoxCeleb1 (all trials) and VoxCeleb2 dev (back-end statistics, clustering)
#   6  cosine scoring on VoxCeleb1-O/E/H -> exp/results.txt
#   7  pseudo-labels: k-means of the VoxCeleb2 dev embeddings, PLDA on the clusters, PLDA scoring
#
# Disk: VoxCeleb2 dev is 1,092,009 utterances (about 2,360 h); each augmented
# copy takes about 270 GB as wav, roughly half as flac (used here), and its
# compressed 80-dim fbank about 70 GB.
set -euo pipefail

# Begin configuration section.
stage=0
stop_stage=100
# Corpus locations: the one place to edit. Stage 1 fails if they are missing or empty.
vox1_root=/export/corpora/VoxCeleb1     # wav/<spk>/<video>/<seg>.wav, vox1_meta.csv, trial lists
vox2_root=/export/corpora/VoxCeleb2     # dev/aac/<spk>/<video>/<seg>.m4a
musan_root=/export/corpora/musan        # empty: generated noise, music and babble
rirs_root=/export/corpora/RIRS_NOISES   # empty: simulated rooms
download=false                          # stage 0: fetch the corpora into the roots above
download_dir=downloads                  # archives are kept here
vox_user=                               # credentials from the VoxCeleb request form
vox_password=
nj=40                                   # parallel CPU jobs
num_gpus=8                              # GPUs for training (torchrun)
device=auto
dino_config=conf/dino_ecapa.yaml        # or conf/dino_resnet34.yaml
aug_types="reverb noise music babble"
num_clusters=6000                       # about the number of VoxCeleb2 dev speakers (5,994)
keep_fraction=0.8                       # pseudo-labels: most central fraction of each cluster kept
plda_lda_dim=128
# End configuration section.

help_message="Usage: $0 [options]
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
  --num-gpus N           GPUs for training ($num_gpus)
  --device DEV           auto|cpu|cuda ($device)
  --dino-config FILE     DINO config ($dino_config)
  --aug-types \"T ...\"    augmentation types ($aug_types)
  --num-clusters N       k-means clusters for pseudo-labels ($num_clusters)
  --keep-fraction F      fraction kept per cluster ($keep_fraction)
  --plda-lda-dim N       LDA dimension before PLDA ($plda_lda_dim)
e.g.: $0 --vox1-root /data/VoxCeleb1 --vox2-root /data/VoxCeleb2 --stage 1 --stop-stage 3"

cd "$(dirname "$0")"
. ./path.sh
. ./cmd.sh
. utils/parse_options.sh

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') ($fname:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

require_dir() {  # <dir> <what>: fail loudly on a missing or empty corpus directory
  if [ ! -d "$1" ] || [ -z "$(ls -A "$1" 2>/dev/null)" ]; then
    log "ERROR: $2 '$1' is missing or empty: set it at the top of $0 (or --download true)"
    exit 1
  fi
}

require_ffmpeg() {  # VoxCeleb2's wav.scp decodes m4a through ffmpeg
  command -v ffmpeg >/dev/null || { log "ERROR: ffmpeg is not on PATH (needed to read VoxCeleb2 m4a)"; exit 1; }
}

train=voxceleb2_dev
dino_exp=exp/dino_$(basename "$dino_config" .yaml)

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
  python local/make_voxceleb2.py $vox2_root dev data/$train
  python local/make_voxceleb1.py $vox1_root data
  for d in $train voxceleb1 voxceleb1_dev voxceleb1_test; do
    utils/validate_data_dir.sh --no-text --no-feats data/$d
  done
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: augmented copies of $train ($aug_types)"
  require_ffmpeg
  [ -z "$musan_root" ] || require_dir $musan_root "MUSAN"
  [ -z "$rirs_root" ] || require_dir $rirs_root "RIRS_NOISES"
  steps/augment_data_dir.sh --nj $nj --cmd "$train_cmd" --types "$aug_types" --audio-format flac \
    --rir-dir "$rirs_root" --musan-dir "$musan_root" data/$train exp/augment/$train
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: fbank features and energy VAD"
  require_ffmpeg
  for d in ${train}_combined voxceleb1; do
    steps/make_fbank.sh --nj $nj --cmd "$train_cmd" data/$d exp/make_fbank/$d fbank
    steps/compute_vad_decision.sh --nj $nj --cmd "$train_cmd" data/$d exp/make_vad/$d fbank
  done
  # The clean training utterances again on their own, sharing the features.
  utils/subset_data_dir.sh --utt-list data/$train/utt2spk data/${train}_combined data/${train}_clean
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: DINO training ($dino_config) on data/${train}_combined -> $dino_exp"
  steps/train_dino.sh --cmd "$cuda_cmd" --nj-gpus $num_gpus --device $device --config $dino_config \
    data/${train}_combined $dino_exp
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: embeddings of VoxCeleb1 and of the clean VoxCeleb2 dev"
  for d in voxceleb1 ${train}_clean; do
    steps/extract_embeddings.sh --nj $num_gpus --cmd "$cuda_cmd" --device $device \
      $dino_exp/final.pt data/$d $dino_exp/xvectors_$d
  done
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: cosine scoring on VoxCeleb1-O/E/H"
  xv=$dino_exp/xvectors_voxceleb1
  for t in o e h; do
    steps/score_cosine.sh --mean-dir $dino_exp/xvectors_${train}_clean data/voxceleb1/trials_$t \
      $xv $xv $dino_exp/scores/cosine_vox1_$t
    steps/compute_metrics.sh --system "$(basename $dino_exp)_cosine_vox1_$t" --results exp/results.txt \
      --det-plot $dino_exp/scores/cosine_vox1_${t}_det.png data/voxceleb1/trials_$t $dino_exp/scores/cosine_vox1_$t
  done
  cat exp/results.txt
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  log "Stage 7: pseudo-labels ($num_clusters clusters) and PLDA on them"
  # True VoxCeleb2 speakers serve only as the reference of the cluster report (NMI, purity).
  steps/cluster_embeddings.sh --num-clusters $num_clusters --keep-fraction $keep_fraction --device $device \
    --ref-utt2spk data/$train/utt2spk $dino_exp/xvectors_${train}_clean data/${train}_clean \
    data/${train}_pl_r1 $dino_exp/cluster_r1
  steps/train_plda.sh --lda-dim $plda_lda_dim $dino_exp/xvectors_${train}_clean data/${train}_pl_r1 \
    $dino_exp/plda_pl_r1
  xv=$dino_exp/xvectors_voxceleb1
  for t in o e h; do
    steps/score_plda.sh $dino_exp/plda_pl_r1 data/voxceleb1/trials_$t $xv $xv $dino_exp/scores/plda_pl_r1_vox1_$t
    steps/compute_metrics.sh --system "$(basename $dino_exp)_plda_pl_r1_vox1_$t" --results exp/results.txt \
      data/voxceleb1/trials_$t $dino_exp/scores/plda_pl_r1_vox1_$t
  done
  cat exp/results.txt
fi

log "Done (stages $stage..$stop_stage)"
