"""A simulated telephone channel for speech at any rate: handset, 8 kHz, level, line noise, a narrowband codec.

One channel is drawn per utterance (:func:`draw_channel`, seeded from the
utterance id by :func:`utterance_rng`, so a data dir is reproducible) and
applied in this order (:func:`apply_channel`):

1. a random handset response (band edges, tilt, one resonance) band-limited
   to the telephone band and resampled to 8 kHz, in one FFT of the whole
   signal: the per-utterance pipes then need no scipy import (its start-up
   costs more than the filtering);
2. a random active speech level (dB below full scale);
3. line noise: mains hum (50 or 60 Hz and harmonics) and white hiss in a
   random share, at a random SNR below the speech level;
4. a random narrowband codec of those asked for: G.711 mu-law and A-law in
   numpy (Sun's reference g711.c: decoding bit-exact with sox and ffmpeg,
   encoding with sox on the laws' 14/13-bit grids), the others through sox or
   ffmpeg when they provide them (:func:`available_codecs`).

Samples are float in the int16 range, as :func:`pyspk.features.audio.read_audio`
returns them. The channel can also return to the input rate (``out_rate``),
for on-the-fly augmentation of training crops (``data.telephone``, only the
numpy codecs: a subprocess per crop is too slow).
"""

import functools
import hashlib
import math
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

TELEPHONE_RATE = 8000
NUMPY_CODECS = ("mulaw", "alaw")
RAW_SOX = ["-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1", "-"]
RAW_FFMPEG = ["-f", "s16le", "-ar", "8000", "-ac", "1"]
FFMPEG = ["ffmpeg", "-nostdin", "-loglevel", "error"]
# name: (tool, what the tool must list, the random setting's choices, encode(setting), decode, delay in samples
# (measured here, trimmed so that the output lines up with the input)). Encoders read 16-bit mono 8 kHz raw audio
# on stdin; decoders write it on stdout.
EXTERNAL_CODECS = {
    "gsm": ("sox", "gsm", [None], lambda _: ["sox", *RAW_SOX, "-t", "gsm", "-"],
            ["sox", "-t", "gsm", "-", *RAW_SOX], 0),
    # sox -C: AMR-NB mode 0-7, 4.75 to 12.2 kbit/s.
    "amr-nb": ("sox", "amr-nb", list(range(8)), lambda mode: ["sox", *RAW_SOX, "-t", "amr-nb", "-C", str(mode), "-"],
               ["sox", "-t", "amr-nb", "-", *RAW_SOX], 40),
    "opus": ("ffmpeg", "libopus", ["6k", "8k", "12k", "16k"],
             lambda rate: [*FFMPEG, *RAW_FFMPEG, "-i", "-", "-c:a", "libopus", "-application", "voip", "-b:a", rate,
                           "-f", "ogg", "-"],
             [*FFMPEG, "-f", "ogg", "-i", "-", *RAW_FFMPEG, "-"], 1),
    "speex": ("ffmpeg", "libspeex", [2, 4, 6, 8],
              lambda q: [*FFMPEG, *RAW_FFMPEG, "-i", "-", "-c:a", "libspeex", "-cbr_quality", str(q), "-f", "ogg", "-"],
              [*FFMPEG, "-f", "ogg", "-i", "-", *RAW_FFMPEG, "-"], 80),
    "codec2": ("ffmpeg", "libcodec2", ["3200", "2400", "1600"],
               lambda mode: [*FFMPEG, *RAW_FFMPEG, "-i", "-", "-c:a", "libcodec2", "-mode", mode, "-f", "codec2", "-"],
               [*FFMPEG, "-f", "codec2", "-i", "-", *RAW_FFMPEG, "-"], 0),
    "g726": ("ffmpeg", "g726", ["16k", "24k", "32k", "40k"],
             lambda rate: [*FFMPEG, *RAW_FFMPEG, "-i", "-", "-c:a", "g726", "-b:a", rate, "-f", "wav", "-"],
             [*FFMPEG, "-f", "wav", "-i", "-", *RAW_FFMPEG, "-"], 0),
}
CODECS = NUMPY_CODECS + tuple(EXTERNAL_CODECS)
# The telephone codecs: landline G.711 and the two cellular ones.
DEFAULT_CODECS = ("mulaw", "alaw", "gsm", "amr-nb")

# The random ranges of a channel (uniform in each).
LOW_HZ = (250.0, 400.0)          # handset high-pass edge; order 4: G.712's >= 20 dB below 100 Hz or so
HIGH_HZ = (3000.0, 3500.0)       # low-pass edge; order 12: >= 14 dB down at 4 kHz, as G.712 asks
LOW_ORDER, HIGH_ORDER = 4, 12
TILT_DB_PER_OCTAVE = (-2.0, 2.0)
RESONANCE_HZ = (800.0, 3000.0)
RESONANCE_DB = (0.0, 8.0)
RESONANCE_Q = (1.0, 3.0)
LEVEL_DB = (-32.0, -18.0)        # active speech level below full scale (ITU's nominal -26 dBov +- 6 or so)
SNR_DB = (20.0, 45.0)            # speech over line noise
MAINS_HZ = (50.0, 60.0)
HUM_HARMONICS = 5
FULL_SCALE = 32768.0
LEVEL_FRAME_SEC = 0.02

# The per-crop augmentation of raw-audio training crops (data.telephone, declared in pyspk.train.wav_data).
TELEPHONE_DEFAULTS = {"prob": 0.0, "codecs": list(NUMPY_CODECS)}


class CodecError(RuntimeError):
    """A codec that is unknown, missing here, or failed."""


def utterance_rng(seed: int, utt: str) -> np.random.Generator:
    """The generator of one utterance's channel: from the seed and the id alone (Python's hash is salted)."""
    digest = int.from_bytes(hashlib.sha256(utt.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([int(seed), digest])


@functools.cache
def _tool_listing(tool: str) -> str:
    """What ``sox -h`` or ``ffmpeg -encoders`` lists ('' without the tool)."""
    if shutil.which(tool) is None:
        return ""
    args = ["sox", "-h"] if tool == "sox" else [*FFMPEG, "-hide_banner", "-encoders"]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    return proc.stdout


def available_codecs() -> list[str]:
    """The codecs usable here: the numpy ones, and those whose tool lists their format or encoder."""
    out = list(NUMPY_CODECS)
    for name, (tool, needs, *_) in EXTERNAL_CODECS.items():
        listing = _tool_listing(tool)
        words = listing.split("AUDIO FILE FORMATS:", 1)[-1].split("\n", 1)[0].split() if tool == "sox" \
            else [line.split()[1] for line in listing.splitlines() if len(line.split()) > 1]
        if needs in words:
            out.append(name)
    return out


def known_codecs(names: Iterable[str]) -> list[str]:
    """``names`` as a list, each a known codec (else CodecError naming it)."""
    names = list(names)
    if not names:
        raise CodecError("no codec given")
    unknown = [n for n in names if n not in CODECS]
    if unknown:
        raise CodecError(f"unknown codec '{unknown[0]}'; known: {', '.join(CODECS)}")
    return names


def check_codecs(names: Iterable[str]) -> list[str]:
    """``names`` as a list, each known and available here (else CodecError saying which and why)."""
    names = known_codecs(names)
    here = available_codecs()
    for name in names:
        if name not in here:
            tool, needs = EXTERNAL_CODECS[name][:2]
            listing = "sox -h" if tool == "sox" else "ffmpeg -encoders"
            raise CodecError(f"codec '{name}' needs {tool} with '{needs}' ({listing} does not list it here); "
                             f"available here: {', '.join(here)}")
    return names


def draw_channel(rng: np.random.Generator, codecs: Iterable[str]) -> dict[str, Any]:
    """One random channel: every draw made whatever the codec, so the streams stay aligned."""
    codecs = list(codecs)
    codec = codecs[int(rng.integers(len(codecs)))]
    choices = EXTERNAL_CODECS[codec][2] if codec in EXTERNAL_CODECS else [None]
    return {"low_hz": rng.uniform(*LOW_HZ), "high_hz": rng.uniform(*HIGH_HZ),
            "tilt_db": rng.uniform(*TILT_DB_PER_OCTAVE), "resonance_hz": rng.uniform(*RESONANCE_HZ),
            "resonance_db": rng.uniform(*RESONANCE_DB), "resonance_q": rng.uniform(*RESONANCE_Q),
            "level_db": rng.uniform(*LEVEL_DB), "snr_db": rng.uniform(*SNR_DB),
            "hum_share": rng.uniform(), "mains_hz": MAINS_HZ[int(rng.integers(2))],
            "codec": codec, "setting": choices[int(rng.integers(len(choices)))],
            "noise_seed": int(rng.integers(2**63))}


def handset_response(freqs: np.ndarray, channel: Mapping[str, Any]) -> np.ndarray:
    """The magnitude response at ``freqs`` (Hz): Butterworth-shaped band edges, a tilt and a resonance."""
    f = np.maximum(freqs, 1.0)
    width = channel["resonance_hz"] / channel["resonance_q"]
    gain_db = channel["tilt_db"] * np.log2(f / 1000.0) \
        + channel["resonance_db"] / (1.0 + ((f - channel["resonance_hz"]) / width) ** 2)
    band = 1.0 / np.sqrt((1.0 + (channel["low_hz"] / f) ** (2 * LOW_ORDER))
                         * (1.0 + (f / channel["high_hz"]) ** (2 * HIGH_ORDER)))
    return np.where(freqs > 0, band * 10.0 ** (gain_db / 20.0), 0.0)


def fft_resample(x: np.ndarray, rate: int, out_rate: int, response=None) -> np.ndarray:
    """``x`` at ``out_rate`` by FFT, its spectrum first multiplied by ``response(freqs in Hz)`` if given."""
    pad = rate // 10  # room for the filter's ringing, so that it does not wrap round onto the start
    size = len(x) + pad
    spectrum = np.fft.rfft(np.asarray(x, np.float64), size)
    if response is not None:
        spectrum *= response(np.fft.rfftfreq(size, 1.0 / rate))
    out_size = round(size * out_rate / rate)
    bins = out_size // 2 + 1
    spectrum = spectrum[:bins] if len(spectrum) >= bins else np.pad(spectrum, (0, bins - len(spectrum)))
    return np.fft.irfft(spectrum, out_size)[:round(len(x) * out_rate / rate)] * (out_size / size)


def band_limit(x: np.ndarray, rate: int, channel: Mapping[str, Any]) -> np.ndarray:
    """``x`` through the handset response at 8 kHz, nothing kept from 4 kHz up."""
    return fft_resample(x, rate, TELEPHONE_RATE,
                        lambda freqs: handset_response(freqs, channel) * (freqs < TELEPHONE_RATE / 2))


def active_power(x: np.ndarray, rate: int) -> float:
    """Mean power of the louder half of 20 ms frames: the speech level, pauses left out."""
    frame = max(int(LEVEL_FRAME_SEC * rate), 1)
    frames = x[:len(x) // frame * frame].reshape(-1, frame) if len(x) >= frame else x[None, :]
    power = np.sort(np.mean(np.square(frames), axis=1))
    return float(np.mean(power[len(power) // 2:]))


def line_noise(length: int, rate: int, channel: Mapping[str, Any]) -> np.ndarray:
    """Unit-power noise: hum (mains and harmonics, falling 1/k) and white hiss in the drawn share."""
    rng = np.random.default_rng(channel["noise_seed"])
    t = np.arange(rate // math.gcd(rate, int(channel["mains_hz"]))) / rate  # one period of the hum, then repeated
    phases = rng.uniform(0, 2 * np.pi, HUM_HARMONICS)
    hum = sum(np.sin(2 * np.pi * k * channel["mains_hz"] * t + phases[k - 1]) / k
              for k in range(1, HUM_HARMONICS + 1))
    hum = np.resize(hum / np.sqrt(np.mean(np.square(hum))), length)
    hiss = rng.standard_normal(length)
    return np.sqrt(channel["hum_share"]) * hum + np.sqrt(1.0 - channel["hum_share"]) * hiss


def _segments(pcm: np.ndarray, table: np.ndarray) -> np.ndarray:
    return np.searchsorted(table, pcm, side="left")  # the reference's search(): first entry >= value


MULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def mulaw_encode(x: np.ndarray) -> np.ndarray:
    """G.711 mu-law bytes of int16-range samples (Sun's g711.c, as sox and ffmpeg)."""
    pcm = np.clip(np.round(x), -32768, 32767).astype(np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    pcm = np.minimum(np.abs(pcm), 8159) + (0x84 >> 2)
    seg = _segments(pcm, MULAW_SEG_END)
    code = (np.minimum(seg, 7) << 4) | ((pcm >> (np.minimum(seg, 7) + 1)) & 0xF)
    return (np.where(seg >= 8, 0x7F, code) ^ mask).astype(np.uint8)


def mulaw_decode(code: np.ndarray) -> np.ndarray:
    u = ~code.astype(np.int32) & 0xFF
    t = (((u & 0xF) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.float32)


def alaw_encode(x: np.ndarray) -> np.ndarray:
    """G.711 A-law bytes of int16-range samples (Sun's g711.c, as sox and ffmpeg)."""
    pcm = np.clip(np.round(x), -32768, 32767).astype(np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    pcm = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = _segments(pcm, ALAW_SEG_END)
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    code = (np.minimum(seg, 7) << 4) | ((pcm >> shift) & 0xF)
    return (np.where(seg >= 8, 0x7F, code) ^ mask).astype(np.uint8)


def alaw_decode(code: np.ndarray) -> np.ndarray:
    a = code.astype(np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = ((a & 0xF) << 4) + np.where(seg == 0, 8, 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.float32)


def _run(args: list[str], data: bytes, codec: str) -> bytes:
    try:
        proc = subprocess.run(args, input=data, capture_output=True, check=False)
    except OSError as e:
        raise CodecError(f"codec '{codec}': cannot run {args[0]}: {e}") from None
    if proc.returncode != 0 or not proc.stdout:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise CodecError(f"codec '{codec}': '{' '.join(args)}' failed (exit {proc.returncode})"
                         + (f": {detail[-1]}" if detail else ""))
    return proc.stdout


def codec_round_trip(x: np.ndarray, codec: str, setting: Any = None) -> np.ndarray:
    """8 kHz int16-range ``x`` encoded and decoded by ``codec``; the length kept (codecs pad whole frames)."""
    if codec == "mulaw":
        return mulaw_decode(mulaw_encode(x))
    if codec == "alaw":
        return alaw_decode(alaw_encode(x))
    if codec not in EXTERNAL_CODECS:
        raise CodecError(f"unknown codec '{codec}'; known: {', '.join(CODECS)}")
    _, _, _, encode, decode, delay = EXTERNAL_CODECS[codec]
    pcm = np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()
    decoded = np.frombuffer(_run(decode, _run(encode(setting), pcm, codec), codec), "<i2")[delay:]
    out = np.zeros(len(x), np.float32)
    out[:min(len(x), len(decoded))] = decoded[:len(x)]
    return out


def apply_channel(x: np.ndarray, rate: int, channel: Mapping[str, Any], out_rate: int = TELEPHONE_RATE) -> np.ndarray:
    """``x`` (int16 range, at ``rate``) through ``channel`` (:func:`draw_channel`): float32 at ``out_rate``."""
    y = band_limit(x, rate, channel)
    level = FULL_SCALE * 10.0 ** (channel["level_db"] / 20.0)
    power = active_power(y, TELEPHONE_RATE)
    if power > 0:
        y *= level / np.sqrt(power)
    y += level * 10.0 ** (-channel["snr_db"] / 20.0) * line_noise(len(y), TELEPHONE_RATE, channel)
    y = codec_round_trip(y, channel["codec"], channel["setting"])
    if out_rate != TELEPHONE_RATE:
        y = fft_resample(y, TELEPHONE_RATE, out_rate)
    return y.astype(np.float32)
