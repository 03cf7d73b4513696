"""Room impulse responses: RIRS_NOISES list files, a shoebox simulator, reverberation.

The simulator is used when the RIRS_NOISES corpus (OpenSLR 28) is not on disk.
It combines an image-source model of a rectangular room (exact early
reflections, delays and 1/r attenuation) with a statistical late tail
(Gaussian noise decaying by 60 dB over RT60, low-pass coloured so highs die
first), matched in level where the two meet. Wall absorption follows from the
drawn RT60 by Sabine's formula, so rooms are physically consistent.
"""

import math
import os

import numpy as np
import soundfile as sf

from pyspk.data.datadir import DataDirError

SPEED_OF_SOUND = 343.0

# Kaldi's voxceleb/sre recipes reverberate with the small and medium simulated
# rooms, each chosen with probability 0.5.
RIR_SETS = {
    "smallroom": "simulated_rirs/smallroom/rir_list",
    "mediumroom": "simulated_rirs/mediumroom/rir_list",
    "largeroom": "simulated_rirs/largeroom/rir_list",
    "real": "real_rirs_isotropic_noises/rir_list",
}


def read_rir_list(rir_dir, set_name):
    """Paths of the RIRs of one RIRS_NOISES set (``--rir-id X --room-id Y path`` lines).

    Paths in the lists start with ``RIRS_NOISES/``; they are resolved against
    ``rir_dir`` itself so the corpus may live under any name.
    """
    if set_name not in RIR_SETS:
        raise ValueError(f"unknown RIR set '{set_name}'; known: {', '.join(RIR_SETS)}")
    list_path = os.path.join(rir_dir, RIR_SETS[set_name])
    if not os.path.isfile(list_path):
        raise DataDirError(list_path, 0, f"no such RIR list (is {rir_dir} the RIRS_NOISES directory?)")
    paths = []
    with open(list_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) % 2 != 1 or any(not flag.startswith("--") for flag in fields[:-1:2]):
                raise DataDirError(list_path, lineno, "expected '--rir-id ID --room-id ROOM path'")
            rel = fields[-1]
            rel = rel.split("/", 1)[1] if rel.startswith("RIRS_NOISES/") else rel
            paths.append(os.path.join(rir_dir, rel))
    if not paths:
        raise DataDirError(list_path, 0, "empty RIR list")
    return paths


def resample(signal, from_rate, to_rate):
    if from_rate == to_rate:
        return signal
    from scipy.signal import resample_poly  # slow to import; only needed for mismatched rates

    g = math.gcd(int(from_rate), int(to_rate))
    return resample_poly(signal, to_rate // g, from_rate // g).astype(signal.dtype, copy=False)


def read_rir(path, sample_rate):
    """First channel of an RIR file at ``sample_rate``, scaled to unit energy."""
    rir, rate = sf.read(path, dtype="float32", always_2d=True)
    rir = resample(rir[:, 0], rate, sample_rate)
    energy = float(np.sum(rir.astype(np.float64) ** 2))
    if energy <= 0:
        raise ValueError(f"{path}: silent RIR")
    return (rir / math.sqrt(energy)).astype(np.float32)


def _image_source_taps(room, source, mic, beta, max_order, sample_rate, length):
    """Early reflections of a shoebox room as an impulse response of ``length`` samples."""
    orders = np.arange(-max_order, max_order + 1)
    # Per axis: image coordinate and wall-hit count for n (room repetitions) and q (mirror).
    coords, hits = [], []
    for axis in range(3):
        n = orders[:, None]
        q = np.array([0, 1])[None, :]
        coords.append((2 * n * room[axis] + (1 - 2 * q) * source[axis] - mic[axis]).ravel())
        hits.append((np.abs(n - q) + np.abs(n)).ravel())
    dx, dy, dz = np.meshgrid(*coords, indexing="ij")
    hx, hy, hz = np.meshgrid(*hits, indexing="ij")
    dist = np.sqrt(dx**2 + dy**2 + dz**2).ravel()
    gain = (beta ** (hx + hy + hz)).ravel() / (4 * np.pi * np.maximum(dist, 0.1))
    delay = dist / SPEED_OF_SOUND * sample_rate
    keep = delay < length - 1
    delay, gain = delay[keep], gain[keep]
    # Fractional delays split linearly over the two neighbouring samples.
    lower = np.floor(delay).astype(np.int64)
    frac = delay - lower
    taps = np.zeros(length)
    np.add.at(taps, lower, gain * (1 - frac))
    np.add.at(taps, lower + 1, gain * frac)
    return taps


def simulate_rir(rng, sample_rate=16000, rt60_range=(0.2, 1.0), max_order=4):
    """A random room impulse response (float32, unit energy) and its RT60 in seconds."""
    rt60 = float(rng.uniform(*rt60_range))
    room = rng.uniform([3.0, 2.5, 2.4], [10.0, 8.0, 4.0])
    margin = 0.5
    source = rng.uniform(margin, room - margin)
    mic = rng.uniform(margin, room - margin)
    volume = float(np.prod(room))
    surface = 2.0 * (room[0] * room[1] + room[0] * room[2] + room[1] * room[2])
    absorption = float(np.clip(0.161 * volume / (surface * rt60), 0.02, 0.99))
    beta = math.sqrt(1.0 - absorption)

    length = int((rt60 + 0.05) * sample_rate)
    early = _image_source_taps(room, source, mic, beta, max_order, sample_rate, length)

    # Late tail from where the image model thins out: beyond max_order
    # reflections across the smallest dimension, images are missing.
    direct = int(np.linalg.norm(source - mic) / SPEED_OF_SOUND * sample_rate)
    start = min(direct + int(max_order * room.min() / SPEED_OF_SOUND * sample_rate), length - 1)
    t = np.arange(length) / sample_rate
    decay = np.exp(-6.9078 * (t - t[start]) / rt60)
    cutoff = rng.uniform(2000.0, 7000.0)  # wall/air absorption: highs decay faster
    lowpass = 1.0 / np.sqrt(1.0 + (np.fft.rfftfreq(length, 1.0 / sample_rate) / cutoff) ** 2)
    tail = np.fft.irfft(np.fft.rfft(rng.standard_normal(length)) * lowpass, n=length) * decay
    window = max(int(0.01 * sample_rate), 1)
    lo = max(start - window, direct + 1)
    early_level = math.sqrt(np.mean(early[lo:start] ** 2)) if start > lo else 0.0
    tail_level = math.sqrt(np.mean(tail[start:start + window] ** 2)) + 1e-12
    tail *= early_level / tail_level
    rir = np.where(np.arange(length) < start, early, early + tail)
    rir /= math.sqrt(np.sum(rir**2))
    return rir.astype(np.float32), rt60


def estimate_rt60(rir, sample_rate):
    """RT60 from Schroeder's energy decay curve (T30: line fit between -5 and -35 dB)."""
    energy = np.cumsum((rir.astype(np.float64) ** 2)[::-1])[::-1]
    edc = 10 * np.log10(energy / energy[0] + 1e-300)
    i5 = int(np.argmax(edc <= -5))
    i35 = int(np.argmax(edc <= -35))
    t = np.arange(len(rir)) / sample_rate
    slope = np.polyfit(t[i5:i35], edc[i5:i35], 1)[0]
    return -60.0 / slope


def reverberate(signal, rir):
    """Convolve as Kaldi's ``wav-reverberate --shift-output --normalize-output``.

    The output is aligned on the direct path (the RIR's peak), keeps the input
    length, and has the input's power.
    """
    signal = np.asarray(signal, dtype=np.float64)
    shift = int(np.argmax(np.abs(rir)))
    n_fft = 1 << (len(signal) + len(rir) - 2).bit_length()
    out = np.fft.irfft(np.fft.rfft(signal, n_fft) * np.fft.rfft(rir.astype(np.float64), n_fft), n_fft)
    out = out[shift:shift + len(signal)]
    power_in = np.mean(signal**2)
    power_out = np.mean(out**2)
    if power_out > 0:
        out *= math.sqrt(power_in / power_out)
    return out
