"""Kaldi ``compute-fbank-feats`` in torch: batched, on any device, same options as :class:`FbankConfig`.

Follows Kaldi's feature-window.cc, feature-fbank.cc and mel-computations.cc:
frames of ``window_size`` samples every ``window_shift`` (with snip-edges
false, frames centred on ``shift * i + shift / 2`` and the waveform mirrored
at both ends), then per frame: dither (Gaussian noise times --dither), DC
offset removal, raw log energy, pre-emphasis, window function, zero padding
to the FFT size, power (or magnitude) spectrum, Kaldi's triangular mel banks
(mel = 1127 ln(1 + f / 700)), log with a floor of FLT_EPSILON, and the
optional energy column. Features agree with kaldi-native-fbank to float32
rounding (max abs difference under 2e-3 on real speech; a mel bin some 25
nats below its frame's loudest, as in clean synthetic tones, is at the limit
of float32 FFTs and may differ by 1e-2); dither draws different noise, so
only its statistics agree.

Waveforms are float in int16 range, as :func:`pyspk.features.fbank.compute_fbank`
takes them. Nothing here leaves torch, so the features can be computed on the
training device.
"""

import math

import numpy as np
import torch

from pyspk.features.fbank import FbankConfig, KaldiOptionError

FLT_EPSILON = torch.finfo(torch.float32).eps

WINDOW_TYPES = ("hamming", "hanning", "povey", "rectangular", "sine", "blackman")


def kaldi_mel(freq: float | torch.Tensor) -> torch.Tensor:
    """Kaldi's mel scale, 1127 ln(1 + f / 700), of a frequency or a float64 tensor of them."""
    return 1127.0 * torch.log1p(torch.as_tensor(freq, dtype=torch.float64) / 700.0)


def window_function(window_type: str, length: int, blackman_coeff: float = 0.42,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Kaldi's FeatureWindowFunction of ``length`` samples."""
    if window_type not in WINDOW_TYPES:
        raise KaldiOptionError(f"--window-type={window_type} is not one of {', '.join(WINDOW_TYPES)}")
    i = torch.arange(length, dtype=torch.float64)
    a = 2 * math.pi / (length - 1) if length > 1 else 0.0
    if window_type == "hanning":
        window = 0.5 - 0.5 * torch.cos(a * i)
    elif window_type == "sine":
        window = torch.sin(0.5 * a * i)
    elif window_type == "hamming":
        window = 0.54 - 0.46 * torch.cos(a * i)
    elif window_type == "povey":  # like hamming but goes to zero at the edges
        window = (0.5 - 0.5 * torch.cos(a * i)).pow(0.85)
    elif window_type == "rectangular":
        window = torch.ones(length, dtype=torch.float64)
    else:
        window = blackman_coeff - 0.5 * torch.cos(a * i) + (0.5 - blackman_coeff) * torch.cos(2 * a * i)
    return window.to(dtype)


def mel_banks(num_bins: int, fft_size: int, sample_rate: float, low_freq: float, high_freq: float,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Kaldi's MelBanks as a ``(fft_size // 2 + 1, num_bins)`` matrix (power spectrum @ matrix).

    ``high_freq`` <= 0 is an offset from the Nyquist frequency. Bin ``i``
    is the triangle, in mel, from mel point ``i`` to ``i + 2`` of
    ``num_bins + 2`` equally spaced points from ``low_freq`` to ``high_freq``;
    as in Kaldi the Nyquist FFT bin gets no weight.
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0:
        high_freq += nyquist
    if num_bins < 3:
        raise KaldiOptionError(f"--num-mel-bins={num_bins}: must be at least 3")
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise KaldiOptionError(f"--low-freq={low_freq:g} and --high-freq={high_freq:g} must satisfy "
                               f"0 <= low < high <= Nyquist ({nyquist:g} Hz)")
    num_fft_bins = fft_size // 2
    mel_low, mel_high = kaldi_mel(low_freq), kaldi_mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    fft_mel = kaldi_mel(torch.arange(num_fft_bins, dtype=torch.float64) * (sample_rate / fft_size))
    left = mel_low + delta * torch.arange(num_bins, dtype=torch.float64)
    center, right = left + delta, left + 2 * delta
    mel = fft_mel[:, None]
    rising = (mel - left) / (center - left)
    falling = (right - mel) / (right - center)
    weights = torch.where(mel <= center, rising, falling)
    weights = torch.where((mel > left) & (mel < right), weights, torch.zeros_like(weights))
    # the Nyquist bin of the rfft output gets no weight
    return torch.cat([weights, weights.new_zeros(1, num_bins)]).to(dtype)


class TorchFbank(torch.nn.Module):
    """Kaldi fbank of a batch of waveforms; ``.to(device)`` moves the window and mel banks.

    ``forward(waves, lengths=None, generator=None)`` takes ``(batch, samples)``
    waveforms (int16 range; utterance ``b`` is ``waves[b, :lengths[b]]``,
    the rest padding) and returns ``(feats, num_frames)``: ``feats`` is
    ``(batch, max_frames, dim)`` with zeros past each utterance's
    ``num_frames``; ``generator`` draws the dither noise.
    """

    def __init__(self, config: FbankConfig, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        values = config.values
        if values["debug-mel"]:
            raise KaldiOptionError(f"{config.source}: --debug-mel=true (printing the mel banks) is not supported "
                                   "by the torch fbank; use the kaldi-native backend")
        self.window_size, self.window_shift = config.window_size, config.window_shift
        self.snip_edges = config.snip_edges
        self.dither = config.dither
        self.remove_dc_offset = config.remove_dc_offset
        self.preemph_coeff = values["preemphasis-coefficient"]
        self.use_energy, self.raw_energy = values["use-energy"], values["raw-energy"]
        self.energy_floor = config.energy_floor
        self.htk_compat = values["htk-compat"]
        self.use_log_fbank, self.use_power = values["use-log-fbank"], values["use-power"]
        self.subtract_mean = config.subtract_mean
        self.fft_size = self.window_size
        if values["round-to-power-of-two"]:
            self.fft_size = 1 << (self.window_size - 1).bit_length()
        self.num_bins = values["num-mel-bins"]
        self.dim = self.num_bins + int(self.use_energy)
        self.register_buffer("window", window_function(values["window-type"], self.window_size,
                                                       values["blackman-coeff"], dtype), persistent=False)
        self.register_buffer("banks", mel_banks(self.num_bins, self.fft_size, config.sample_rate,
                                                values["low-freq"], values["high-freq"], dtype), persistent=False)

    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Kaldi's NumFrames for each of ``lengths`` (a tensor of sample counts)."""
        if self.snip_edges:
            frames = 1 + torch.div(lengths - self.window_size, self.window_shift, rounding_mode="floor")
            return torch.where(lengths < self.window_size, torch.zeros_like(frames), frames)
        return torch.div(lengths + self.window_shift // 2, self.window_shift, rounding_mode="floor")

    def _frames(self, waves: torch.Tensor, lengths: torch.Tensor, max_frames: int) -> torch.Tensor:
        """``(batch, max_frames, window_size)`` frames as Kaldi's ExtractWindow cuts them."""
        size, shift = self.window_size, self.window_shift
        span = (max_frames - 1) * shift + size
        if self.snip_edges:
            if waves.shape[1] < span:  # only padding frames reach past the end
                waves = torch.nn.functional.pad(waves, (0, span - waves.shape[1]))
            return waves[:, :span].unfold(1, size, shift)
        # Frames centred on shift * i + shift // 2; samples outside [0, n) are
        # mirrored (Kaldi: -1 -> 0, n -> n - 1), per utterance's own length n.
        first = shift // 2 - size // 2
        n = lengths.clamp(min=1)[:, None]
        index = torch.arange(first, first + span, device=waves.device)[None, :].expand(waves.shape[0], -1)
        index = torch.remainder(index, 2 * n)
        index = torch.where(index >= n, 2 * n - 1 - index, index)
        return waves.gather(1, index).unfold(1, size, shift)

    def _process_frames(self, frames: torch.Tensor,
                        generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Dither, DC removal, pre-emphasis and window (Kaldi's ProcessWindow); also the log energy when used."""
        if self.dither != 0:
            noise = torch.randn(frames.shape, generator=generator, device=frames.device, dtype=frames.dtype)
            frames = frames + self.dither * noise
        if self.remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        log_energy = None
        if self.use_energy and self.raw_energy:
            log_energy = frames.pow(2).sum(dim=-1).clamp(min=FLT_EPSILON).log()
        if self.preemph_coeff != 0:
            frames = torch.cat([frames[..., :1] * (1 - self.preemph_coeff),
                                frames[..., 1:] - self.preemph_coeff * frames[..., :-1]], dim=-1)
        frames = frames * self.window
        if self.use_energy and not self.raw_energy:
            log_energy = frames.pow(2).sum(dim=-1).clamp(min=FLT_EPSILON).log()
        return frames, log_energy

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if waves.dim() != 2:
            raise ValueError(f"expected (batch, samples) waveforms, got shape {tuple(waves.shape)}")
        waves = waves.to(self.window.dtype)
        batch, num_samples = waves.shape
        if lengths is None:
            lengths = torch.full((batch,), num_samples, dtype=torch.long, device=waves.device)
        lengths = lengths.to(device=waves.device, dtype=torch.long)
        if lengths.shape != (batch,) or bool((lengths > num_samples).any()) or bool((lengths < 0).any()):
            raise ValueError(f"lengths must be {batch} sample counts in [0, {num_samples}]")
        num_frames = self.num_frames(lengths)
        max_frames = int(num_frames.max()) if batch else 0
        if max_frames == 0:
            return waves.new_zeros(batch, 0, self.dim), num_frames

        frames, log_energy = self._process_frames(self._frames(waves, lengths, max_frames), generator)
        spectrum = torch.view_as_real(torch.fft.rfft(frames, n=self.fft_size)).pow(2).sum(dim=-1)
        if not self.use_power:
            spectrum = spectrum.sqrt()
        feats = spectrum @ self.banks
        if self.use_log_fbank:
            feats = feats.clamp(min=FLT_EPSILON).log()
        if self.use_energy:
            if self.energy_floor > 0:
                log_energy = log_energy.clamp(min=math.log(self.energy_floor))
            columns = (feats, log_energy[..., None]) if self.htk_compat else (log_energy[..., None], feats)
            feats = torch.cat(columns, dim=-1)

        valid = (torch.arange(max_frames, device=waves.device)[None, :] < num_frames[:, None])[..., None]
        feats = feats * valid
        if self.subtract_mean:
            mean = feats.sum(dim=1, keepdim=True) / num_frames.clamp(min=1)[:, None, None]
            feats = (feats - mean) * valid
        return feats, num_frames


def compute_fbank_torch(wave: np.ndarray, fbank: TorchFbank) -> np.ndarray:
    """Features ``(num_frames, dim)`` float32 numpy of a 1-D int16-range numpy waveform, as ``compute_fbank``.

    ``fbank`` is a :class:`TorchFbank` on the device to compute on.
    """
    waves = torch.from_numpy(wave).to(device=fbank.window.device, dtype=fbank.window.dtype)[None]
    with torch.no_grad():
        feats, _ = fbank(waves)
    return feats[0].to(device="cpu", dtype=torch.float32).numpy()
