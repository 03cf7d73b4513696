"""Training crops read from raw audio (``data.source: wav``), turned into features on the device.

The crops are the feats source's (:class:`~pyspk.train.data.CropDataset`):
the same groups, counts and lengths in frames of the fbank config, the same
random draws from ``(seed, epoch, index)``, so a crop of frames ``[s, s + F)``
is the audio that those frames are computed from: ``(F - 1) * shift + window``
samples from sample ``s * shift`` with snip-edges (``F * shift`` without).
:class:`~pyspk.train.online_aug.WavFrontend` then augments the batch and
computes Kaldi fbank on the training device.

Reading: a wav.scp file (wav, flac, ogg: whatever libsndfile seeks in) is
opened once per item, for its length (the header) and only the crops; crops
less than READ_THROUGH_SECONDS apart are read in one piece, 16-bit audio as
int16 (exact, half the bytes) straight into the item's rows. A pipe
(``cmd |``, e.g. ffmpeg decoding m4a) or a file that cannot seek is decoded
once and kept in a per-worker LRU cache of ``data.audio_cache_mb`` MB (default
256), its length from utt2dur when the data dir has one. ``segments`` offsets
the reads into the recording. With ``data.use_vad`` and a vad.scp, crops start
on voiced frames (the feats source instead drops unvoiced frames, which
would need the whole utterance decoded here); disjoint crops
(``data.non_overlapping``) tile the whole utterance and ignore the VAD.
With ``data.telephone.prob`` > 0, each crop as read passes with that
chance through a random telephone channel of its own (handset, level, line
noise, G.711 mu-law or A-law: :mod:`pyspk.augment.telephone`), at the
data's rate, in the loader worker, before ``data.online_aug``.
"""

import collections
import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import soundfile as sf
import torch

from pyspk.augment.telephone import NUMPY_CODECS, TELEPHONE_DEFAULTS, apply_channel, draw_channel
from pyspk.config import ConfigError, ListOf, Map, Text, Value, check_section, defaults_map, nullable
from pyspk.data.datadir import DataDir, DataDirError, c_sort_key, read_kv
from pyspk.features.audio import KALDI_SAMPLE_SCALE, UtteranceError, cut_segment, read_audio, utterance_sources
from pyspk.features.fbank import FbankConfig
from pyspk.fileutil import PathLike
from pyspk.train.data import (
    FEATS_DATA_SECTION,
    CropDataset,
    build_dataset,
    group_aug_probs,
    parse_crops,
    random_start,
    read_vad_scp,
    voiced_frames,
)
from pyspk.train.online_aug import ONLINE_AUG_SECTION, online_aug_options

log = logging.getLogger(__name__)

SOURCES = ("feats", "wav")
DEFAULT_CACHE_MB = 256
# Crops closer than this are read in one piece, the gap read through: a seek in FLAC (libsndfile 1.2) costs
# about as much as decoding 1 s of 16 kHz audio; in a wav reading through costs next to nothing.
READ_THROUGH_SECONDS = 1.0
# Read as int16: exactly the float reading times 2^15, in half the bytes and with no float scaling.
INT16_SUBTYPES = ("PCM_16",)
# data.telephone: the numpy codecs only (a codec process per crop is too slow).
TELEPHONE_SECTION = defaults_map(TELEPHONE_DEFAULTS, prob=Value(float, 0, 1), codecs=ListOf(Text(*NUMPY_CODECS)))


def wav_utterances(data_dir: PathLike) -> dict:
    """``{utt: source}`` of wav.scp (and segments), in the order the raw-audio dataset indexes them (C-sorted)."""
    sources = {s.utt: s for s in utterance_sources(data_dir)}
    return {utt: sources[utt] for utt in sorted(sources, key=c_sort_key)}


class DecodedCache:
    """Least-recently-used decoded recordings, bounded by total bytes (one per loader worker)."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = int(max_bytes), 0
        self.items: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()

    def get(self, key: str, decode) -> np.ndarray:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = decode()
        if value.nbytes <= self.max_bytes:
            self.items[key] = value
            self.bytes += value.nbytes
            while self.bytes > self.max_bytes:
                _, dropped = self.items.popitem(last=False)
                self.bytes -= dropped.nbytes
        return value


def crop_samples(frames: int, config: FbankConfig) -> int:
    """Samples that ``frames`` frames of ``config`` are computed from."""
    if config.snip_edges:
        return (frames - 1) * config.window_shift + config.window_size
    return frames * config.window_shift


class WavCropDataset(CropDataset):
    """Items ``{"crops": {name: (count, samples) float32 in int16 range}, "index": i, "skipped": n}``.

    Draws as :class:`CropDataset` on a data dir without augmented copies; see the module docstring.
    """

    def __init__(self, data_dir: PathLike, crops: Mapping[str, Mapping[str, Any]], fbank: FbankConfig, seed: int = 0,
                 use_vad: bool = False, aug_prob: float = 0.5, non_overlapping: bool = False,
                 cache_mb: float = DEFAULT_CACHE_MB, telephone: Mapping[str, Any] | None = None):
        data = DataDir(data_dir)
        self.source_path = data.file("wav.scp")
        self.sources = wav_utterances(data_dir)
        self.utts = list(self.sources)
        if not self.utts:
            raise DataDirError(self.source_path, 0, "no utterances")
        self.num_copies = 0  # copies are made on the device, not stored
        self.crops = parse_crops(crops)
        self.seed, self.fbank = int(seed), fbank
        self.aug_prob = group_aug_probs(crops, aug_prob)
        self.non_overlapping = bool(non_overlapping)
        self.utt2dur = read_kv(data.file("utt2dur"), float) if data.has("utt2dur") else {}
        self.vad_scp = read_vad_scp(data, use_vad)
        self.cache = DecodedCache(int(cache_mb * 2**20))
        self.lengths: dict[str, int] = {}
        check_section(telephone or {}, TELEPHONE_SECTION, "data.telephone")
        self.telephone = {**TELEPHONE_DEFAULTS, **(telephone or {})}
        if self.telephone["prob"] > 0 and not self.telephone["codecs"]:
            raise ConfigError("data.telephone.codecs: at least one codec is needed when data.telephone.prob > 0")

    def feat_dim(self) -> int:
        """The fbank dimension of the config (the features are computed on the device)."""
        return int(self.fbank.dim)

    # -- audio -----------------------------------------------------------------
    def _check_rate(self, rate: int, name: str) -> None:
        if rate != self.fbank.sample_rate:
            raise UtteranceError(f"{name}: sample rate {rate} Hz, but the fbank config says "
                                 f"{self.fbank.sample_rate:g} Hz ({self.fbank.source})")

    def _seekable(self, entry: str) -> bool:
        return not entry.rstrip().endswith("|")

    def _decoded(self, utt: str) -> np.ndarray:
        """The utterance decoded whole (first channel, int16 range), through the cache."""
        source = self.sources[utt]
        if source.entry is None:
            raise UtteranceError(f"recording '{source.recording}' is not in wav.scp")

        def decode():
            samples, rate = read_audio(source.entry)
            self._check_rate(rate, source.entry)
            if source.start is not None:
                samples = cut_segment(samples, rate, source.start, source.end)
            samples = np.ascontiguousarray(samples[:, 0])
            as_int16 = samples.astype(np.int16)  # 16-bit audio (most corpora) is cached in half the memory
            return as_int16 if np.array_equal(as_int16, samples) else samples

        return self.cache.get(utt, decode)

    def num_samples(self, utt: str, file: sf.SoundFile | None = None) -> int:
        """The utterance's length in samples, read from a header, segments or utt2dur (else decoded).

        ``file``: the utterance's file, already open (its header is read, not the file opened again).
        """
        if utt not in self.lengths:
            source = self.sources[utt]
            rate = self.fbank.sample_rate
            if source.start is not None and source.end != -1:
                length = round(source.end * rate) - round(source.start * rate)
            elif source.entry is not None and self._seekable(source.entry):
                if file is None:
                    with self._open_file(source.entry) as opened:
                        frames = opened.frames
                else:
                    frames = file.frames
                length = frames - (round(source.start * rate) if source.start is not None else 0)
            elif utt in self.utt2dur:
                length = round(self.utt2dur[utt] * rate)
            else:
                length = len(self._decoded(utt))
            if length <= 0:
                raise UtteranceError(f"no samples in '{source.entry}'")
            self.lengths[utt] = length
        return self.lengths[utt]

    def _open_file(self, path: str) -> sf.SoundFile:
        if not os.path.isfile(path):
            raise UtteranceError(f"no such file '{path}'")
        try:
            file = sf.SoundFile(path)
        except (sf.SoundFileError, RuntimeError, ValueError) as e:
            raise UtteranceError(f"cannot read audio from '{path}': {e}") from None
        try:
            self._check_rate(file.samplerate, path)
        except UtteranceError:
            file.close()
            raise
        return file

    @contextlib.contextmanager
    def _opened(self, utt: str) -> Iterator[sf.SoundFile | None]:
        """The utterance's file, open for its length and all its crops (None: a pipe, read decoded)."""
        source = self.sources[utt]
        if source.entry is None or not self._seekable(source.entry):
            yield None
        else:
            with self._open_file(source.entry) as file:
                yield file

    def read_span(self, utt: str, start: int, count: int) -> np.ndarray:
        """``count`` samples of ``utt`` from ``start``; past the end it wraps around (repeats the utterance)."""
        row = np.empty(count, np.float32)
        self.read_spans_into(utt, [(start, count)], [row])
        return row

    def read_spans_into(self, utt: str, spans: Sequence[tuple[int, int]], rows: Sequence[np.ndarray],
                        file: sf.SoundFile | None = None) -> None:
        """Fill each float32 row with its ``(start, count)`` span of ``utt`` (as :meth:`read_span`).

        The file is opened once for all spans (``file``: already open). A span
        past the end, a pipe or a file that cannot seek: from the decoded utterance.
        """
        source = self.sources[utt]
        length = self.num_samples(utt, file)
        if source.entry is None or not self._seekable(source.entry) or any(s + c > length for s, c in spans):
            self._decoded_spans_into(utt, spans, rows)
        elif file is None:
            with self._open_file(source.entry) as opened:
                self.read_spans_into(utt, spans, rows, opened)
        elif not file.seekable():
            self._decoded_spans_into(utt, spans, rows)
        else:
            offset = round(source.start * self.fbank.sample_rate) if source.start is not None else 0
            try:
                self._read_runs_into(file, offset, spans, rows)
            except (sf.SoundFileError, RuntimeError, ValueError) as e:
                raise UtteranceError(f"cannot read audio from '{source.entry}': {e}") from None

    def _decoded_spans_into(self, utt: str, spans: Sequence[tuple[int, int]], rows: Sequence[np.ndarray]) -> None:
        audio = self._decoded(utt)
        for (start, count), row in zip(spans, rows, strict=True):
            row[:] = audio[(start + np.arange(count)) % len(audio)]

    def _read_runs_into(self, f: sf.SoundFile, offset: int, spans: Sequence[tuple[int, int]],
                        rows: Sequence[np.ndarray]) -> None:
        """The spans (from file sample ``offset``) in runs: spans closer than READ_THROUGH_SECONDS read at once."""
        gap = READ_THROUGH_SECONDS * self.fbank.sample_rate
        runs = []  # [first, end, span numbers]: sorted by start, one read each
        for i in sorted(range(len(spans)), key=lambda i: spans[i][0]):
            start, count = spans[i]
            if runs and start - runs[-1][1] <= gap:
                runs[-1][1] = max(runs[-1][1], start + count)
                runs[-1][2].append(i)
            else:
                runs.append([start, start + count, [i]])
        as_int16 = f.subtype in INT16_SUBTYPES
        position = f.tell()
        for first, end, members in runs:
            if not 0 <= offset + first - position <= gap:  # else read through from here (the file's start, say)
                position = f.seek(offset + first)
            base, wanted = position - offset, offset + end - position
            block = f.read(wanted, dtype="int16" if as_int16 else "float32", always_2d=True)[:, 0]
            if len(block) < wanted:  # a header promising more than the file holds
                raise UtteranceError(f"'{f.name}': {len(block)} samples from {position}, expected {wanted}")
            position += wanted
            for i in members:
                start, count = spans[i]
                piece = block[start - base:start - base + count]
                if as_int16:
                    rows[i][:] = piece
                else:
                    np.multiply(piece, KALDI_SAMPLE_SCALE, out=rows[i])

    def speech_clips(self, count: int, max_samples: int, rng: np.random.Generator) -> list[np.ndarray]:
        """At most ``count`` utterances, each at most ``max_samples`` from a random start: the babble bank."""
        chosen = np.sort(rng.choice(len(self.utts), size=min(count, len(self.utts)), replace=False))
        clips = []
        for i in chosen:
            length = self.num_samples(self.utts[i])
            take = min(length, max_samples)
            clips.append(self.read_span(self.utts[i], int(rng.integers(length - take + 1)), take))
        return clips

    # -- crops -----------------------------------------------------------------
    def num_frames(self, utt: str, file: sf.SoundFile | None = None) -> int:
        samples = self.num_samples(utt, file)
        frames = int(self.fbank.num_frames(samples))
        if frames < 1:
            raise UtteranceError(f"shorter than one frame ({samples} samples)")
        return frames

    @staticmethod
    def _start(rng: np.random.Generator, voiced: np.ndarray | None, length: int, frames: int) -> int:
        """A crop's first frame: uniform, or uniform over the ``voiced`` frames (data.use_vad) where a crop fits.

        Too little speech (see :func:`~pyspk.train.data.voiced_frames`): crops start anywhere, as the feats
        source keeps such utterances whole.
        """
        starts = None if voiced is None else np.flatnonzero(voiced[:max(length - frames + 1, 1)])
        if starts is None or len(starts) == 0:
            return random_start(rng, length, frames)
        return int(starts[rng.integers(len(starts))])

    def _span(self, start: int, frames: int) -> tuple[int, int]:
        """The samples ``(first, count)`` that frames ``[start, start + frames)`` are computed from."""
        return start * self.fbank.window_shift, crop_samples(frames, self.fbank)

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """All crop groups of utterance ``index``: the draws of :meth:`CropDataset.sample` without copies."""
        utt = self.utts[index]
        with self._opened(utt) as file:  # its header's length and every crop from one opening
            length = self.num_frames(utt, file)
            draw = self._draw_disjoint_starts if self.non_overlapping else self._draw_starts
            crops = self._read_crops(utt, draw(utt, length, rng), file)
        if self.telephone["prob"] > 0:
            self._telephone(crops, rng)
        return crops

    def _telephone(self, crops: Mapping[str, torch.Tensor], rng: np.random.Generator) -> None:
        """Each crop, with chance data.telephone.prob, through a channel of its own, in place (drawn after the
        starts, so that the crops stay those of the feats source)."""
        rate = int(self.fbank.sample_rate)
        for group in crops.values():
            for row in group.numpy():
                chosen = rng.random() < self.telephone["prob"]
                channel = draw_channel(rng, self.telephone["codecs"])  # drawn either way: the stream stays aligned
                if chosen:
                    out = apply_channel(row, rate, channel, out_rate=rate)
                    row[:len(out)] = out[:len(row)]

    def _draw_starts(self, utt: str, length: int, rng: np.random.Generator) -> dict[str, list[int]]:
        voiced = voiced_frames(self.vad_scp, utt, length)  # read once per item, not per crop
        starts = {}
        for name, count, frames in self.crops:
            self._pick_sources(name, count, [utt], rng)  # drawn as the feats source does, so the starts agree
            starts[name] = [self._start(rng, voiced, length, frames) for _ in range(count)]
        return starts

    def _draw_disjoint_starts(self, utt: str, length: int, rng: np.random.Generator) -> dict[str, list[int]]:
        for name, count, _ in self.crops:
            self._pick_sources(name, count, [utt], rng)
        starts = self.disjoint_starts(length, rng)
        if starts is None:  # too short for disjoint crops: independent ones
            starts = {name: [random_start(rng, length, frames) for _ in range(count)]
                      for name, count, frames in self.crops}
        return starts

    def _read_crops(self, utt: str, starts: Mapping[str, Sequence[int]],
                    file: sf.SoundFile | None) -> dict[str, torch.Tensor]:
        """Every group's crops from its start frames, all read from ``file`` straight into the batch rows."""
        out, spans, rows = {}, [], []
        for name, count, frames in self.crops:
            out[name] = np.empty((count, crop_samples(frames, self.fbank)), np.float32)
            spans += [self._span(start, frames) for start in starts[name]]
            rows += list(out[name])
        self.read_spans_into(utt, spans, rows, file)
        return {name: torch.from_numpy(group) for name, group in out.items()}


# The whole data section: stored features' keys and raw audio's (aug_suffixes is allowed with wav too,
# unused: a config switches by data.source alone).
WAV_KEYS = {"source": Text(*SOURCES), "fbank_conf": nullable(Text()), "online_aug": nullable(ONLINE_AUG_SECTION),
            "audio_cache_mb": Value(float, 0), "telephone": nullable(TELEPHONE_SECTION)}
DATA_SECTION = Map({**FEATS_DATA_SECTION.keys, **WAV_KEYS})


def build_training_source(data_dir: PathLike, cfg: Mapping[str, Any], seed: int) -> CropDataset:
    """The dataset of ``data.source``: feature crops from feats.scp, or raw-audio crops from wav.scp."""
    source = cfg.get("source", "feats")
    if source not in SOURCES:
        raise ConfigError(f"data.source must be one of {', '.join(SOURCES)}, got {source!r}")
    if source == "feats":
        # fbank_conf may stay: it names the options the stored features were made with.
        misplaced = [key for key in ("online_aug", "audio_cache_mb", "telephone") if cfg.get(key) is not None]
        if misplaced:
            raise ConfigError(f"data.{misplaced[0]} needs data.source: wav")
        return build_dataset(data_dir, {k: v for k, v in cfg.items() if k not in WAV_KEYS}, seed)
    check_section(cfg, DATA_SECTION, "data")
    conf = cfg.get("fbank_conf")
    if not conf:
        raise ConfigError("data.source: wav needs data.fbank_conf (the recipe's fbank.conf, e.g. conf/fbank.conf)")
    if not os.path.isfile(conf):
        raise ConfigError(f"data.fbank_conf: no such file '{conf}'")
    aug = online_aug_options(cfg.get("online_aug"))  # checked here, before any audio is read
    prob = aug["prob"] if aug is not None and aug["prob"] is not None else cfg.get("aug_prob", 0.5)
    return WavCropDataset(data_dir, cfg["crops"], FbankConfig.from_file(conf), seed=seed,
                          use_vad=bool(cfg.get("use_vad", False)), aug_prob=float(prob),
                          non_overlapping=bool(cfg.get("non_overlapping", False)),
                          cache_mb=float(cfg.get("audio_cache_mb", DEFAULT_CACHE_MB)), telephone=cfg.get("telephone"))
