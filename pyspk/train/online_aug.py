"""Online augmentation of raw-audio crops and Kaldi fbank on the training device (``data.source: wav``).

The categories and SNR ranges are those of the stored copies
(:mod:`pyspk.augment.augment_dir`, Kaldi's voxceleb recipe), so online and
stored augmentation are interchangeable: each chosen crop gets one of

* ``reverb``: convolution with an RIR (RIRS_NOISES lists under ``rir_dir``,
  else the shoebox simulator), aligned on the direct path and brought back to
  the input power (``wav-reverberate --shift-output --normalize-output``);
* ``noise``: foreground noises (MUSAN noise, else coloured noise of 1-5 s),
  one after the other ``noise_interval`` seconds apart, at an SNR of 15/10/5/0 dB;
* ``music``: one background piece (MUSAN music, else synthetic) at 15/10/8/5 dB;
* ``babble``: 3-7 talkers (MUSAN speech, else utterances of the training data
  read once into the bank, as the stored copies sum other utterances of the
  data dir) at 20/17/15/13 dB each. Never the batch's own crops: for a
  contrastive objective those are the negatives, and summing them into a
  positive teaches the network to match them.

The SNR is Kaldi's: the crop's mean power over each noise's mean power where
it sounds. Noise and RIR banks are read (or generated) once, at most
``bank_size`` clips of at most ``max_noise_sec`` each, and moved to the device.
The convolution is one batched FFT; every random draw comes from a generator
seeded per (seed, step, rank, crop group), so a resumed run augments alike.
Features are then :class:`~pyspk.features.torch_fbank.TorchFbank` of the
recipe's fbank.conf, as extraction computes them; mean normalisation stays
where it is for stored features, in the model (``model.cmn``).
"""

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from pyspk.augment.augment_dir import AUG_TYPES, GENERATED_NOISE_SEC, MUSAN_PART, TYPE_DEFAULTS
from pyspk.augment.noise import coloured_noise, musan_files, read_noise_file, synth_music
from pyspk.augment.rir import RIR_SETS, read_rir, read_rir_list, simulate_rir
from pyspk.config import ConfigError, ListOf, Map, Text, Value, check_section, defaults_map, nullable
from pyspk.features.fbank import FbankConfig
from pyspk.features.torch_fbank import TorchFbank

log = logging.getLogger(__name__)

NOISE_TYPES = ("noise", "music", "babble")
# ``speech(count, max_samples, rng)``: at most ``count`` speech clips of at most ``max_samples`` (babble).
SpeechSource = Callable[[int, int, np.random.Generator], list[np.ndarray]]
ONLINE_AUG_DEFAULTS = {
    "prob": None,  # default: data.aug_prob (and data.crops.<group>.aug_prob)
    "types": {t: 1.0 for t in AUG_TYPES},
    "rir_dir": None, "rir_sets": TYPE_DEFAULTS["reverb"]["rir_sets"], "musan_dir": None,
    "snrs": {t: TYPE_DEFAULTS[t]["snrs"] for t in NOISE_TYPES},
    "num_noises": {t: TYPE_DEFAULTS[t]["num_noises"] for t in ("music", "babble")},
    "noise_interval": TYPE_DEFAULTS["noise"]["interval"],
    "bank_size": 100, "max_noise_sec": 10.0,
}
# Its sub-sections by name: the kinds each may name.
ONLINE_AUG_KINDS = {"types": Map({t: Value(float, 0) for t in AUG_TYPES}),
                    "snrs": Map({t: ListOf(Value(float)) for t in NOISE_TYPES}),
                    "num_noises": Map({t: ListOf(Value(float)) for t in ("music", "babble")})}
ONLINE_AUG_SECTION = defaults_map(
    ONLINE_AUG_DEFAULTS, prob=nullable(Value(float, 0, 1)), noise_interval=nullable(Value(float, 0)),
    bank_size=nullable(Value(int, 1)), max_noise_sec=nullable(Value(float, 0, low_open=True)),
    rir_dir=nullable(Text()), musan_dir=nullable(Text()), types=ONLINE_AUG_KINDS["types"],
    snrs=nullable(ONLINE_AUG_KINDS["snrs"]), num_noises=nullable(ONLINE_AUG_KINDS["num_noises"]))
SIMULATED_MUSIC_SEC = 10.0


def _check_list(value, name, kind, low):
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{name} must be a non-empty list")
    try:
        values = [kind(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a list of numbers, got {value!r}") from None
    if low is not None and min(values) < low:
        raise ConfigError(f"{name} values must be >= {low}, got {value!r}")
    return values


def online_aug_options(cfg: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``data.online_aug`` merged with the defaults and checked (ConfigError naming the key); None when absent."""
    if cfg is None:
        return None
    if not isinstance(cfg, dict):
        raise ConfigError("data.online_aug must be a mapping")
    check_section(cfg, ONLINE_AUG_SECTION, "data.online_aug")
    options = {**ONLINE_AUG_DEFAULTS, **{k: v for k, v in cfg.items() if v is not None}}
    for key, kinds in ONLINE_AUG_KINDS.items():
        if not isinstance(options[key], dict):
            raise ConfigError(f"data.online_aug.{key} must be a mapping with keys among {', '.join(kinds.known())}")
        check_section(options[key], kinds, f"data.online_aug.{key}")
        options[key] = {**ONLINE_AUG_DEFAULTS[key], **options[key]} if key != "types" else dict(options[key])
    options["types"] = {t: float(weight) for t, weight in options["types"].items()}
    if sum(options["types"].values()) <= 0:
        raise ConfigError("data.online_aug.types: at least one weight must be positive")
    options["snrs"] = {t: _check_list(v, f"data.online_aug.snrs.{t}", float, None) for t, v in options["snrs"].items()}
    options["num_noises"] = {t: _check_list(v, f"data.online_aug.num_noises.{t}", int, 1)
                             for t, v in options["num_noises"].items()}
    sets = _check_list(options["rir_sets"], "data.online_aug.rir_sets", str, None)
    unknown = [s for s in sets if s not in RIR_SETS]
    if unknown:
        raise ConfigError(f"data.online_aug.rir_sets: unknown {unknown}; known: {', '.join(RIR_SETS)}")
    options["rir_sets"] = sets
    return options


def padded_bank(clips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, max_len)`` float32 zero-padded clips and their ``(n,)`` lengths."""
    lengths = torch.tensor([len(c) for c in clips], dtype=torch.long)
    bank = torch.zeros(len(clips), int(lengths.max()))
    for i, clip in enumerate(clips):
        bank[i, :len(clip)] = torch.from_numpy(np.asarray(clip, dtype=np.float32))
    return bank, lengths


def _corpus_sample(paths, count, rng):
    """At most ``count`` of ``paths``, drawn without replacement by ``rng``, in sorted order."""
    if len(paths) <= count:
        return list(paths)
    return [paths[i] for i in np.sort(rng.choice(len(paths), size=count, replace=False))]


def load_rirs(options: Mapping[str, Any], rate: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Unit-energy RIRs: from the RIRS_NOISES lists of ``rir_dir``, else simulated rooms."""
    count = options["bank_size"]
    if options["rir_dir"]:
        try:
            lists = [read_rir_list(options["rir_dir"], s) for s in options["rir_sets"]]
        except (OSError, ValueError) as e:
            raise ConfigError(f"data.online_aug.rir_dir: {e}") from None
        per_set = max(count // len(lists), 1)  # the sets equally likely, as offline
        return [read_rir(p, rate) for paths in lists for p in _corpus_sample(paths, per_set, rng)]
    return [simulate_rir(rng, rate)[0] for _ in range(count)]


def load_noises(options: Mapping[str, Any], kind: str, rate: int, rng: np.random.Generator,
                speech: SpeechSource | None = None) -> list[np.ndarray]:
    """Noise clips (int16-range scale is irrelevant: they are scaled to an SNR) of ``kind``; babble without
    MUSAN: ``speech(count, max_samples, rng)``, utterances of the training data."""
    count, max_samples = options["bank_size"], int(options["max_noise_sec"] * rate)
    if options["musan_dir"]:
        try:
            paths = musan_files(options["musan_dir"], MUSAN_PART[kind])
        except (OSError, ValueError) as e:
            raise ConfigError(f"data.online_aug.musan_dir: {e}") from None
        return [read_noise_file(p, rate, rng, max_samples=max_samples) for p in _corpus_sample(paths, count, rng)]
    if kind == "noise":
        return [coloured_noise(rng, min(int(rng.uniform(*GENERATED_NOISE_SEC) * rate), max_samples), rate)
                for _ in range(count)]
    if kind == "music":
        return [synth_music(rng, min(int(SIMULATED_MUSIC_SEC * rate), max_samples), rate) for _ in range(count)]
    if speech is None:
        raise ConfigError("data.online_aug: babble without musan_dir needs the training utterances "
                          "(set musan_dir, or types.babble: 0)")
    return speech(count, max_samples, rng)


def fft_convolve(x: torch.Tensor, rirs: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Row ``i`` of ``x`` convolved with ``rirs[i]``, from sample ``shifts[i]`` on, ``x``'s length kept."""
    length = x.shape[1]
    size = length + rirs.shape[1] - 1
    fft_size = 1 << (size - 1).bit_length()  # a power of two: several times faster than an odd size
    spectrum = torch.fft.rfft(x, n=fft_size) * torch.fft.rfft(rirs, n=fft_size)
    full = torch.fft.irfft(spectrum, n=fft_size)
    index = shifts[:, None] + torch.arange(length, device=x.device)[None, :]
    return full.gather(1, index.clamp(max=size - 1))


def looped(bank: torch.Tensor, lengths: torch.Tensor, which: torch.Tensor, offsets: torch.Tensor,
           length: int) -> torch.Tensor:
    """``(len(which), length)``: clip ``which[i]`` of ``bank`` looped from ``offsets[i]``."""
    clip_len = lengths[which][:, None]
    index = (offsets[:, None] + torch.arange(length, device=bank.device)[None, :]) % clip_len
    return bank[which[:, None], index]


def snr_scale(speech_power: torch.Tensor, noise: torch.Tensor, active: torch.Tensor,
              snr_db: torch.Tensor) -> torch.Tensor:
    """Per row: the factor that brings ``noise`` (mean power over its ``active`` samples) to ``snr_db``."""
    power = (noise.square() * active).sum(dim=1) / active.sum(dim=1).clamp(min=1)
    scale = torch.sqrt(speech_power * 10.0 ** (-snr_db / 10.0) / power.clamp(min=1e-20))
    return torch.where(power > 0, scale, torch.zeros_like(scale))


class OnlineAugmenter:
    """Reverb, noise, music and babble on a batch of crops ``(n, samples)`` (int16 range) on the device."""

    def __init__(self, options: Mapping[str, Any], rate: int, device: torch.device, seed: int = 0,
                 speech: SpeechSource | None = None):
        rng = np.random.default_rng([int(seed), 1])  # the banks depend on the seed only
        self.device = device
        self.types = [t for t in AUG_TYPES if options["types"].get(t, 0.0) > 0]
        self.weights = torch.tensor([options["types"][t] for t in self.types], device=device)
        if "reverb" in self.types:
            self.rirs = padded_bank(load_rirs(options, rate, rng))[0].to(device)
            self.rir_shifts = self.rirs.abs().argmax(dim=1)
        self.banks = {}
        for kind in NOISE_TYPES:
            if kind not in self.types:
                continue
            clips = load_noises(options, kind, rate, rng, speech)
            # Foreground noises follow one another with silent gaps; "active" marks where a noise sounds.
            gap = np.zeros(round(options["noise_interval"] * rate) if kind == "noise" else 0)
            bank, lengths = padded_bank([np.concatenate([c, gap]) for c in clips])
            active, _ = padded_bank([np.concatenate([np.ones(len(c)), gap]) for c in clips])
            self.banks[kind] = (bank.to(device), lengths.to(device), active.to(device))
        self.snrs = {t: torch.tensor(v, device=device) for t, v in options["snrs"].items()}
        self.num_noises = {t: torch.tensor(v, device=device) for t, v in options["num_noises"].items()}
        # Clips drawn per crop and noise kind: the most a crop can sum (constant; no device sync per step).
        self.widths = {"noise": 1, **{t: max(v) for t, v in options["num_noises"].items()}}
        log.info("online augmentation: %s", ", ".join(
            f"{t} x{options['types'][t]:g}" + (f" ({len(self.banks[t][0])} clips)" if t in self.banks else "")
            for t in self.types))

    def _randint(self, high: int, size: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        return torch.randint(max(int(high), 1), size, generator=gen, device=self.device)

    def draw(self, n: int, prob: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Every random choice for ``n`` crops (the same draws whatever is chosen, so streams stay aligned)."""
        plan = {"chosen": torch.rand(n, generator=gen, device=self.device) < prob,
                "kind": torch.multinomial(self.weights, n, replacement=True, generator=gen),
                "rir": self._randint(len(self.rirs) if "reverb" in self.types else 1, (n,), gen),
                "babble_count": self.num_noises["babble"][self._randint(len(self.num_noises["babble"]), (n,), gen)],
                "music_count": self.num_noises["music"][self._randint(len(self.num_noises["music"]), (n,), gen)]}
        for kind in NOISE_TYPES:
            width = self.widths[kind]
            bank_size = len(self.banks[kind][0]) if kind in self.banks else 0
            plan[f"{kind}_clip"] = self._randint(bank_size, (n, width), gen)
            plan[f"{kind}_offset"] = torch.rand(n, width, generator=gen, device=self.device)
            plan[f"{kind}_snr"] = self.snrs[kind][self._randint(len(self.snrs[kind]), (n, width), gen)]
        return plan

    def apply(self, x: torch.Tensor, plan: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``x`` augmented as ``plan`` says."""
        out = x.clone()
        speech_power = x.square().mean(dim=1)
        for i, kind in enumerate(self.types):
            rows = (plan["chosen"] & (plan["kind"] == i)).nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            if kind == "reverb":
                out[rows] = self._reverb(x[rows], plan["rir"][rows])
            else:
                noise = self._noise(x, rows, kind, plan, speech_power[rows])
                out[rows] = x[rows] + noise
        return out

    def _reverb(self, x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        y = fft_convolve(x, self.rirs[which], self.rir_shifts[which])
        gain = torch.sqrt(x.square().mean(dim=1) / y.square().mean(dim=1).clamp(min=1e-20))
        return y * gain[:, None]

    def _noise(self, x, rows, kind, plan, speech_power):
        """The scaled sum of the noises of ``kind`` for crops ``rows`` of ``x``."""
        length = x.shape[1]
        counts = plan[f"{kind}_count"][rows] if kind != "noise" else torch.ones_like(rows)
        total = torch.zeros(len(rows), length, device=x.device)
        bank, lengths, active_bank = self.banks[kind]
        for j in range(plan[f"{kind}_clip"].shape[1]):
            which = plan[f"{kind}_clip"][rows, j]
            offsets = (plan[f"{kind}_offset"][rows, j] * lengths[which]).long()
            noise = looped(bank, lengths, which, offsets, length)
            active = looped(active_bank, lengths, which, offsets, length)
            scale = snr_scale(speech_power, noise, active, plan[f"{kind}_snr"][rows, j])
            total += (scale * (j < counts))[:, None] * noise
        return total

    def __call__(self, x: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.draw(x.shape[0], prob, gen))


class WavFrontend:
    """Raw-audio crop batches ``{name: (B, count, samples)}`` -> augmented fbank ``{name: (B, count, frames, dim)}``."""

    def __init__(self, fbank: FbankConfig, online_aug: Mapping[str, Any] | None, probs: Mapping[str, float],
                 seed: int, rank: int, device: torch.device, speech: SpeechSource | None = None):
        self.fbank = TorchFbank(fbank).to(device)
        options = online_aug_options(online_aug)
        self.augmenter = (None if options is None
                          else OnlineAugmenter(options, int(fbank.sample_rate), device, seed, speech))
        self.probs = dict(probs)
        self.seed, self.rank = int(seed), int(rank)
        self.generators: dict[torch.device, torch.Generator] = {}

    def generator(self, device: torch.device, step: int, group: int) -> torch.Generator:
        """The generator of ``device`` seeded for (seed, step, rank, group), apart from the feature augmentation's."""
        if device not in self.generators:
            self.generators[device] = torch.Generator(device=device)
        seed = int(np.random.SeedSequence([self.seed, step, self.rank, group, 16]).generate_state(1)[0])
        return self.generators[device].manual_seed(seed)

    @torch.no_grad()
    def __call__(self, crops: Mapping[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        out = {}
        for group, (name, batch) in enumerate(crops.items()):
            if batch.dim() != 3:
                raise ValueError(f"crop group {name}: expected (batch, count, samples) audio, got {tuple(batch.shape)}")
            gen = self.generator(batch.device, step, group)
            size, count, samples = batch.shape
            x = batch.reshape(size * count, samples).float()
            if self.augmenter is not None:
                x = self.augmenter(x, self.probs[name], gen)
            feats, _ = self.fbank(x, generator=gen)
            out[name] = feats.view(size, count, *feats.shape[1:])
        return out


def build_frontend(data_cfg: Mapping[str, Any], dataset: Any, seed: int, rank: int,
                   device: torch.device) -> WavFrontend | None:
    """The device frontend of a raw-audio dataset (``dataset.fbank`` set), else None (stored features)."""
    fbank = getattr(dataset, "fbank", None)
    if fbank is None:
        return None
    return WavFrontend(fbank, data_cfg.get("online_aug"), dataset.aug_prob, seed, rank, device, dataset.speech_clips)
