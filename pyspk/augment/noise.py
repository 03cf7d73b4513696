"""Additive noise: sources (MUSAN files or generated) and SNR-controlled mixing.

SNR convention (Kaldi's ``wav-reverberate --additive-signals``): the speech
power is the mean power of the whole clean utterance; each added noise is
scaled so that speech power over the noise's own mean power, over the samples
where it is added, equals the drawn SNR. Foreground noises follow one another
from the start with ``interval`` seconds of silence between them; background
noises span the whole utterance (looped or cut at a random offset).
"""

import math
import os

import numpy as np
import soundfile as sf

from pyspk.augment.rir import resample

MUSAN_KINDS = ("noise", "music", "speech")


def scale_to_snr(noise, speech_power, snr_db):
    """``noise`` scaled so that speech_power / its mean power = 10^(snr/10)."""
    noise = np.asarray(noise, dtype=np.float64)
    noise_power = float(np.mean(noise**2)) if len(noise) else 0.0
    if noise_power <= 0.0:
        return np.zeros_like(noise)
    return noise * math.sqrt(speech_power * 10.0 ** (-snr_db / 10.0) / noise_power)


def fit_length(noise, length, rng):
    """Loop or cut ``noise`` to ``length`` samples, starting at a random offset."""
    if len(noise) == 0:
        raise ValueError("empty noise signal")
    offset = int(rng.integers(len(noise)))
    idx = (offset + np.arange(length)) % len(noise)
    return noise[idx]


def add_background(signal, noises, snrs, rng):
    """Add each noise over the whole signal at its SNR; returns float64."""
    signal = np.asarray(signal, dtype=np.float64)
    speech_power = float(np.mean(signal**2))
    out = signal.copy()
    for noise, snr in zip(noises, snrs, strict=True):
        out += scale_to_snr(fit_length(noise, len(signal), rng), speech_power, snr)
    return out


def add_foreground(signal, draw_noise, snrs, interval, sample_rate, rng):
    """Add noises one after the other, each at an SNR drawn from ``snrs``.

    ``draw_noise(max_samples)`` returns the next noise (at most that long).
    Returns (mixed signal, list of (start, end, snr) of the added segments).
    """
    signal = np.asarray(signal, dtype=np.float64)
    speech_power = float(np.mean(signal**2))
    out = signal.copy()
    segments = []
    start, gap = 0, round(interval * sample_rate)
    while start < len(signal):
        noise = draw_noise(len(signal) - start)
        if len(noise) == 0:
            break
        snr = float(rng.choice(snrs))
        end = start + len(noise)
        out[start:end] += scale_to_snr(noise, speech_power, snr)
        segments.append((start, end, snr))
        start = end + gap
    return out, segments


def coloured_noise(rng, length, sample_rate):
    """Stationary noise with a 1/f^b spectrum (b in [0, 2]: white to brown) and slow level drift."""
    slope = rng.uniform(0.0, 2.0)
    spectrum = rng.standard_normal(length // 2 + 1) + 1j * rng.standard_normal(length // 2 + 1)
    freqs = np.fft.rfftfreq(length, 1.0 / sample_rate)
    spectrum *= np.maximum(freqs, 20.0) ** (-slope / 2.0)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=length)
    drift_hz = rng.uniform(0.1, 1.0)
    t = np.arange(length) / sample_rate
    noise *= 1.0 + 0.5 * np.sin(2 * np.pi * drift_hz * t + rng.uniform(0, 2 * np.pi))
    return noise / (np.std(noise) + 1e-12)


def synth_music(rng, length, sample_rate):
    """A random piece: chords of harmonic tones on a scale, at a random tempo, with note envelopes."""
    t_beat = 60.0 / rng.uniform(70, 170)
    root = 110.0 * 2 ** rng.uniform(0, 2)
    scale = np.array([0, 2, 4, 5, 7, 9, 11]) if rng.random() < 0.5 else np.array([0, 2, 3, 5, 7, 8, 10])
    n_harm = int(rng.integers(3, 9))
    harm_gain = rng.uniform(0.2, 1.0, n_harm) / np.arange(1, n_harm + 1) ** rng.uniform(0.5, 2.0)
    out = np.zeros(length)
    pos = 0
    while pos < length:
        n_note = round(t_beat * rng.choice([0.5, 1.0, 2.0]) * sample_rate)
        n_note = min(max(n_note, 1), length - pos)
        t = np.arange(n_note) / sample_rate
        degrees = rng.choice(len(scale) * 2, size=int(rng.integers(1, 4)), replace=False)
        semis = scale[degrees % len(scale)] + 12 * (degrees // len(scale))
        f0 = root * 2.0 ** (semis / 12.0)
        harmonics = f0[:, None] * np.arange(1, n_harm + 1)[None, :]
        gains = np.where(harmonics < sample_rate / 2 - 100, harm_gain[None, :], 0.0)
        chord = np.einsum("nh,nht->t", gains, np.sin(2 * np.pi * harmonics[:, :, None] * t[None, None, :]))
        attack = np.minimum(t / 0.02, 1.0)
        chord *= attack * np.exp(-t / rng.uniform(0.2, 1.5))
        out[pos:pos + n_note] += chord
        pos += n_note
    return out / (np.std(out) + 1e-12)


def musan_files(musan_dir, kind):
    """Sorted wav paths of one MUSAN part (``noise``, ``music`` or ``speech``)."""
    if kind not in MUSAN_KINDS:
        raise ValueError(f"unknown MUSAN part '{kind}'")
    root = os.path.join(musan_dir, kind)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such directory (is {musan_dir} the MUSAN directory?)")
    files = []
    for dirpath, _, names in os.walk(root):
        files.extend(os.path.join(dirpath, n) for n in names if n.endswith(".wav"))
    if not files:
        raise FileNotFoundError(f"{root}: no .wav files")
    return sorted(files)


def read_noise_file(path, sample_rate, rng, max_samples=None):
    """Mono float64 samples of a noise file at ``sample_rate``; a random excerpt if longer than max_samples."""
    info = sf.info(path)
    start, frames = 0, info.frames
    if max_samples is not None:
        want = math.ceil(max_samples * info.samplerate / sample_rate)
        if info.frames > want:
            start, frames = int(rng.integers(info.frames - want + 1)), want
    audio, rate = sf.read(path, start=start, frames=frames, dtype="float64", always_2d=True)
    audio = resample(audio[:, 0], rate, sample_rate)
    return audio[:max_samples] if max_samples is not None else audio
