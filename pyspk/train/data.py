"""Training data: fixed-length feature crops from a Kaldi data dir.

Features are read lazily from ``feats.scp`` with kaldiio. Each item is one
*clean* utterance; every crop of it comes from an independently chosen copy
of that utterance when the data dir holds augmented copies (Kaldi naming
``<utt>-reverb``, ``<utt>-noise``, ``<utt>-music``, ``<utt>-babble``, or an
explicit ``utt2copies`` file: ``utt copy1 copy2 ...``).

Randomness of an item is a pure function of ``(seed, epoch, index)``, so the
data stream does not depend on the number of loader workers and resumes
exactly from a sampler position without saving generator states. Feature
augmentation runs later, on whole batches on the device (pyspk.train.augment).
"""

import logging
import os
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pyspk.config import ConfigError, ListOf, Map, Text, Value, check_section, nullable
from pyspk.data.arkio import load_matrix
from pyspk.data.datadir import DataDir, DataDirError, c_sort_key, read_scp, read_table
from pyspk.data.packed import PackedLists, PackedScp, PackedStrings
from pyspk.fileutil import PathLike
from pyspk.train.augment import CHANNEL_SECTION, SPECAUG_SECTION

log = logging.getLogger(__name__)

AUG_SUFFIXES = ("reverb", "noise", "music", "babble")
# One crop group; aug_prob's range is group_aug_probs' (it falls back on data.aug_prob).
CROP_SECTION = Map({"count": Value(int, 1), "frames": Value(int, 1), "aug_prob": Value(float)})
CROPS = Map(names=CROP_SECTION)
# The data section of stored features (the raw-audio source adds its keys: pyspk.train.wav_data.DATA_SECTION).
FEATS_DATA_SECTION = Map({
    "batch_size": Value(int, 1), "num_workers": Value(int, 0), "crops": CROPS, "use_vad": Value(bool),
    "aug_prob": Value(float, 0, 1), "aug_suffixes": ListOf(Text()), "specaug": nullable(SPECAUG_SECTION),
    "channel": nullable(CHANNEL_SECTION), "non_overlapping": Value(bool)})
MAX_CONSECUTIVE_FAILURES = 10
# Fewer voiced frames than this: the utterance is kept whole rather than a few frames looped.
MIN_VOICED_FRAMES = 50


def group_copies(data: DataDir, utts: Sequence[str], suffixes: Container[str] = AUG_SUFFIXES) -> dict[str, list[str]]:
    """Split ``utts`` into clean utterances and their augmented copies.

    Returns ``{clean_utt: [copy_utt, ...]}`` (C-sorted keys). With a
    ``utt2copies`` file the mapping is taken from it; otherwise ``X-<suffix>``
    is a copy of ``X`` when ``X`` itself is in ``utts``.
    """
    if data.has("utt2copies"):
        groups = _read_copies_file(data.file("utt2copies"), set(utts))
    else:
        groups = _copies_by_suffix(utts, suffixes)
    return {utt: sorted(groups[utt], key=c_sort_key) for utt in sorted(groups, key=c_sort_key)}


def _read_copies_file(path, known):
    """``{clean_utt: [copy_utt, ...]}`` from a utt2copies file; every name must be in ``known``, once."""
    table = read_table(path, min_fields=1)
    groups, seen = {}, set()
    for lineno, (utt, copies) in enumerate(table.items(), 1):
        for name in [utt, *copies]:
            if name not in known:
                raise DataDirError(path, lineno, f"'{name}' is not in feats.scp")
            if name in seen:
                raise DataDirError(path, lineno, f"'{name}' is listed twice")
            seen.add(name)
        groups[utt] = copies
    for utt in known - seen:  # utterances the file does not mention are clean on their own
        groups[utt] = []
    return groups


def _copies_by_suffix(utts, suffixes):
    """``{clean_utt: [copy_utt, ...]}`` where ``X-<suffix>`` is a copy of ``X`` when ``X`` is in ``utts``."""
    known = set(utts)
    copy_of = {}
    for utt in utts:
        base, _, suffix = utt.rpartition("-")
        if suffix in suffixes and base in known:
            copy_of[utt] = base
    groups = {utt: [] for utt in utts if utt not in copy_of}
    for utt, base in copy_of.items():
        root = base
        while root in copy_of:  # a copy of a copy ("X-noise-reverb"): attach to the clean root
            root = copy_of[root]
        groups[root].append(utt)
    return groups


def parse_crops(crops: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, int, int]]:
    """``{name: {count, frames[, aug_prob]}}`` -> ordered ``[(name, count, frames)]``."""
    if not isinstance(crops, dict) or not crops:
        raise ConfigError("data.crops must be a mapping name -> {count, frames}")
    parsed = []
    for name, spec in crops.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"data.crops.{name} must be a mapping with 'count' and 'frames'")
        check_section(spec, CROP_SECTION, f"data.crops.{name}")
        count, frames = int(spec.get("count", 1)), int(spec.get("frames", 0))
        if count < 1 or frames < 1:
            raise ConfigError(f"data.crops.{name}: count and frames must be positive")
        parsed.append((name, count, frames))
    return parsed


def group_aug_probs(crops: Mapping[str, Mapping[str, Any]], aug_prob: float) -> dict[str, float]:
    """Per crop group: its chance of an augmented copy (``data.crops.<g>.aug_prob``, else ``aug_prob``).

    A milder chance for the teacher's (global) crops, say.
    """
    probs = {name: float(spec.get("aug_prob", aug_prob)) for name, spec in crops.items()}
    for name, prob in probs.items():
        if not 0.0 <= prob <= 1.0:
            raise ConfigError(f"data.crops.{name}.aug_prob must be in [0, 1], got {prob}")
    return probs


def read_vad_scp(data: DataDir, use_vad: bool) -> PackedScp | None:
    """The data dir's vad.scp with ``data.use_vad`` (DataDirError when it has none), else None."""
    if not use_vad:
        return None
    if not data.has("vad.scp"):
        raise DataDirError(data.file("vad.scp"), 0, "data.use_vad is true but there is no vad.scp")
    return PackedScp(read_scp(data.file("vad.scp")))


def voiced_frames(vad_scp: Mapping[str, str] | None, utt: str, length: int) -> np.ndarray | None:
    """The voiced-frame mask of ``utt`` (``length`` frames); None without VAD, on a length mismatch or
    with fewer than MIN_VOICED_FRAMES voiced frames."""
    if vad_scp is None or utt not in vad_scp:
        return None
    voiced = np.asarray(load_matrix(vad_scp[utt])) > 0.5
    if len(voiced) != length or voiced.sum() < MIN_VOICED_FRAMES:
        return None
    return voiced


def random_start(rng: np.random.Generator, length: int, frames: int) -> int:
    """A uniformly drawn first frame of a crop of ``frames`` in an utterance of ``length`` frames."""
    return int(rng.integers(0, length - frames + 1 if length >= frames else length))


def crop_rows(mat: np.ndarray, start: int, frames: int) -> np.ndarray:
    """``frames`` rows of ``mat`` from ``start``; shorter than the crop: wrap around (repeat the utterance)."""
    return mat[(start + np.arange(frames)) % len(mat)]


class CropDataset(torch.utils.data.Dataset):
    """Items ``{"crops": {name: (count, frames, dim) float32}, "index": i, "skipped": n}``.

    Indexed by ``(index, epoch)`` keys (see :class:`ResumableBatchSampler`).
    """

    def __init__(self, data_dir: PathLike, crops: Mapping[str, Mapping[str, Any]], seed: int = 0, use_vad: bool = False,
                 aug_prob: float = 0.5, aug_suffixes: Iterable[str] = AUG_SUFFIXES, non_overlapping: bool = False):
        data = DataDir(data_dir)
        self.source_path = data.file("feats.scp")  # the utterances' file, named in errors (raw audio: wav.scp)
        feats = data.feats_scp()
        groups = group_copies(data, list(feats), tuple(aug_suffixes))
        if not groups:
            raise DataDirError(data.file("feats.scp"), 0, "no utterances")
        # Packed tables, not dicts and lists of str: the loader workers read them without copying them.
        self.feats = PackedScp(feats)
        self.groups = PackedLists(groups)
        self.utts = PackedStrings(groups)
        self.clean_of = PackedScp({copy: clean for clean, copies in groups.items() for copy in copies})
        self.num_copies = len(self.clean_of)
        self.crops = parse_crops(crops)
        self.seed = int(seed)
        self.aug_prob = group_aug_probs(crops, aug_prob)
        self.non_overlapping = bool(non_overlapping)
        self.vad_scp = read_vad_scp(data, use_vad)

    def __len__(self):
        return len(self.utts)

    def feat_dim(self) -> int:
        """Dimension of the first readable utterance (unreadable ones are warned about and skipped)."""
        problems = []
        for utt in self.utts[:MAX_CONSECUTIVE_FAILURES]:
            try:
                return int(self.load(utt).shape[1])
            except Exception as e:  # any reading problem; named below
                log.warning("utterance %s: cannot read features (%s); skipped", utt, e)
                problems.append(f"{utt}: {e}")
        raise DataDirError(self.source_path, 0, f"the first {len(problems)} utterances cannot be read "
                                               f"({'; '.join(problems[:3])} ...)")

    def load(self, utt: str) -> np.ndarray:
        """The feature matrix of ``utt`` (VAD-selected when enabled) as float32."""
        mat = np.asarray(load_matrix(self.feats[utt]), dtype=np.float32)
        if mat.ndim != 2 or mat.shape[0] == 0:
            raise ValueError(f"expected a non-empty matrix, got shape {mat.shape}")
        if not np.isfinite(mat).all():  # cheap next to the read; else the loss turns NaN with no utterance named
            raise ValueError("features contain NaN or Inf")
        if self.vad_scp is not None:
            clean = utt if utt in self.vad_scp else self.clean_of.get(utt, utt)
            voiced = voiced_frames(self.vad_scp, clean, len(mat))
            if voiced is not None:
                mat = mat[voiced]
        return mat

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """All crop groups of utterance ``index`` under generator ``rng``."""
        if self.non_overlapping:
            return self._sample_disjoint(index, rng)
        utt = self.utts[index]
        choices = [utt] + self.groups[utt]
        loaded = {}
        out = {}
        for name, count, frames in self.crops:
            rows = []
            for source in self._pick_sources(name, count, choices, rng):
                if source not in loaded:
                    loaded[source] = self.load(source)
                mat = loaded[source]
                length = len(mat)
                start = random_start(rng, length, frames)
                rows.append(crop_rows(mat, start, frames))
            out[name] = torch.from_numpy(np.stack(rows))
        return out

    def _pick_sources(self, name: str, count: int, choices: list[str], rng: np.random.Generator) -> list[str]:
        """The clean utterance or one of its copies, for each of the ``count`` crops of group ``name``."""
        use_copy = (rng.random(count) < self.aug_prob[name]) & (len(choices) > 1)
        picks = np.where(use_copy, rng.integers(1, max(len(choices), 2), size=count), 0)
        return [choices[pick] for pick in picks]

    def _sample_disjoint(self, index: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """As :meth:`sample`, with crops that do not overlap in time (see :meth:`disjoint_starts`)."""
        utt = self.utts[index]
        choices = [utt] + self.groups[utt]
        sources = {name: self._pick_sources(name, count, choices, rng) for name, count, _ in self.crops}
        # Each source read once, however many crops take it.
        loaded = {source: self.load(source) for source in dict.fromkeys(s for group in sources.values() for s in group)}
        starts = self.disjoint_starts(len(next(iter(loaded.values()))), rng)
        out = {}
        for name, _, frames in self.crops:
            rows = []
            for k, source in enumerate(sources[name]):
                mat = loaded[source]
                length = len(mat)
                if starts is None:
                    start = random_start(rng, length, frames)
                else:  # copies may differ from the first source's length by a few frames
                    start = min(starts[name][k], max(length - frames, 0))
                rows.append(crop_rows(mat, start, frames))
            out[name] = torch.from_numpy(np.stack(rows))
        return out

    def disjoint_starts(self, length: int, rng: np.random.Generator) -> dict[str, list[int]] | None:
        """Start frames of every crop such that no two crops overlap, uniformly placed; None when they cannot fit.

        The crops are put in a random order and the spare frames split at random
        between the gaps, so teacher and student never see the same frames
        (data.non_overlapping). An utterance shorter than all crops together
        falls back to independent (overlapping) crops.
        """
        sizes = [(name, k, frames) for name, count, frames in self.crops for k in range(count)]
        spare = length - sum(frames for _, _, frames in sizes)
        if spare < 0:
            return None
        gaps = np.sort(rng.integers(0, spare + 1, size=len(sizes)))
        starts = {name: [0] * count for name, count, _ in self.crops}
        position = 0
        for gap_end, i in zip(gaps, rng.permutation(len(sizes)), strict=True):
            name, k, frames = sizes[i]
            starts[name][k] = int(position + gap_end)
            position += frames
        return starts

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, epoch = key
        for attempt in range(MAX_CONSECUTIVE_FAILURES):
            current = (index + attempt) % len(self.utts)
            rng = np.random.default_rng([self.seed, epoch, current])
            try:
                crops = self.sample(current, rng)
                break
            except Exception as e:  # an unreadable entry must not stop a long training run
                log.warning("utterance %s: cannot read features (%s); using the next one", self.utts[current], e)
        else:
            raise RuntimeError(f"{MAX_CONSECUTIVE_FAILURES} consecutive utterances from "
                               f"'{self.utts[index]}' on could not be read; see the warnings above")
        # "skipped": unreadable utterances passed over, summed and reported by the trainer per epoch.
        return {"crops": crops, "index": current, "skipped": attempt}


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Deterministic, rank-sharded batches that can start mid-epoch.

    Epoch ``e`` uses a permutation seeded by ``(seed, e)``; rank ``r`` of ``w``
    takes every ``w``-th item of it, trimmed so all ranks have the same number
    of full batches (the last partial batch is dropped). Yields lists of
    ``(index, epoch)`` keys for :class:`CropDataset`.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.num_items, self.batch_size = int(num_items), int(batch_size)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.num_batches = self.num_items // self.world_size // self.batch_size
        if self.num_batches == 0:
            raise ConfigError(f"{num_items} training utterances cannot fill one batch of {batch_size} "
                              f"on each of {world_size} process(es); lower data.batch_size")
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Iterate over ``epoch``'s batches from batch ``start_batch`` on (to resume mid-epoch)."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __len__(self) -> int:
        return self.num_batches - self.start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        mine = self.epoch_items()
        for b in range(self.start_batch, self.num_batches):
            yield [(i, self.epoch) for i in mine[b * self.batch_size:(b + 1) * self.batch_size]]

    def epoch_items(self) -> list[int]:
        """This rank's items of the epoch in order, ``num_batches * batch_size`` of them."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_items, generator=generator)
        return order[self.rank::self.world_size][: self.num_batches * self.batch_size].tolist()


class ClassBalancedBatchSampler(ResumableBatchSampler):
    """As :class:`ResumableBatchSampler`, but every item draws a class uniformly, then one of its items.

    Small classes (small pseudo-label clusters) are seen as often as large ones;
    items are drawn with replacement, as many per epoch as the plain sampler
    takes. The draws are a pure function of ``(seed, epoch)``, so a run resumes
    mid-epoch exactly; rank ``r`` of ``w`` takes every ``w``-th draw. An item
    drawn twice must not repeat its crops and augmentation, so the second field
    of a key (what :class:`CropDataset` seeds an item's randomness with) is the
    draw's own number, ``epoch * draws_per_epoch + draw``, not the epoch.
    """

    def __init__(self, labels: Sequence[int], batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        super().__init__(len(labels), batch_size, seed, rank, world_size)
        labels = np.asarray(labels)
        # Items grouped by class: class c's are by_class[starts[c]:starts[c] + sizes[c]].
        self.by_class = np.argsort(labels, kind="stable")
        _, self.starts, self.sizes = np.unique(labels[self.by_class], return_index=True, return_counts=True)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        mine = self.epoch_items()
        draws = self.num_batches * self.batch_size * self.world_size
        for b in range(self.start_batch, self.num_batches):
            positions = range(b * self.batch_size, (b + 1) * self.batch_size)
            # Position p of this rank's share is draw p * world_size + rank of the epoch.
            yield [(mine[p], self.epoch * draws + p * self.world_size + self.rank) for p in positions]

    def epoch_items(self) -> list[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        draws = self.num_batches * self.batch_size * self.world_size
        classes = rng.integers(len(self.sizes), size=draws)
        members = (rng.random(draws) * self.sizes[classes]).astype(np.int64)
        return self.by_class[self.starts[classes] + members][self.rank::self.world_size].tolist()


def build_dataset(data_dir: PathLike, cfg: Mapping[str, Any], seed: int) -> CropDataset:
    """A :class:`CropDataset` from the ``data`` config section."""
    check_section(cfg, FEATS_DATA_SECTION, "data")
    return CropDataset(data_dir, cfg["crops"], seed=seed, use_vad=bool(cfg.get("use_vad", False)),
                       aug_prob=float(cfg.get("aug_prob", 0.5)),
                       aug_suffixes=cfg.get("aug_suffixes", AUG_SUFFIXES),
                       non_overlapping=bool(cfg.get("non_overlapping", False)))


def loader_workers(asked: int, world_size: int = 1) -> int:
    """``data.num_workers``, capped to this process's share of the cores it may run on: more workers than
    cores only compete with the training for them (a paper-scale config asks for 8 on any machine)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max(cores // max(world_size, 1), 1)
    if asked > share:
        log.info("data.num_workers %d: %d loader worker(s), this process's share of the %d core(s) available",
                 asked, share, cores)
        return share
    return asked


def build_loader(dataset: CropDataset, cfg: Mapping[str, Any], seed: int, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False, class_labels: Sequence[int] | None = None
                 ) -> tuple[torch.utils.data.DataLoader, ResumableBatchSampler]:
    """DataLoader over ``dataset`` with a :class:`ResumableBatchSampler`; returns (loader, sampler).

    With ``class_labels`` (one per item) a :class:`ClassBalancedBatchSampler` draws the batches.
    """
    if class_labels is None:
        sampler = ResumableBatchSampler(len(dataset), int(cfg["batch_size"]), seed, rank, world_size)
    else:
        if len(class_labels) != len(dataset):
            raise ValueError(f"{len(class_labels)} class labels for {len(dataset)} training utterances")
        sampler = ClassBalancedBatchSampler(class_labels, int(cfg["batch_size"]), seed, rank, world_size)
    workers = loader_workers(int(cfg.get("num_workers", 0)), world_size)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                         pin_memory=pin_memory, persistent_workers=False,
                                         prefetch_factor=4 if workers > 0 else None)
    return loader, sampler
