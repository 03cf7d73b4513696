"""Feature-domain augmentation of crop batches: SpecAugment and a random channel.

Works on a batch of crops ``(n, frames, mel_bins)`` of Kaldi log-mel fbank,
vectorised with torch on the training device (GPU when there is one), with a
generator seeded per step so a resumed run draws the same augmentation.
Masked cells are filled with the crop's per-bin mean, so after the model's
per-crop mean normalisation they are exactly zero.

Why a channel augmentation: crops of one utterance share its recording
channel, so a self-supervised objective can match crops by channel instead of
speaker. A static filter or gain alone is an additive constant per mel bin and
the model's per-crop mean normalisation removes it; what makes crops differ
is the filter applied to speech *relative to* reverberation and additive noise
drawn per crop: ``log(reverb(exp(x + filter)) + noise)``.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pyspk.config import ConfigError, Map, Value, check_section, defaults_map

DB = math.log(10.0) / 10.0  # natural-log power per dB

SPECAUG_DEFAULTS = {"prob": 0.0, "time_masks": 1, "time_width": 10, "freq_masks": 1, "freq_width": 8}
CHANNEL_DEFAULTS = {"prob": 0.0, "gain_db": 6.0, "tilt_db": 10.0, "eq_db": 6.0, "eq_bands": 4,
                    "reverb_prob": 0.3, "rt60": [0.2, 0.8], "noise_prob": 0.5, "snr_db": [5.0, 25.0],
                    "frame_shift": 0.01}


def options_section(defaults: Mapping[str, Any]) -> Map:
    """The declaration of an augmentation's options: each typed as its default, ``prob`` in [0, 1]."""
    return defaults_map(defaults, prob=Value(float, 0, 1))


SPECAUG_SECTION = options_section(SPECAUG_DEFAULTS)
CHANNEL_SECTION = options_section(CHANNEL_DEFAULTS)


def merged_options(cfg: Mapping[str, Any] | None, defaults: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Defaults overridden by ``cfg`` (None = defaults), unknown keys rejected."""
    cfg = cfg or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{name} must be a mapping")
    check_section(cfg, options_section(defaults), name)
    return dict(defaults, **cfg)


def uniform(low: float, high: float, size: tuple[int, ...], gen: torch.Generator,
            device: torch.device) -> torch.Tensor:
    """Uniform draws in ``[low, high)`` of shape ``size``."""
    return low + (high - low) * torch.rand(size, generator=gen, device=device)


def band_masks(gen: torch.Generator, n: int, length: int, count: int, max_width: int,
               device: torch.device) -> torch.Tensor:
    """Boolean ``(n, length)``: ``count`` random bands of width 0..max_width per row."""
    mask = torch.zeros(n, length, dtype=torch.bool, device=device)
    positions = torch.arange(length, device=device)[None, :]
    for _ in range(count):
        width = torch.randint(0, max_width + 1, (n, 1), generator=gen, device=device)
        start = (torch.rand(n, 1, generator=gen, device=device) * (length - width + 1)).long()
        mask |= (positions >= start) & (positions < start + width)
    return mask


def spec_augment(x: torch.Tensor, gen: torch.Generator, opts: Mapping[str, Any]) -> torch.Tensor:
    """Time and frequency masking; each crop is masked with probability ``prob``."""
    n, frames, bins = x.shape
    chosen = torch.rand(n, generator=gen, device=x.device) < opts["prob"]
    time_mask = band_masks(gen, n, frames, opts["time_masks"], opts["time_width"], x.device)
    freq_mask = band_masks(gen, n, bins, opts["freq_masks"], opts["freq_width"], x.device)
    mask = (time_mask[:, :, None] | freq_mask[:, None, :]) & chosen[:, None, None]
    return torch.where(mask, x.mean(dim=1, keepdim=True), x)


def smooth_curves(gen: torch.Generator, n: int, bins: int, tilt_db: float, eq_db: float, eq_bands: int,
                  device: torch.device) -> torch.Tensor:
    """Random smooth curves over mel bins in dB: a linear tilt plus low cosine terms."""
    position = torch.linspace(0.0, 1.0, bins, device=device)
    curves = uniform(-tilt_db, tilt_db, (n, 1), gen, device) * (position - 0.5)
    if eq_bands > 0:
        orders = torch.arange(1, eq_bands + 1, device=device, dtype=torch.float32)
        basis = torch.cos(math.pi * orders[:, None] * position[None, :])
        curves = curves + uniform(-1.0, 1.0, (n, eq_bands), gen, device) @ basis * (eq_db / math.sqrt(eq_bands))
    return curves


def reverb_kernels(gen: torch.Generator, n: int, rt60_range: Sequence[float], frame_shift: float,
                   device: torch.device) -> torch.Tensor:
    """Power-domain exponential tails ``(n, taps)``; tap 0 is the direct sound."""
    rt60 = uniform(rt60_range[0], rt60_range[1], (n, 1), gen, device)
    taps = math.ceil(rt60_range[1] / frame_shift)
    # Energy falls 60 dB over rt60 seconds.
    log_decay = -6.0 * math.log(10.0) * frame_shift / rt60
    kernels = torch.exp(log_decay * torch.arange(taps, device=device))
    drr = uniform(0.3, 1.0, (n, 1), gen, device)  # random direct-to-reverberant ratio
    return torch.cat([kernels[:, :1], kernels[:, 1:] * drr], dim=1)


def channel_augment(x: torch.Tensor, gen: torch.Generator, opts: Mapping[str, Any]) -> torch.Tensor:
    """Per-crop random filter + gain on speech, then reverberation and coloured noise.

    Random parameters are drawn for every crop (fixed draw sizes); the work is
    done only on the crops chosen for each stage.
    """
    n, frames, bins = x.shape
    device = x.device
    draws = torch.rand(3, n, generator=gen, device=device)
    chosen = draws[0] < opts["prob"]
    reverb = chosen & (draws[1] < opts["reverb_prob"])
    noisy = chosen & (draws[2] < opts["noise_prob"])
    filt = smooth_curves(gen, n, bins, opts["tilt_db"], opts["eq_db"], opts["eq_bands"], device)
    filt = DB * (filt + uniform(-opts["gain_db"], opts["gain_db"], (n, 1), gen, device))
    kernels = reverb_kernels(gen, n, opts["rt60"], opts["frame_shift"], device)
    snr = uniform(opts["snr_db"][0], opts["snr_db"][1], (n,), gen, device)
    colour = DB * smooth_curves(gen, n, bins, opts["tilt_db"], opts["eq_db"], opts["eq_bands"], device)
    colour = colour - torch.log(torch.exp(colour).mean(dim=1, keepdim=True))  # unit mean power

    out = x.clone()
    rows = chosen.nonzero().squeeze(1)
    y = x[rows].float() + filt[rows, None, :]
    sub_reverb, sub_noisy = reverb[rows].nonzero().squeeze(1), noisy[rows].nonzero().squeeze(1)
    if len(sub_reverb):
        # Linear convolution along time in the power domain, via FFT; scaled by each crop's max for range.
        r = y[sub_reverb]
        peak = r.amax(dim=(1, 2), keepdim=True)
        size = frames + kernels.shape[1]
        spectrum = torch.fft.rfft(torch.exp(r - peak), n=size, dim=1) \
            * torch.fft.rfft(kernels[rows[sub_reverb]], n=size, dim=1)[:, :, None]
        y[sub_reverb] = torch.log(torch.fft.irfft(spectrum, n=size, dim=1)[:, :frames].clamp_min(1e-20)) + peak
    if len(sub_noisy):
        v = y[sub_noisy]
        which = rows[sub_noisy]
        level = torch.logsumexp(v.flatten(1), dim=1) - math.log(frames * bins)  # log mean power
        # Log-power of noise cells fluctuates like a chi-square; a Gaussian in the log domain is close enough.
        noise = (level - DB * snr[which])[:, None, None] + colour[which, None, :] \
            + 0.5 * torch.randn(len(which), frames, bins, generator=gen, device=device)
        y[sub_noisy] = torch.logaddexp(v, noise)
    out[rows] = y.to(x.dtype)
    return out


class BatchAugmenter:
    """Applies the configured augmentations to every crop group of a batch, on the device.

    The generator is re-seeded from ``(seed, step, rank, group)`` at each call, so
    the draws depend only on the step and resume exactly.
    """

    def __init__(self, specaug: Mapping[str, Any] | None, channel: Mapping[str, Any] | None, seed: int, rank: int = 0):
        self.specaug = merged_options(specaug, SPECAUG_DEFAULTS, "data.specaug")
        self.channel = merged_options(channel, CHANNEL_DEFAULTS, "data.channel")
        self.seed, self.rank = int(seed), int(rank)
        self.generators = {}

    @property
    def active(self) -> bool:
        """Whether any augmentation can apply."""
        return self.specaug["prob"] > 0 or self.channel["prob"] > 0

    def generator(self, device: torch.device, step: int, group: int) -> torch.Generator:
        """The generator of ``device``, seeded for this step, rank and crop group."""
        if device not in self.generators:
            self.generators[device] = torch.Generator(device=device)
        seed = int(np.random.SeedSequence([self.seed, step, self.rank, group]).generate_state(1)[0])
        return self.generators[device].manual_seed(seed)

    @torch.no_grad()
    def __call__(self, crops: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """``{name: (B, n, T, D)}`` -> same shapes, augmented."""
        if not self.active:
            return crops
        out = {}
        for group, (name, batch) in enumerate(crops.items()):
            gen = self.generator(batch.device, step, group)
            x = batch.flatten(0, 1)
            if self.channel["prob"] > 0:
                x = channel_augment(x, gen, self.channel)
            if self.specaug["prob"] > 0:
                x = spec_augment(x, gen, self.specaug)
            out[name] = x.view_as(batch)
        return out
