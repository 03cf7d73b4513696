"""Reading utterance audio from a Kaldi data dir: wav.scp entries and segments.

A wav.scp value is either a file path (any format libsndfile reads: wav,
flac, ogg ...) or a Kaldi extended filename: a shell command ending in ``|``
whose stdout is audio, e.g. ``sox in.flac -t wav - |``. Samples come back as
float32 in the int16 range, as Kaldi's wave reader returns them, because
Kaldi's feature and VAD thresholds assume that scale.

Problems with one utterance raise :class:`UtteranceError`, so a job can log
the utterance id, count it and go on with the others.
"""

import io
import logging
import os
import struct
import subprocess

import numpy as np
import soundfile as sf

from pyspk.data.datadir import DataDir, c_sort_key, check_utf8_keys

# Kaldi reads 16-bit PCM as integer-valued floats; soundfile returns x / 32768.
KALDI_SAMPLE_SCALE = 32768.0
# extract-segments truncates a segment end past the recording end by up to this much.
MAX_SEGMENT_OVERSHOOT_SEC = 0.5
# WAV data sizes that a writer on a pipe puts in the header because it cannot seek back.
_STREAMING_SIZES = (0, 0xFFFFFFFF)

log = logging.getLogger(__name__)


class UtteranceError(Exception):
    """A problem confined to one utterance (bad audio, bad segment, too short ...)."""


def _patch_streamed_wav(data):
    """Fix the sizes of a WAV written to a pipe so libsndfile reads all of its samples.

    ``sox ... -t wav -`` and ``ffmpeg ... -f wav -`` cannot seek back to fill in
    the RIFF and data chunk sizes, so they leave 0 or 0xFFFFFFFF there; Kaldi
    then reads the data chunk up to the end of the stream, and so do we.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos:pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4:pos + 8])
        if chunk_id == b"data":
            available = len(data) - pos - 8
            if size in _STREAMING_SIZES or size > available:
                patched = bytearray(data)
                patched[pos + 4:pos + 8] = struct.pack("<I", available)
                patched[4:8] = struct.pack("<I", len(data) - 8)
                return bytes(patched)
            return data
        pos += 8 + size + (size & 1)
    return data


def _run_pipe(command):
    """Run an extended-filename command with /bin/sh (as Kaldi's popen does); return stdout."""
    proc = subprocess.run(command, shell=True, capture_output=True, check=False)
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = f": {stderr[-1]}" if stderr else ""
        raise UtteranceError(f"command '{command}' failed with exit code {proc.returncode}{detail}")
    if not proc.stdout:
        raise UtteranceError(f"command '{command}' produced no output")
    return proc.stdout


def read_audio(entry):
    """Read a wav.scp value; return ``(samples, sample_rate)``.

    ``samples`` is float32 of shape (num_samples, num_channels) in the int16
    range. A value ending in ``|`` is run as a shell command.
    """
    entry = entry.strip()
    if entry.endswith("|"):
        command = entry[:-1].strip()
        return read_audio_bytes(_run_pipe(command), f"output of '{command}'")
    if not os.path.isfile(entry):
        raise UtteranceError(f"no such file '{entry}'")
    if os.path.getsize(entry) == 0:
        raise UtteranceError(f"empty file '{entry}'")
    return _decode(entry, f"'{entry}'")


def read_audio_bytes(data, name):
    """Read audio from bytes (a pipe's or stdin's; a streamed WAV's sizes are fixed); ``name`` goes into errors."""
    if not data:
        raise UtteranceError(f"no data in {name}")
    return _decode(io.BytesIO(_patch_streamed_wav(data)), name)


def _decode(source, name):
    try:
        samples, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError, OSError) as e:
        raise UtteranceError(f"cannot read audio from {name}: {e}") from None
    if samples.shape[0] == 0:
        raise UtteranceError(f"no samples in {name}")
    samples *= KALDI_SAMPLE_SCALE
    return samples, rate


def select_channel(samples, channel, name="audio"):
    """Pick one channel as Kaldi's ``--channel`` does (-1: expect mono, else take the first).

    ``name`` (the utterance id) goes into the warning about unexpected channels.
    """
    num_channels = samples.shape[1]
    if channel == -1:
        if num_channels > 1:
            log.warning("%s: audio has %d channels and --channel=-1: using the first", name, num_channels)
        channel = 0
    if channel >= num_channels:
        raise UtteranceError(f"--channel={channel} but the audio has {num_channels} channel(s)")
    return np.ascontiguousarray(samples[:, channel])


def cut_segment(samples, rate, start, end):
    """Cut ``[start, end)`` seconds out of a recording as Kaldi's extract-segments does.

    ``end == -1`` means the end of the recording; an end past the recording by
    less than 0.5 s is truncated, further out it is an error.
    """
    num_samples = samples.shape[0]
    start_sample = round(start * rate)
    end_sample = num_samples if end == -1 else round(end * rate)
    duration = num_samples / rate
    if start_sample < 0 or start_sample >= num_samples:
        raise UtteranceError(f"segment start {start} s is outside the recording ({duration:g} s)")
    if end_sample > num_samples:
        if end_sample >= num_samples + int(MAX_SEGMENT_OVERSHOOT_SEC * rate):
            raise UtteranceError(f"segment end {end} s is beyond the end of the recording ({duration:g} s)")
        end_sample = num_samples
    if end_sample <= start_sample:
        raise UtteranceError(f"segment [{start}, {end}] s is empty")
    return samples[start_sample:end_sample]


class UtteranceSource:
    """Where one utterance's audio comes from: a recording and optionally a time span."""

    __slots__ = ("end", "entry", "recording", "start", "utt")

    def __init__(self, utt, recording, entry, start=None, end=None):
        self.utt, self.recording, self.entry, self.start, self.end = utt, recording, entry, start, end


def utterance_sources(data_dir):
    """List the utterances of a data dir sorted by id, from segments when present else wav.scp.

    Raises DataDirError (file:line) for malformed files and ids that are not
    UTF-8 (they cannot be archive keys). A segment whose
    recording is missing from wav.scp keeps ``entry=None`` and fails on read.
    """
    data = DataDir(data_dir)
    check_utf8_keys(data.file("segments") if data.has("segments") else data.file("wav.scp"))
    wav_scp = data.wav_scp()
    segments = data.segments()
    if segments is None:
        sources = [UtteranceSource(utt, utt, entry) for utt, entry in wav_scp.items()]
    else:
        sources = [UtteranceSource(utt, rec, wav_scp.get(rec), start, end)
                   for utt, (rec, start, end) in segments.items()]
    return sorted(sources, key=lambda s: c_sort_key(s.utt))


def shard(items, job, num_jobs):
    """The ``job``-th (1-based) of ``num_jobs`` contiguous, near-equal blocks of ``items``."""
    if num_jobs < 1 or not 1 <= job <= num_jobs:
        raise ValueError(f"job {job} is not in 1..{num_jobs}")
    bounds = np.linspace(0, len(items), num_jobs + 1).round().astype(int)
    return items[bounds[job - 1]:bounds[job]]


def iter_utterance_audio(sources):
    """Yield ``(source, samples, rate, error)`` per utterance, reading each recording once.

    Utterances are grouped by recording (in order of first appearance) so the
    segments of a long recording cost one read. On failure ``samples`` is None
    and ``error`` says why; otherwise ``error`` is None.
    """
    by_recording = {}
    for source in sources:
        by_recording.setdefault(source.recording, []).append(source)
    for recording, group in by_recording.items():
        entry = group[0].entry
        try:
            if entry is None:
                raise UtteranceError(f"recording '{recording}' is not in wav.scp")
            samples, rate = read_audio(entry)
        except UtteranceError as e:
            for source in group:
                yield source, None, None, str(e)
            continue
        for source in group:
            if source.start is None:
                yield source, samples, rate, None
                continue
            try:
                segment = cut_segment(samples, rate, source.start, source.end)
            except UtteranceError as e:
                yield source, None, None, str(e)
                continue
            yield source, segment, rate, None
