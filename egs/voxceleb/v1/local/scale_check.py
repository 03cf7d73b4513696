#!/usr/bin/env python3
"""The VoxCeleb recipe at full size without the corpora: stand-in inputs and measurements.

Called by local/scale_check.sh (read it first); each subcommand makes one kind
of stand-in input of the real size, or measures one step:

  corpus <root>          VoxCeleb1 and VoxCeleb2 dev trees of empty files in the official
                         layout (<root>/VoxCeleb1/wav/<spk>/<video>/<seg>.wav,
                         <root>/VoxCeleb2/dev/aac/<spk>/<video>/<seg>.m4a), the meta files
                         and the three cleaned trial lists, for stage 1 (local/make_voxceleb*.py)
  aug-parts <src> <audio-dir>
                         what the augmentation jobs (steps/augment_data_dir.sh's 'run') leave
                         besides audio: <audio-dir>/<type>/parts/{done,failed}.<job>, naming
                         audio files that are not written
  feats <ark-dir> <data-dir>...
                         a few real compressed fbank-shaped matrices in <ark-dir>/feats.ark,
                         and a feats.scp of every utterance of each data dir pointing into it
  vectors <data-dir> <xvector-dir>
                         stand-in embeddings with speaker structure, as the extraction jobs
                         write them (xvector.<job>.ark/.scp), for the 'merge' entry point
  loader <data-dir>      the training loader as the trainer builds it, iterated: start-up,
                         steps/s and each worker's memory
  measure --name N -- <command>...
                         runs <command>, polling the resident memory of its process tree;
                         appends "stage size seconds peak-memory" to --table

Memory: the proportional set size (Pss) summed over the process tree, so pages shared
by forked workers count once; a worker's growth is its private (unshared) memory.
"""

import argparse
import hashlib
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from unittest import mock

import numpy as np

from pyspk.data.datadir import DataDir, read_scp
from pyspk.fileutil import atomic_open
from pyspk.logutil import setup_logging

log = logging.getLogger("scale_check")

VIDEO_ID_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
UTTS_PER_VIDEO = 7.5          # VoxCeleb2 dev: 1,092,009 utterances from 145,569 videos
VOX1_TEST_SPEAKERS = 40       # id10270 .. id10309, as the real VoxCeleb1 test set
AUG_TYPES = ("reverb", "noise", "music", "babble")
TABLE_HEADER = "stage\tsize\tseconds\tpeak_tree_pss_gib\tmax_process_rss_gib\n"


# -- corpus --------------------------------------------------------------------------------------
def utterance_counts(rng, num_utts, num_speakers, least=8):
    """Unequal utterance counts per speaker (lognormal, as VoxCeleb's), at least ``least``, summing to num_utts."""
    weights = rng.lognormal(0.0, 0.6, num_speakers)
    counts = np.full(num_speakers, least) + rng.multinomial(num_utts - least * num_speakers, weights / weights.sum())
    return counts


def make_speaker_tree(rng, audio_root, speakers, counts, extension):
    """Empty files <audio_root>/<spk>/<video>/<seg><extension>; returns their relative paths per speaker."""
    rels = {}
    for spk, count in zip(speakers, counts, strict=True):
        num_videos = max(1, round(count / UTTS_PER_VIDEO))
        videos = ["".join(rng.choice(VIDEO_ID_CHARS, 11)) for _ in range(num_videos)]
        rels[spk] = []
        for v, video in enumerate(videos):
            os.makedirs(os.path.join(audio_root, spk, video))
            for seg in range(1, len(range(v, count, num_videos)) + 1):
                rel = f"{spk}/{video}/{seg:05d}{extension}"
                open(os.path.join(audio_root, rel), "wb").close()
                rels[spk].append(rel)
    return rels


def write_trial_list(path, rng, rels, speakers, num_trials):
    """Half target, half non-target trials between the files of ``speakers``, in the official format."""
    spk_files = [rels[spk] for spk in speakers]
    lines = []
    for i in range(num_trials):
        target = i % 2 == 0
        a = int(rng.integers(len(spk_files)))
        b = a if target else (a + 1 + int(rng.integers(len(spk_files) - 1))) % len(spk_files)
        first = spk_files[a][int(rng.integers(len(spk_files[a])))]
        second = spk_files[b][int(rng.integers(len(spk_files[b])))]
        lines.append(f"{int(target)} {first} {second}\n")
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)


def make_corpus(args):
    rng = np.random.default_rng(args.seed)
    vox2 = os.path.join(args.root, "VoxCeleb2")
    speakers = [f"id{n:05d}" for n in range(1, args.vox2_speakers + 1)]
    make_speaker_tree(rng, os.path.join(vox2, "dev", "aac"), speakers,
                      utterance_counts(rng, args.vox2_utts, args.vox2_speakers), ".m4a")
    with atomic_open(os.path.join(vox2, "vox2_meta.csv"), "w", encoding="utf-8") as f:
        f.write("VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \n")
        f.writelines(f"{spk} ,n{i:06d} ,{'mf'[i % 2]} ,dev \n" for i, spk in enumerate(speakers))
    log.info("VoxCeleb2 dev: %d empty m4a files of %d speakers under %s", args.vox2_utts, args.vox2_speakers, vox2)

    vox1 = os.path.join(args.root, "VoxCeleb1")
    speakers = [f"id{10000 + n:05d}" for n in range(1, args.vox1_speakers + 1)]
    num_test = min(VOX1_TEST_SPEAKERS, args.vox1_speakers // 2)
    test = speakers[269:269 + num_test] if len(speakers) >= 269 + num_test else speakers[-num_test:]
    rels = make_speaker_tree(rng, os.path.join(vox1, "wav"), speakers,
                             utterance_counts(rng, args.vox1_utts, args.vox1_speakers), ".wav")
    with atomic_open(os.path.join(vox1, "vox1_meta.csv"), "w", encoding="utf-8") as f:
        f.write("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n")
        f.writelines(f"{spk}\tCeleb_{i}\t{'mf'[i % 2]}\tUSA\t{'test' if spk in test else 'dev'}\n"
                     for i, spk in enumerate(speakers))
    for name, who, count in (("veri_test2.txt", test, args.trials_o), ("list_test_all2.txt", speakers, args.trials_e),
                             ("list_test_hard2.txt", speakers, args.trials_h)):
        write_trial_list(os.path.join(vox1, name), rng, rels, who, count)
    log.info("VoxCeleb1: %d empty wav files of %d speakers (%d test), trial lists O %d, E %d, H %d under %s",
             args.vox1_utts, args.vox1_speakers, len(test), args.trials_o, args.trials_e, args.trials_h, vox1)


# -- augmentation job outputs ----------------------------------------------------------------------
def make_aug_parts(args):
    """Each job's part files as pyspk.augment.augment_dir.run_job writes them, for audio not made."""
    from pyspk.models.extract import job_share  # torch: imported only where needed (measure stays light)

    data = DataDir(args.src)
    utts = list(data.utt2spk())
    for aug_type in args.types.split():
        parts = os.path.join(args.audio_dir, aug_type, "parts")
        os.makedirs(parts, exist_ok=True)
        for job in range(1, args.num_jobs + 1):
            share = job_share(utts, job, args.num_jobs)
            with atomic_open(os.path.join(parts, f"done.{job}"), "w", encoding="utf-8") as f:
                f.writelines(f"{utt}-{aug_type} {os.path.abspath(args.audio_dir)}/{aug_type}/{utt.split('-', 1)[0]}/"
                             f"{utt}-{aug_type}.{args.audio_format} 6.000 stand-in\n" for utt in share)
            with atomic_open(os.path.join(parts, f"failed.{job}"), "w", encoding="utf-8"):
                pass
    log.info("part files of %d jobs for %d utterances x %s", args.num_jobs, len(utts), args.types)


# -- features --------------------------------------------------------------------------------------
def make_feats(args):
    """``--num-matrices`` real compressed matrices of 4-8 s; every utterance's feats.scp entry points to one."""
    from pyspk.features.fbank import ArkScpWriter

    rng = np.random.default_rng(args.seed)
    os.makedirs(args.ark_dir, exist_ok=True)
    with ArkScpWriter(os.path.join(args.ark_dir, "feats.ark"), os.path.join(args.ark_dir, "matrices.scp"),
                      compress=True) as writer:
        for i in range(args.num_matrices):
            frames = int(rng.integers(400, 801))
            writer.write(f"m{i:05d}", (8.0 + rng.standard_normal((frames, args.feat_dim))).astype(np.float32))
    specs = list(read_scp(os.path.join(args.ark_dir, "matrices.scp")).values())
    for data_dir in args.data_dirs:
        utts = list(DataDir(data_dir).utt2spk())
        with atomic_open(os.path.join(data_dir, "feats.scp"), "w", encoding="utf-8") as f:
            f.writelines(f"{utt} {specs[i % len(specs)]}\n" for i, utt in enumerate(utts))
        log.info("%s/feats.scp: %d utterances over %d stored matrices", data_dir, len(utts), len(specs))


# -- embeddings ------------------------------------------------------------------------------------
def stand_in_vector(utt, dim, seed, speaker_scale=1.0, noise_scale=0.8):
    """The vector of ``utt``: its speaker's mean (the id's first field) plus the utterance's own noise, both
    fixed by their names, so any data dir naming the utterance (pseudo-label dirs: "<cluster>-<utt>" and
    utt2uniq) gets the same vector."""
    def normal(name, scale):
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
        return np.random.default_rng([seed, key]).standard_normal(dim) * scale / np.sqrt(dim)
    return (normal(utt.split("-", 1)[0], speaker_scale) + normal(utt, noise_scale)).astype(np.float32)


def make_vectors(args):
    from pyspk.models.extract import job_share, write_vectors

    data = DataDir(args.data_dir)
    utts = list(data.utt2spk())
    source = read_scp(data.file("utt2uniq")) if data.has("utt2uniq") else {}
    os.makedirs(args.xvector_dir, exist_ok=True)
    for job in range(1, args.num_jobs + 1):
        out = os.path.join(args.xvector_dir, f"xvector.{job}")
        write_vectors(out + ".ark", out + ".scp", ((utt, stand_in_vector(source.get(utt, utt), args.dim, args.seed))
                                                   for utt in job_share(utts, job, args.num_jobs)))
    log.info("%d stand-in %d-dim embeddings of %s in %d job files under %s", len(utts), args.dim, args.data_dir,
             args.num_jobs, args.xvector_dir)


# -- process memory --------------------------------------------------------------------------------
def memory_kib(pid):
    """``{"Rss": .., "Pss": .., "Private": ..}`` (KiB) of a process; {} once it is gone."""
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                    fields[name] = int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    fields["Private"] = fields.pop("Private_Clean", 0) + fields.pop("Private_Dirty", 0)
    return fields


def process_tree(root):
    """``root`` and all its descendants (from /proc/*/stat)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def append_row(table, stage, size, seconds, tree_pss_gib, max_rss_gib):
    """Rewrite ``table`` with one more row (temp then rename: never half-written)."""
    old = ""
    if os.path.isfile(table):
        with open(table, encoding="utf-8") as f:
            old = f.read()
    with atomic_open(table, "w", encoding="utf-8") as f:
        f.write(old or TABLE_HEADER)
        f.write(f"{stage}\t{size}\t{seconds:.1f}\t{tree_pss_gib:.2f}\t{max_rss_gib:.2f}\n")


def measure(args):
    """Run the command in its own session; poll its tree's Pss; kill the tree over --max-memory-gib."""
    start = time.perf_counter()
    proc = subprocess.Popen(args.argv, start_new_session=True)
    peak_pss = 0
    limit_kib = args.max_memory_gib * 2**20
    while proc.poll() is None:
        pss = sum(memory_kib(pid).get("Pss", 0) for pid in process_tree(proc.pid))
        peak_pss = max(peak_pss, pss)
        if pss > limit_kib:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            log.error("%s: %.2f GiB of memory, over --max-memory-gib %g: stopped", args.name, pss / 2**20,
                      args.max_memory_gib)
            return 1
        time.sleep(args.poll_seconds)
    seconds = time.perf_counter() - start
    max_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the largest process waited for
    if proc.returncode != 0:
        log.error("%s: failed (exit status %d) after %.1f s", args.name, proc.returncode, seconds)
        return proc.returncode
    append_row(args.table, args.name, args.size, seconds, peak_pss / 2**20, max_rss / 2**20)
    log.info("%s (%s): %.1f s, peak memory of the process tree %.2f GiB, largest process %.2f GiB", args.name,
             args.size, seconds, peak_pss / 2**20, max_rss / 2**20)
    return 0


# -- training loader -------------------------------------------------------------------------------
def worker_memory(iterator):
    """``[(pid, memory_kib(pid))]`` of the loader's worker processes."""
    return [(w.pid, memory_kib(w.pid)) for w in getattr(iterator, "_workers", [])]


def run_loader(args):
    from pyspk.config import load_config
    from pyspk.train.data import build_loader
    from pyspk.train.wav_data import build_training_source

    config = load_config(args.config, args.overrides)
    data_cfg = config["data"]
    workers = args.workers if args.workers >= 0 else int(data_cfg.get("num_workers", 0))
    data_cfg["num_workers"] = workers
    seed = int(config.get("seed", 0))
    start = time.perf_counter()
    dataset = build_training_source(args.data_dir, data_cfg, seed)  # as Trainer._build
    dataset.feat_dim()
    built = time.perf_counter() - start
    parent = memory_kib(os.getpid())
    # The trainer caps data.num_workers to the cores; here the config's count is kept, to see its memory.
    with mock.patch("pyspk.train.data.loader_workers", lambda asked, world_size=1: asked):
        loader, sampler = build_loader(dataset, data_cfg, seed)
    sampler.set_epoch(0)
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter() - start
    baseline = dict(worker_memory(iterator))
    peak = {pid: m for pid, m in baseline.items()}
    steps_start, steps = time.perf_counter(), 1
    for steps in range(2, args.steps + 1):
        next(iterator)
        if steps % args.sample_every == 0 or steps == args.steps:
            for pid, m in worker_memory(iterator):
                if m:
                    peak[pid] = max(peak.get(pid, m), m, key=lambda x: x["Private"])
            log.info("step %d: %.1f steps/s; workers' private memory %s MiB", steps,
                     (steps - 1) / (time.perf_counter() - steps_start),
                     " ".join(f"{peak[p]['Private'] // 1024}" for p in sorted(peak)))
    rate = (steps - 1) / (time.perf_counter() - steps_start)
    growth = [(peak[p]["Private"] - baseline[p]["Private"]) / 1024 for p in baseline if baseline[p]]
    rss_growth = [(peak[p]["Rss"] - baseline[p]["Rss"]) / 1024 for p in baseline if baseline[p]]
    print(f"loader: {len(dataset)} training items ({dataset.num_copies} copies); dataset built in {built:.1f} s "
          f"(main process {parent.get('Rss', 0) / 2**20:.2f} GiB resident); first batch after {first:.1f} s "
          f"with {workers} workers; {steps} steps of {data_cfg['batch_size']} at {rate:.2f} steps/s; "
          f"per worker private memory growth max {max(growth, default=0):.0f} MiB "
          f"(mean {np.mean(growth) if growth else 0:.0f}), resident growth max {max(rss_growth, default=0):.0f} MiB")
    if args.table:
        size = f"{len(dataset)} items + {dataset.num_copies} copies"
        append_row(args.table, "loader start-up (dataset as the trainer builds it)", size, built,
                   parent.get("Pss", 0) / 2**20, parent.get("Rss", 0) / 2**20)
        append_row(args.table, f"loader first batch ({workers} workers)", size, first, 0, 0)
        append_row(args.table, f"loader {steps} steps x {data_cfg['batch_size']} ({rate:.2f} steps/s); "
                   f"worker private growth max {max(growth, default=0):.0f} MiB", size,
                   (steps - 1) / rate, 0, 0)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("corpus")
    p.add_argument("--vox2-speakers", type=int, default=5994)
    p.add_argument("--vox2-utts", type=int, default=1092009)
    p.add_argument("--vox1-speakers", type=int, default=1251)
    p.add_argument("--vox1-utts", type=int, default=153516)
    p.add_argument("--trials-o", type=int, default=37611)
    p.add_argument("--trials-e", type=int, default=579818)
    p.add_argument("--trials-h", type=int, default=550894)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("root")
    p = sub.add_parser("aug-parts")
    p.add_argument("--types", default=" ".join(AUG_TYPES))
    p.add_argument("--num-jobs", type=int, required=True)
    p.add_argument("--audio-format", default="flac")
    p.add_argument("src")
    p.add_argument("audio_dir")
    p = sub.add_parser("feats")
    p.add_argument("--num-matrices", type=int, default=200)
    p.add_argument("--feat-dim", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("ark_dir")
    p.add_argument("data_dirs", nargs="+")
    p = sub.add_parser("vectors")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--num-jobs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("data_dir")
    p.add_argument("xvector_dir")
    p = sub.add_parser("loader")
    p.add_argument("--config", default="conf/dino_ecapa.yaml")
    p.add_argument("--workers", type=int, default=-1, help="loader workers (default: the config's data.num_workers)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--sample-every", type=int, default=100, help="steps between readings of the workers' memory")
    p.add_argument("--table", default=None)
    p.add_argument("data_dir")
    p.add_argument("overrides", nargs="*")
    p = sub.add_parser("measure")
    p.add_argument("--name", required=True)
    p.add_argument("--size", default="")
    p.add_argument("--table", required=True)
    p.add_argument("--max-memory-gib", type=float, default=16.0)
    p.add_argument("--poll-seconds", type=float, default=0.25)
    p.add_argument("argv", nargs="+", help="the command and its arguments")
    args = parser.parse_args(argv)
    setup_logging()
    run = {"corpus": make_corpus, "aug-parts": make_aug_parts, "feats": make_feats, "vectors": make_vectors,
           "loader": run_loader, "measure": measure}[args.command]
    sys.exit(run(args) or 0)


if __name__ == "__main__":
    main()
