"""Kaldi ``compute-vad`` energy voice activity detection.

Kaldi's compute-vad thresholds column 0 of MFCC features, which is the log
energy of each frame (MFCC's default ``--use-energy=true --raw-energy=true``):
the log of the sum of squares of the frame's samples after dithering and DC
removal, before pre-emphasis and windowing. Fbank features carry no energy
column, so :func:`frame_log_energy` computes exactly that quantity from the
waveform with the fbank conf's framing (frame length/shift, snip-edges,
dither, DC removal, energy floor): the decisions line up one-to-one with the
fbank frames and the thresholds keep the meaning they have in Kaldi recipes.
"""

import numpy as np

from pyspk.features.fbank import KaldiOptionError, Option, read_kaldi_conf

# Kaldi floors the energy at FLT_EPSILON before the log.
_FLT_EPSILON = float(np.finfo(np.float32).eps)
# Frames per block when framing a long waveform, to bound memory.
_FRAMES_PER_BLOCK = 4096

# compute-vad options, with Kaldi's defaults.
VAD_SPEC = {
    "vad-energy-threshold": Option(float, 5.0, "energy_threshold"),
    "vad-energy-mean-scale": Option(float, 0.5, "energy_mean_scale"),
    "vad-frames-context": Option(int, 0, "frames_context"),
    "vad-proportion-threshold": Option(float, 0.6, "proportion_threshold"),
    "omit-unvoiced-utts": Option(bool, False, None),
}


class VadConfig:
    """compute-vad options: a frame is voiced when, within +-``frames_context`` frames,
    at least ``proportion_threshold`` of the frames have log energy above
    ``energy_threshold + energy_mean_scale * mean log energy of the utterance``.
    """

    def __init__(self, values=None, source="<defaults>"):
        values = {**{n: o.default for n, o in VAD_SPEC.items()}, **(values or {})}
        self.source = str(source)
        for name, option in VAD_SPEC.items():
            if option.target:
                setattr(self, option.target, values[name])
        problems = []
        if self.energy_mean_scale < 0:
            problems.append("--vad-energy-mean-scale must be >= 0")
        if self.frames_context < 0:
            problems.append("--vad-frames-context must be >= 0")
        if not 0.0 < self.proportion_threshold < 1.0:
            problems.append("--vad-proportion-threshold must be in (0, 1)")
        if problems:
            raise KaldiOptionError(f"{self.source}: " + "; ".join(problems))

    @classmethod
    def from_file(cls, path):
        return cls(read_kaldi_conf(path, VAD_SPEC), source=path)


def _frame_starts(num_frames, config):
    """First sample of each frame (Kaldi's FirstSampleOfFrame); may be negative without snip-edges."""
    starts = np.arange(num_frames, dtype=np.int64) * config.window_shift
    if not config.snip_edges:
        starts += config.window_shift // 2 - config.window_size // 2
    return starts


def frame_log_energy(wave, config, seed=0):
    """Raw log energy per frame of a 1-D int16-range waveform, framed as ``config`` (FbankConfig).

    Samples outside the waveform (``--snip-edges=false``) are mirrored as
    Kaldi does. Dither, when the config has it, is seeded so that reruns agree.
    """
    wave = np.asarray(wave, dtype=np.float64)
    num_samples = wave.shape[0]
    num_frames = config.num_frames(num_samples)
    starts = _frame_starts(num_frames, config)
    offsets = np.arange(config.window_size, dtype=np.int64)
    rng = np.random.default_rng(seed)
    energy = np.empty(num_frames, dtype=np.float64)
    for first in range(0, num_frames, _FRAMES_PER_BLOCK):
        index = starts[first:first + _FRAMES_PER_BLOCK, None] + offsets
        # Mirror out-of-range indices: period 2n, the upper half read backwards.
        index %= 2 * num_samples
        index = np.where(index >= num_samples, 2 * num_samples - 1 - index, index)
        frames = wave[index]
        if config.dither > 0:
            frames += config.dither * rng.standard_normal(frames.shape)
        if config.remove_dc_offset:
            frames -= frames.mean(axis=1, keepdims=True)
        energy[first:first + len(frames)] = np.einsum("ij,ij->i", frames, frames)
    log_energy = np.log(np.maximum(energy, _FLT_EPSILON))
    if config.energy_floor > 0:
        log_energy = np.maximum(log_energy, np.log(config.energy_floor))
    return log_energy.astype(np.float32)


def compute_vad(log_energy, config):
    """Kaldi's ComputeVadEnergy: 0/1 float32 decision per frame from per-frame log energy."""
    log_energy = np.asarray(log_energy, dtype=np.float64)
    num_frames = log_energy.shape[0]
    if num_frames == 0:
        return np.zeros(0, dtype=np.float32)
    threshold = config.energy_threshold
    if config.energy_mean_scale != 0:
        threshold += config.energy_mean_scale * log_energy.mean()
    above = np.concatenate([[0], np.cumsum(log_energy > threshold)])
    context = config.frames_context
    frames = np.arange(num_frames)
    lo = np.maximum(frames - context, 0)
    hi = np.minimum(frames + context, num_frames - 1) + 1
    num_above = above[hi] - above[lo]
    return (num_above >= (hi - lo) * config.proportion_threshold).astype(np.float32)
