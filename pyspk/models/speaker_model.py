"""Embed and score audio with a model file: the recipe's front-end and extraction in one object.

``SpeakerModel.load(path)`` (what ``pyspk.load`` returns) reads a model bundle
made by steps/export_model.sh (pyspk.models.bundle), or a trainer's final.pt
together with the fbank conf it was trained with. Audio goes through the
functions the recipe's chain runs: pyspk.features.audio.read_audio,
pyspk.features.fbank.prepare_waveform and compute_fbank (steps/make_fbank.sh),
pyspk.features.vad.frame_log_energy and compute_vad
(steps/compute_vad_decision.sh), pyspk.models.extract.select_voiced and
extract_embeddings (steps/extract_embeddings.sh), so an embedding equals the
chain's for the same utterance (with --compress false features: compressed
arks round the features).

Audio at another sample rate than the model's is resampled (polyphase,
pyspk.augment.rir.resample) and said so once per rate on the "pyspk" logger,
unless ``resample=False`` makes it an error.
"""

import logging
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from pyspk.augment.rir import resample
from pyspk.backend.cosine import CosineScorer
from pyspk.backend.pipeline import PldaBackend
from pyspk.backend.scoring import Scorer, score_pairs
from pyspk.device import pick_device
from pyspk.features.audio import KALDI_SAMPLE_SCALE, UtteranceError, read_audio
from pyspk.features.fbank import FBANK_SPEC, FbankConfig, compute_fbank, prepare_waveform, read_kaldi_conf
from pyspk.features.vad import VAD_SPEC, VadConfig, compute_vad, frame_log_energy
from pyspk.models import build_model
from pyspk.models.bundle import BundleError, frontend_configs, is_bundle, plda_from_dict, read_model_file
from pyspk.models.extract import extract_embeddings, select_voiced

log = logging.getLogger("pyspk")

# What embed() takes: a file path, a wav.scp entry ("cmd |"), or samples (with sample_rate).
AudioInput = str | os.PathLike | np.ndarray
BACKENDS = ("auto", "cosine", "plda")


class EmbeddingError(ValueError):
    """An input that cannot be embedded; the message names it."""


def _as_int16_range(samples: np.ndarray) -> np.ndarray:
    """(num_samples, channels) float32 in the int16 range, from float samples in [-1, 1] or integer PCM."""
    samples = np.asarray(samples)
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.ndim != 2:
        raise UtteranceError(f"expected samples of shape (num_samples,) or (num_samples, channels), "
                             f"got {samples.shape}")
    if samples.shape[0] == 0:
        raise UtteranceError("no samples")
    if np.issubdtype(samples.dtype, np.integer):
        scale = KALDI_SAMPLE_SCALE / 2 ** (8 * samples.dtype.itemsize - 1)
    elif np.issubdtype(samples.dtype, np.floating):
        scale = KALDI_SAMPLE_SCALE  # soundfile's float samples, as read_audio scales them
    else:
        raise UtteranceError(f"samples of dtype {samples.dtype} are not audio")
    return (samples.astype(np.float32) * np.float32(scale)).astype(np.float32)


class SpeakerModel:
    """A backbone with its front-end (fbank, VAD, chunking) and optional scoring back-end."""

    def __init__(self, backbone: torch.nn.Module, fbank_config: FbankConfig, vad_config: VadConfig, use_vad: bool,
                 chunk_size: int = 1000, min_chunk_size: int = 100, mean: np.ndarray | None = None,
                 plda: PldaBackend | None = None, source: str = "<model>", resample_audio: bool = True,
                 device: torch.device | str | None = None):
        if fbank_config.dim != backbone.feat_dim:
            raise BundleError(f"{source}: the fbank options give {fbank_config.dim}-dim features but the backbone "
                              f"takes {backbone.feat_dim}")
        self.device = pick_device(None if device is None else str(device))
        self.backbone = backbone.to(self.device).eval()
        self.fbank_config, self.vad_config, self.use_vad = fbank_config, vad_config, use_vad
        self.chunk_size, self.min_chunk_size = chunk_size, min_chunk_size
        self.mean, self.plda = mean, plda
        self.source = source
        self.resample_audio = resample_audio
        self._rates_said = set()

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", fbank_conf: str | None = None,
             vad_conf: str | None = None, use_vad: bool = False, resample_audio: bool = True) -> "SpeakerModel":
        """Read a bundle, or a plain backbone file (final.pt) with ``fbank_conf`` (and ``vad_conf`` for VAD).

        BundleError names the file when it is missing, truncated, of another
        format version, or a plain backbone file without ``fbank_conf``.
        """
        path = os.fspath(path)
        content = read_model_file(path)
        name = content["default_backbone"]
        entry = content["backbones"].get(name)
        if entry is None:
            raise BundleError(f"{path}: no backbone '{name}' (its default_backbone)")
        try:
            backbone = build_model(entry["config"])
            backbone.load_state_dict(entry["state_dict"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise BundleError(f"{path}: the backbone cannot be rebuilt: {str(e).splitlines()[0]}") from None
        if is_bundle(content):
            if fbank_conf or vad_conf:
                raise BundleError(f"{path}: a model bundle carries its own fbank and VAD options; "
                                  "fbank_conf/vad_conf are for plain backbone files")
            frontend, backend = content["frontend"], content["backend"]
            fbank_config, vad_config = frontend_configs(frontend, path)
            mean = None if backend["mean"] is None else backend["mean"].numpy()
            plda = None if backend["plda"] is None else plda_from_dict(backend["plda"])
            return cls(backbone, fbank_config, vad_config, bool(frontend["use_vad"]), int(frontend["chunk_size"]),
                       int(frontend["min_chunk_size"]), mean, plda, path, resample_audio, device)
        if not fbank_conf:
            raise BundleError(f"{path}: a backbone file without its front-end; give the fbank conf it was trained "
                              "with, or make a model bundle with steps/export_model.sh")
        if use_vad and not vad_conf:
            raise BundleError(f"{path}: use_vad needs vad_conf")
        fbank_config = FbankConfig(read_kaldi_conf(fbank_conf, FBANK_SPEC), source=fbank_conf)
        vad_config = VadConfig(read_kaldi_conf(vad_conf, VAD_SPEC), vad_conf) if vad_conf else VadConfig()
        return cls(backbone, fbank_config, vad_config, use_vad, source=path, resample_audio=resample_audio,
                   device=device)

    @property
    def sample_rate(self) -> float:
        return self.fbank_config.sample_rate

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    def _to_model_rate(self, samples, rate, name):
        if rate == self.sample_rate:
            return samples
        if not self.resample_audio:
            raise UtteranceError(f"sample rate {rate:g} Hz, the model takes {self.sample_rate:g} Hz "
                                 "(resampling is off)")
        if rate not in self._rates_said:
            self._rates_said.add(rate)
            log.warning("resampling %g Hz audio to the model's %g Hz (first: %s); --no-resample (resample_audio="
                        "False) makes it an error", rate, self.sample_rate, name)
        channels = [resample(samples[:, c], int(rate), int(self.sample_rate)) for c in range(samples.shape[1])]
        return np.stack(channels, axis=1).astype(np.float32)

    def features(self, samples: np.ndarray, rate: float, name: str = "audio") -> np.ndarray:
        """The backbone's input for (num_samples, channels) int16-range samples: fbank, voiced frames with VAD.

        Raises UtteranceError (audio too short, no voiced frames, a rate it may not resample ...).
        """
        wave = prepare_waveform(self._to_model_rate(samples, rate, name), self.sample_rate, self.fbank_config, name)
        feats = compute_fbank(wave, self.fbank_config)
        if self.use_vad:
            decision = compute_vad(frame_log_energy(wave, self.fbank_config), self.vad_config)
            try:
                feats = select_voiced(feats, decision)
            except ValueError as e:
                raise UtteranceError(str(e)) from None
        if len(feats) < self.backbone.min_frames:
            raise UtteranceError(f"too short: {len(feats)} frames, the model needs at least {self.backbone.min_frames}")
        if len(feats) < self.min_chunk_size:
            # Extraction repeats it up to the shortest chunk (pyspk.models.extract.pad_by_repetition), as the
            # recipe chain does: the embedding exists, but from less speech than the model was made for.
            shift = self.fbank_config.window_shift / self.sample_rate
            log.warning("%s: %d %sframes (%.2f s) is shorter than the model's shortest chunk of %d frames "
                        "(%.2f s): padded by repeating it", name, len(feats), "voiced " if self.use_vad else "",
                        len(feats) * shift, self.min_chunk_size, self.min_chunk_size * shift)
        return feats

    def read(self, audio: AudioInput, sample_rate: float | None = None) -> tuple[np.ndarray, float]:
        """``(int16-range samples (num_samples, channels), rate)`` of a path, a wav.scp entry, or samples."""
        if isinstance(audio, (str, os.PathLike)):
            return read_audio(os.fspath(audio))
        if sample_rate is None:
            raise UtteranceError("samples need sample_rate=")
        return _as_int16_range(audio), sample_rate

    def iter_embeddings(self, items: Iterable[tuple[str, AudioInput]], sample_rate: float | None = None,
                        failed: list[tuple[str, str]] | None = None,
                        batch_size: int = 32) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(key, embedding)`` for ``(key, audio)`` items, batched; failures go to ``failed`` (key, reason)."""
        failed = [] if failed is None else failed

        def features():
            for key, audio in items:
                try:
                    samples, rate = self.read(audio, sample_rate)
                    yield key, self.features(samples, rate, key)
                except UtteranceError as e:
                    failed.append((key, str(e)))

        return extract_embeddings(self.backbone, features(), self.chunk_size, self.min_chunk_size, batch_size,
                                  self.device)

    def embed(self, audio: AudioInput | Sequence[AudioInput], sample_rate: float | None = None,
              batch_size: int = 32) -> np.ndarray:
        """The embedding (embed_dim,) of one input, or (N, embed_dim) of a list of inputs.

        An input is a file path, a wav.scp entry (``"sox in.sph -t wav - |"``)
        or samples: (num_samples,) or (num_samples, channels), float in [-1, 1]
        as soundfile reads them or integer PCM, at ``sample_rate``.
        EmbeddingError names the first input that cannot be embedded.
        """
        single = isinstance(audio, (str, os.PathLike)) or (isinstance(audio, np.ndarray) and audio.ndim <= 2
                                                            and audio.dtype != object)
        inputs = [audio] if single else list(audio)
        keys = [os.fspath(a) if isinstance(a, (str, os.PathLike)) else f"input {i}" for i, a in enumerate(inputs)]
        failed = []
        embeddings = dict(self.iter_embeddings(zip(keys, inputs, strict=True), sample_rate, failed, batch_size))
        if failed:
            key, reason = failed[0]
            raise EmbeddingError(f"{key}: {reason}")
        matrix = np.stack([embeddings[key] for key in keys])
        return matrix[0] if single else matrix

    def scorer(self, backend: str = "auto") -> tuple[Scorer, str]:
        """``(scorer, name)``: PLDA when asked or (auto) when the model has one, else cosine with its mean."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
        if backend == "plda" and self.plda is None:
            raise BundleError(f"{self.source}: the model has no PLDA back-end")
        if backend == "plda" or (backend == "auto" and self.plda is not None):
            return self.plda.scorer(), "plda"
        return CosineScorer(self.mean), "cosine"

    def score_embeddings(self, enrol: np.ndarray, test: np.ndarray, backend: str = "auto") -> np.ndarray:
        """Scores of the pairs of rows (enrol[i], test[i]), each side one utterance."""
        scorer, _ = self.scorer(backend)
        enrol, test = np.atleast_2d(enrol), np.atleast_2d(test)
        enrol_side = scorer.enroll_side(enrol, np.ones(len(enrol), dtype=np.int64))
        test_side = scorer.test_side(test, enrol_side.group_values)
        index = np.arange(len(enrol))
        return score_pairs(enrol_side, test_side, index, index)

    def score(self, enrol: AudioInput, test: AudioInput, backend: str = "auto",
              sample_rate: float | None = None) -> float:
        """The score of one enrolment and one test input (cosine or PLDA, see :meth:`scorer`)."""
        embeddings = self.embed([enrol, test], sample_rate)
        return float(self.score_embeddings(embeddings[:1], embeddings[1:], backend)[0])
