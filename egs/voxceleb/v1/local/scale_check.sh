#!/usr/bin/env bash
# The VoxCeleb recipe at full size, without the corpora: a dry run of every stage that
# does not train, each timed with the peak memory of its process tree. Stand-in inputs
# of the real sizes are made in a scratch dir (removed at the end), and the recipe's
# own scripts run on them from a copy of the recipe there:
#   0  VoxCeleb1/VoxCeleb2 dev trees of empty files (--vox2-utts over --vox2-speakers,
#      video ids as sessions; --vox1-utts, meta files, trial lists of --trials-o/e/h)
#   1  ./run.sh --stage 1 --stop-stage 1: local/make_voxceleb{2,1}.py (wav.scp of ffmpeg
#      pipes, trials) and utils/validate_data_dir.sh of the four dirs
#   2  the four augmented copies' lists: pyspk.bin.augment_data_dir prepare and merge as
#      steps/augment_data_dir.sh calls them (the jobs' part files stand in for the 'run'
#      jobs, which write audio: not measured), validation, utils/combine_data.sh,
#      utils/fix_data_dir.sh; the split into --nj jobs (utils/split_data.sh)
#   3  feats.scp of every utterance pointing into a few real compressed matrices (the index
#      is full size, the disk holds little); validation with features
#   4  the training loader of --loader-config as the trainer builds it, with the config's
#      workers (not capped to the cores here): start-up, steps/s, each worker's memory
#   5  a tiny model's embeddings of --extract-utts utterances of voxceleb2_dev through
#      steps/extract_embeddings.sh (its dispatch, jobs and merge), then one extraction job (about 1,000
#      utterances) of the full list: what every job pays for the list's size
#   6  stand-in --embed-dim embeddings with speaker structure as the extraction jobs write
#      them, merged by pyspk.bin.extract_embeddings merge (xvector.scp, speaker means)
#   7  stage 6: steps/score_cosine.sh (train-set mean removed) and steps/compute_metrics.sh
#      on O, E and H
#   8  stage 7's clustering: steps/cluster_embeddings.sh with the recipe's settings
#      (--num-clusters, keep fraction, min cluster size, true labels for the report,
#      copies from the combined dir)
#   9  stage 7's back-end: steps/train_plda.sh on the kept utterances' embeddings,
#      steps/score_plda.sh and steps/compute_metrics.sh on O, E and H; then AS-norm
#      (not used by the recipe) of the cosine scores of E with the pseudo-speakers as cohort
# Writes <work-dir>/scale_check.tsv (stage, size, seconds, peak Pss of the process tree
# in GiB, largest single process's max RSS in GiB) and <work-dir>/log/*.log. A stage over
# --max-memory-gib is stopped and the run fails. Model speed (training steps, extraction
# from features, FLOPs) is bench/gpu_projection.py's.
set -euo pipefail
echo "$0 $*"

# Begin configuration section.
stage=0
stop_stage=100
nj=40                         # jobs of the split, the augmentation and the extraction (run.sh's --nj)
vox2_speakers=5994
vox2_utts=1092009
vox1_speakers=1251
vox1_utts=153516
trials_o=37611
trials_e=579818
trials_h=550894
num_clusters=6000             # run.sh's --num-clusters, --keep-fraction, --min-cluster-size, --plda-lda-dim
keep_fraction=0.8
min_cluster_size=5
plda_lda_dim=128
cluster_threads=0             # torch threads of the clustering (its --num-threads; 0: torch's default)
embed_dim=256
loader_config=conf/dino_ecapa.yaml
loader_workers=-1             # -1: the config's data.num_workers
loader_steps=2000
extract_utts=10000            # utterances of voxceleb2_dev embedded by the step end to end
max_memory_gib=16
scratch=                      # default: <work-dir>/scratch
corpus_dir=                   # where the trees of empty files go (default: the scratch dir)
keep_scratch=false
# End configuration section.

help_message="$("$(dirname "$0")/../utils/print_header.sh" "$0")

Usage: $0 [options] <work-dir>
e.g.: $0 exp/scale_check                      # full size (about an hour on 2 cores)
      $0 --vox2-utts 20000 --vox2-speakers 100 --vox1-utts 3000 --vox1-speakers 60 --trials-o 500 \\
         --trials-e 2000 --trials-h 2000 --num-clusters 100 --loader-steps 20 --nj 4 exp/scale_check_small
Options:
  --stage N / --stop-stage N   stages to run ($stage..$stop_stage; later stages need the earlier ones'
                               scratch dir: --keep-scratch true)
  --nj N                       jobs ($nj)
  --vox2-speakers N / --vox2-utts N   VoxCeleb2 dev ($vox2_speakers / $vox2_utts)
  --vox1-speakers N / --vox1-utts N   VoxCeleb1 ($vox1_speakers / $vox1_utts)
  --trials-o N / --trials-e N / --trials-h N   trial lists ($trials_o / $trials_e / $trials_h)
  --num-clusters K             k-means clusters ($num_clusters)
  --keep-fraction F            ($keep_fraction)
  --min-cluster-size N         ($min_cluster_size)
  --plda-lda-dim N             ($plda_lda_dim)
  --cluster-threads N          torch threads of the clustering, 0: torch's default ($cluster_threads)
  --embed-dim N                stand-in embedding dimension ($embed_dim)
  --loader-config FILE         training config of the loader, from the recipe dir ($loader_config)
  --loader-workers N           loader workers, -1: the config's ($loader_workers)
  --loader-steps N             batches drawn ($loader_steps)
  --extract-utts N             utterances embedded by steps/extract_embeddings.sh end to end
                               (then one job of the full list, about 1,000 of them) ($extract_utts)
  --max-memory-gib G           a stage whose process tree uses more is stopped ($max_memory_gib)
  --scratch DIR                stand-in inputs and recipe copy (default: <work-dir>/scratch)
  --corpus-dir DIR             parent of the trees of 1.25 M empty files (default: the scratch dir);
                               on a tmpfs such as /dev/shm they take about 15 times less time to make
                               (and about 1 GB of memory while they exist)
  --keep-scratch true|false    keep the scratch dir ($keep_scratch)"

recipe_dir=$(cd "$(dirname "$0")/.." && pwd -P)
. "$recipe_dir/path.sh"
. "$recipe_dir/utils/parse_options.sh"
. "$recipe_dir/steps/libs/common.sh"  # log, check_positive_ints

if [ $# -ne 1 ]; then
  printf "%s\n" "$help_message" >&2
  exit 1
fi
check_positive_ints nj vox2_speakers vox2_utts vox1_speakers vox1_utts trials_o trials_e trials_h num_clusters \
  min_cluster_size embed_dim loader_steps extract_utts
case $keep_scratch in true|false) ;; *) echo "$0: --keep-scratch must be true or false" >&2; exit 1 ;; esac
mkdir -p "$1/log"
work=$(cd "$1" && pwd -P)
: "${scratch:=$work/scratch}"
mkdir -p "$scratch"
scratch=$(cd "$scratch" && pwd -P)
table=$work/scale_check.tsv
helper=$recipe_dir/local/scale_check.py
corpus=${corpus_dir:-$scratch}/scale_check_corpus
recipe=$scratch/pyspk/egs/voxceleb/v1   # run.sh writes data/ and exp/ here, not into the repository
aug_types="reverb noise music babble"
train=voxceleb2_dev
combined=${train}_combined
pl=${train}_pl_dino_r1
ssl=exp/dino_ecapa
round=exp/pl_dino_r1
step_number=0

cleanup() {
  if [ "$keep_scratch" = false ]; then rm -rf "$scratch" "$corpus"; fi
}
trap cleanup EXIT

# measure <stage-name> <size> <command>...: run it in the recipe copy, time it and poll its memory;
# a failure shows the end of its log and stops the run.
measure() {
  local name=$1 size=$2 logfile slug
  shift 2
  step_number=$((step_number + 1))
  slug=${name%% *}
  logfile=$work/log/$(printf %02d $step_number).${slug//[^A-Za-z0-9_.-]/_}.log
  log "$name ($size)"
  if ! (cd "$recipe" && python "$helper" measure --name "$name" --size "$size" --table "$table" \
          --max-memory-gib "$max_memory_gib" -- "$@") > "$logfile" 2>&1; then
    tail -n 20 "$logfile" >&2
    log "ERROR: '$name' failed; its log: $logfile" >&2
    exit 1
  fi
  tail -n 1 "$logfile"
}

# stand_in <what> <command>...: make stand-in input (not a recipe step, so not in the table).
stand_in() {
  local what=$1 logfile
  shift
  step_number=$((step_number + 1))
  logfile=$work/log/$(printf %02d $step_number).stand_in.log
  log "stand-in input: $what"
  if ! (cd "$recipe" && "$@") > "$logfile" 2>&1; then
    tail -n 20 "$logfile" >&2
    log "ERROR: making $what failed; its log: $logfile" >&2
    exit 1
  fi
}

runs() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

if runs 0; then
  [ ! -f "$table" ] || mv "$table" "$table.old"
  rm -rf "$corpus" "$scratch/pyspk"
  mkdir -p "$recipe"
  for name in path.sh utils steps tools conf; do
    ln -s "$PYSPK_ROOT/$name" "$scratch/pyspk/$name"
  done
  (cd "$recipe_dir" && tar --exclude=./data --exclude=./exp --exclude=./fbank -cf - .) | (cd "$recipe" && tar -xf -)
  stand_in "VoxCeleb trees of empty files" python "$helper" corpus --vox2-speakers $vox2_speakers \
    --vox2-utts $vox2_utts --vox1-speakers $vox1_speakers --vox1-utts $vox1_utts --trials-o $trials_o \
    --trials-e $trials_e --trials-h $trials_h "$corpus"
fi

if runs 1; then
  measure "stage 1: local/make_voxceleb2.py, make_voxceleb1.py, validation" \
    "$vox2_utts + $vox1_utts utts, trials $trials_o/$trials_e/$trials_h" \
    ./run.sh --stage 1 --stop-stage 1 --vox1-root "$corpus/VoxCeleb1" --vox2-root "$corpus/VoxCeleb2" --nj $nj
fi

if runs 2; then
  copies="4 x $vox2_utts"
  # The options run.sh gives steps/augment_data_dir.sh (flac; generated sources without MUSAN/RIRS_NOISES).
  measure "augment_data_dir prepare" "$vox2_utts utts" \
    python -m pyspk.bin.augment_data_dir prepare --types "$aug_types" --audio-format flac data/$train exp/augment/$train
  stand_in "the augmentation jobs' part files (audio not made)" \
    python "$helper" aug-parts --num-jobs $nj --types "$aug_types" data/$train exp/augment/$train
  measure "augment_data_dir merge (the four lists)" "$copies" \
    python -m pyspk.bin.augment_data_dir merge --types "$aug_types" --num-jobs $nj data/$train exp/augment/$train data/$train
  measure "utils/validate_data_dir.sh of the four copies" "$copies" \
    bash -c "for t in $aug_types; do utils/validate_data_dir.sh --no-text --no-feats data/${train}_\$t; done"
  measure "utils/combine_data.sh" "5 x $vox2_utts" \
    utils/combine_data.sh data/$combined data/$train data/${train}_reverb data/${train}_noise data/${train}_music \
      data/${train}_babble
  measure "utils/validate_data_dir.sh (combined)" "5 x $vox2_utts" \
    utils/validate_data_dir.sh --no-text --no-feats data/$combined
  measure "utils/fix_data_dir.sh (combined)" "5 x $vox2_utts" utils/fix_data_dir.sh data/$combined
  measure "utils/split_data.sh (combined, $nj jobs)" "5 x $vox2_utts" utils/split_data.sh data/$combined $nj
fi

if runs 3; then
  stand_in "feats.scp of every utterance into a few real arks" \
    python "$helper" feats "$scratch/fbank" data/$train data/$combined data/voxceleb1
  measure "utils/validate_data_dir.sh with feats.scp (combined)" "5 x $vox2_utts" \
    utils/validate_data_dir.sh --no-text data/$combined
fi

if runs 4; then
  measure "training loader ($loader_config)" "5 x $vox2_utts" \
    python "$helper" loader --config $loader_config --workers $loader_workers --steps $loader_steps \
      --table "$table" data/$combined
fi

if runs 5; then
  subset=data/${train}_first_$extract_utts
  stand_in "the first $extract_utts utterances of data/$train" \
    utils/subset_data_dir.sh --first data/$train "$extract_utts" $subset
  stand_in "a tiny untrained model" \
    python -m pyspk.bin.init_model --config ../../../conf/dino_tiny.yaml exp/tiny/final.pt
  measure "steps/extract_embeddings.sh (tiny model, $nj jobs)" "$extract_utts utts" \
    steps/extract_embeddings.sh --nj $nj --device cpu exp/tiny/final.pt $subset exp/tiny/xvectors_subset
  # What each job of the full list pays besides its embeddings: reading and sorting all of feats.scp.
  share_jobs=$(( vox2_utts / 1000 > 1 ? vox2_utts / 1000 : 1 ))
  mkdir -p "$recipe/exp/tiny/xvectors_$train"
  measure "one extraction job of the full list (job 1 of $share_jobs)" \
    "$vox2_utts utts listed, $(( vox2_utts / share_jobs )) embedded" \
    python -m pyspk.bin.extract_embeddings extract --device cpu --num-threads 1 --job 1 --num-jobs $share_jobs \
      exp/tiny/final.pt data/$train exp/tiny/xvectors_$train
fi

if runs 6; then
  for part in $train voxceleb1; do
    stand_in "stand-in embeddings of data/$part" \
      python "$helper" vectors --dim $embed_dim --num-jobs $nj data/$part $ssl/xvectors_$part
    measure "extract_embeddings merge ($part)" "$(wc -l < "$recipe/data/$part/utt2spk") x $embed_dim" \
      python -m pyspk.bin.extract_embeddings merge --num-jobs $nj data/$part $ssl/xvectors_$part
  done
fi

# score_and_metrics <model-dir> <back-end> <score-command>...: each trial list of data/voxceleb1, scored
# by "<score-command> <trials> <xvectors> <xvectors> <scores>" with <model-dir>'s embeddings of VoxCeleb1.
score_and_metrics() {
  local dir=$1 backend=$2 list trials scores
  shift 2
  for list in o e h; do
    trials=data/voxceleb1/trials_$list
    scores=$dir/scores/${backend}_trials_${list}_voxceleb1
    measure "$backend scoring, $list" "$(wc -l < "$recipe/$trials") trials" \
      "$@" $trials $dir/xvectors_voxceleb1 $dir/xvectors_voxceleb1 "$scores"
    measure "steps/compute_metrics.sh, $list" "$(wc -l < "$recipe/$trials") trials" \
      steps/compute_metrics.sh --name "$(basename "$dir")_${backend}_$list" --results exp/results.txt $trials "$scores"
  done
}

if runs 7; then
  score_and_metrics $ssl cosine steps/score_cosine.sh --mean-dir $ssl/xvectors_$train
fi

if runs 8; then
  measure "steps/cluster_embeddings.sh (k-means $num_clusters, keep $keep_fraction, report)" \
    "$vox2_utts x $embed_dim" \
    steps/cluster_embeddings.sh --num-clusters $num_clusters --method kmeans --keep-fraction $keep_fraction \
      --min-cluster-size $min_cluster_size --device cpu --num-threads $cluster_threads --ref-utt2spk data/$train/utt2spk \
      --copies-from data/$combined $ssl/xvectors_$train data/$train data/$pl $round/cluster
fi

if runs 9; then
  stand_in "stand-in embeddings of the kept utterances" \
    python "$helper" vectors --dim $embed_dim --num-jobs $nj data/$pl $round/xvectors_$pl
  measure "extract_embeddings merge ($pl)" "$(wc -l < "$recipe/data/$pl/utt2spk") x $embed_dim" \
    python -m pyspk.bin.extract_embeddings merge --num-jobs $nj data/$pl $round/xvectors_$pl
  measure "steps/train_plda.sh (LDA $plda_lda_dim)" "$(wc -l < "$recipe/data/$pl/utt2spk") x $embed_dim" \
    steps/train_plda.sh --lda-dim $plda_lda_dim $round/xvectors_$pl data/$pl $round/plda
  for part in $train voxceleb1; do  # the round's own embeddings of the sets it scores
    ln -sfn "$recipe/$ssl/xvectors_$part" "$recipe/$round/xvectors_$part"
  done
  score_and_metrics $round plda steps/score_plda.sh $round/plda
  measure "AS-norm cosine, e (not in the recipe; cohort: the pseudo-speakers' means)" \
    "$(wc -l < "$recipe/data/voxceleb1/trials_e") trials, $(wc -l < "$recipe/data/$pl/spk2utt") cohort" \
    steps/score_cosine.sh --mean-dir $ssl/xvectors_$train --asnorm-cohort $round/xvectors_$pl --cohort-level spk \
      data/voxceleb1/trials_e $ssl/xvectors_voxceleb1 $ssl/xvectors_voxceleb1 $round/scores/cosine_asnorm_trials_e
fi

log "Done: $table"
[ ! -f "$table" ] || column -t -s "$(printf '\t')" "$table"
