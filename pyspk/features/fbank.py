"""Kaldi-exact log mel filterbank features, and the job machinery shared with VAD.

Options come from a Kaldi-style conf file (``--num-mel-bins=80`` one per
line, ``#`` comments) with Kaldi's option names and Kaldi's defaults (not
kaldi-native-fbank's: Kaldi dithers with 1.0 by default). The features are
computed by kaldi-native-fbank on int16-range samples, so they equal
``compute-fbank-feats`` output.

Also here: :class:`ArkScpWriter` (a Kaldi ark plus scp, written under temp
names) and :func:`run_feature_job` (per-utterance loop that logs and counts
failures), which ``compute_vad`` reuses.
"""

import contextlib
import difflib
import logging
import os
import sys

import kaldi_native_fbank as knf
import numpy as np
from kaldiio.matio import write_array
from tqdm import tqdm

from pyspk.data.datadir import c_sort_key
from pyspk.features.audio import UtteranceError, iter_utterance_audio, select_channel
from pyspk.fileutil import atomic_path

log = logging.getLogger(__name__)

# Kaldi's CompressedMatrix kAutomaticMethod (what copy-feats --compress=true uses).
KALDI_AUTO_COMPRESSION = 1


class KaldiOptionError(ValueError):
    """A bad option in a Kaldi-style conf file; the message names the file (and line)."""


class Option:
    """One Kaldi option: its type, Kaldi's default, and where it goes.

    ``target`` is ``"section.attr"`` of kaldi-native-fbank's FbankOptions, an
    attribute name of the config object, or None for a Kaldi option pyspk does
    not implement (then only its default value is accepted).
    """

    __slots__ = ("default", "kind", "target")

    def __init__(self, kind, default, target):
        self.kind, self.default, self.target = kind, default, target


_TRUE, _FALSE = ("true", "t", "1", ""), ("false", "f", "0")


def _convert(kind, text):
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("expected true or false")
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    return text


def read_kaldi_conf(path, spec):
    """Read a Kaldi conf file into ``{name: value}`` for every option of ``spec``.

    Follows Kaldi's ParseOptions: ``#`` starts a comment, each other line is
    ``--name=value`` (``--flag`` alone means true for booleans), ``_`` in a
    name equals ``-``, a later line wins. Errors name the file and line.
    """
    values = {name: option.default for name, option in spec.items()}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise KaldiOptionError(f"{path}: cannot read config: {e.strerror}") from None
    for lineno, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}:{lineno}"
        if not line.startswith("--"):
            raise KaldiOptionError(f"{where}: expected '--name=value', got '{line}' "
                                   "(a conf file for a shell script lacks the '--')")
        name, has_value, text = line[2:].partition("=")
        name = name.strip().replace("_", "-").lower()
        text = text.strip()
        if name not in spec:
            close = difflib.get_close_matches(name, spec, n=1)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            raise KaldiOptionError(f"{where}: unknown option '--{name}'{hint}")
        option = spec[name]
        if not has_value and option.kind is not bool:
            raise KaldiOptionError(f"{where}: option '--{name}' needs a value (--{name}=...)")
        try:
            value = _convert(option.kind, text)
        except ValueError:
            raise KaldiOptionError(f"{where}: bad value '{text}' for --{name} "
                                   f"(expected {option.kind.__name__})") from None
        if option.target is None and value != option.default:
            raise KaldiOptionError(f"{where}: --{name} is a Kaldi option that pyspk does not support; "
                                   f"only its default ({option.default}) is accepted")
        values[name] = value
    return values


# compute-fbank-feats options, with Kaldi's defaults.
FBANK_SPEC = {
    "sample-frequency": Option(float, 16000.0, "frame_opts.samp_freq"),
    "frame-length": Option(float, 25.0, "frame_opts.frame_length_ms"),
    "frame-shift": Option(float, 10.0, "frame_opts.frame_shift_ms"),
    "dither": Option(float, 1.0, "frame_opts.dither"),
    "preemphasis-coefficient": Option(float, 0.97, "frame_opts.preemph_coeff"),
    "remove-dc-offset": Option(bool, True, "frame_opts.remove_dc_offset"),
    "window-type": Option(str, "povey", "frame_opts.window_type"),
    "round-to-power-of-two": Option(bool, True, "frame_opts.round_to_power_of_two"),
    "blackman-coeff": Option(float, 0.42, "frame_opts.blackman_coeff"),
    "snip-edges": Option(bool, True, "frame_opts.snip_edges"),
    "num-mel-bins": Option(int, 23, "mel_opts.num_bins"),
    "low-freq": Option(float, 20.0, "mel_opts.low_freq"),
    "high-freq": Option(float, 0.0, "mel_opts.high_freq"),
    "vtln-low": Option(float, 100.0, "mel_opts.vtln_low"),
    "vtln-high": Option(float, -500.0, "mel_opts.vtln_high"),
    "debug-mel": Option(bool, False, "mel_opts.debug_mel"),
    "use-energy": Option(bool, False, "use_energy"),
    "energy-floor": Option(float, 0.0, "energy_floor"),
    "raw-energy": Option(bool, True, "raw_energy"),
    "htk-compat": Option(bool, False, "htk_compat"),
    "use-log-fbank": Option(bool, True, "use_log_fbank"),
    "use-power": Option(bool, True, "use_power"),
    "channel": Option(int, -1, "channel"),
    "min-duration": Option(float, 0.0, "min_duration"),
    "subtract-mean": Option(bool, False, "subtract_mean"),
    "allow-downsample": Option(bool, False, None),
    "allow-upsample": Option(bool, False, None),
    "max-feature-vectors": Option(int, -1, None),
    "vtln-warp": Option(float, 1.0, None),
    "vtln-map": Option(str, "", None),
    "utt2spk": Option(str, "", None),
    "output-format": Option(str, "kaldi", None),
}


class FbankConfig:
    """Validated fbank options: kaldi-native-fbank options plus compute-fbank-feats' own.

    Frame geometry (``window_size``, ``window_shift`` in samples) follows
    Kaldi's FrameExtractionOptions, so :meth:`num_frames` equals Kaldi's count.
    """

    def __init__(self, values=None, source="<defaults>"):
        values = {**{n: o.default for n, o in FBANK_SPEC.items()}, **(values or {})}
        self.source = str(source)
        self.values = values
        self.options = knf.FbankOptions()
        for name, option in FBANK_SPEC.items():
            if option.target is None:
                continue
            section, _, attr = option.target.rpartition(".")
            if section:
                setattr(getattr(self.options, section), attr, values[name])
            elif hasattr(self.options, attr):
                setattr(self.options, attr, values[name])
            else:
                setattr(self, attr, values[name])
        self.sample_rate = values["sample-frequency"]
        self.window_size = int(self.sample_rate * 0.001 * values["frame-length"])
        self.window_shift = int(self.sample_rate * 0.001 * values["frame-shift"])
        self.snip_edges = values["snip-edges"]
        self.dither = values["dither"]
        self.remove_dc_offset = values["remove-dc-offset"]
        self.energy_floor = values["energy-floor"]
        self._validate()

    @classmethod
    def from_file(cls, path):
        return cls(read_kaldi_conf(path, FBANK_SPEC), source=path)

    def _validate(self):
        problems = []
        if self.sample_rate <= 0:
            problems.append("--sample-frequency must be positive")
        if self.window_size < 1 or self.window_shift < 1:
            problems.append("--frame-length and --frame-shift must each span at least one sample")
        if self.dither < 0:
            problems.append("--dither must be >= 0")
        if not 0.0 <= self.values["preemphasis-coefficient"] <= 1.0:
            problems.append("--preemphasis-coefficient must be in [0, 1]")
        if self.channel < -1:
            problems.append("--channel must be -1, 0, 1 ...")
        if self.min_duration < 0:
            problems.append("--min-duration must be >= 0")
        if problems:
            raise KaldiOptionError(f"{self.source}: " + "; ".join(problems))
        try:
            self.dim = knf.OnlineFbank(self.options).dim
        except ValueError as e:
            raise KaldiOptionError(f"{self.source}: invalid fbank options: {e}") from None

    def num_frames(self, num_samples):
        """Kaldi's NumFrames for a waveform of ``num_samples`` samples."""
        if self.snip_edges:
            if num_samples < self.window_size:
                return 0
            return 1 + (num_samples - self.window_size) // self.window_shift
        return (num_samples + self.window_shift // 2) // self.window_shift


def prepare_waveform(samples, rate, config, name="audio"):
    """Check a (num_samples, channels) waveform against the config; return the 1-D channel used.

    ``name`` (the utterance id) is used in warnings. Raises UtteranceError
    for a sample-rate mismatch, a missing channel, NaN or infinite samples, a
    duration under --min-duration, or audio shorter than one frame.
    """
    if rate != config.sample_rate:
        raise UtteranceError(f"sample rate {rate} Hz does not match --sample-frequency="
                             f"{config.sample_rate:g} in {config.source}")
    wave = select_channel(samples, config.channel, name)
    bad = np.count_nonzero(~np.isfinite(wave))
    if bad:  # a float WAV may hold NaN/Inf; left in, it makes the fbank library abort the whole job
        raise UtteranceError(f"{bad} of {wave.shape[0]} samples are NaN or infinite")
    duration = wave.shape[0] / rate
    if duration < config.min_duration:
        raise UtteranceError(f"duration {duration:g} s is under --min-duration={config.min_duration:g}")
    if config.num_frames(wave.shape[0]) == 0:
        raise UtteranceError(f"too short: {wave.shape[0]} samples give no frame "
                             f"(a frame is {config.window_size} samples)")
    return wave


def compute_fbank(wave, config):
    """Fbank features (num_frames, dim) float32 of a 1-D int16-range waveform."""
    extractor = knf.OnlineFbank(config.options)
    extractor.accept_waveform(config.sample_rate, wave)
    extractor.input_finished()
    num_frames = extractor.num_frames_ready
    if num_frames == 0:
        raise UtteranceError(f"too short: {wave.shape[0]} samples give no frame")
    feats = np.stack([extractor.get_frame(i) for i in range(num_frames)])
    if config.subtract_mean:
        feats -= feats.mean(axis=0, keepdims=True)
    return feats


class ArkScpWriter:
    """Write a Kaldi binary ark and its scp (sorted, absolute ark path) under temp names.

    Both files take their final names only when the ``with`` block ends
    without an exception; the ark is renamed first, so a final-named scp never
    points into a missing ark. ``compress=True`` stores matrices as Kaldi
    CompressedMatrix (as ``copy-feats --compress=true``).
    """

    def __init__(self, ark_path, scp_path, compress=False):
        self.ark_path = os.path.abspath(ark_path)
        self.scp_path = scp_path
        self.compression = KALDI_AUTO_COMPRESSION if compress else None
        self._lines = []

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        with self._stack:
            self._tmp_scp = self._stack.enter_context(atomic_path(self.scp_path))
            tmp_ark = self._stack.enter_context(atomic_path(self.ark_path))
            self._ark = self._stack.enter_context(open(tmp_ark, "wb"))
            self._stack = self._stack.pop_all()
        return self

    def write(self, key, array):
        self._ark.write(f"{key} ".encode())
        offset = self._ark.tell()
        write_array(self._ark, array, compression_method=self.compression if array.ndim == 2 else None)
        self._lines.append((key, f"{key} {self.ark_path}:{offset}\n"))

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                with open(self._tmp_scp, "w", encoding="utf-8") as f:
                    f.writelines(line for _, line in sorted(self._lines, key=lambda kv: c_sort_key(kv[0])))
            except BaseException:
                self._stack.__exit__(*sys.exc_info())  # removes the temp files
                raise
        return self._stack.__exit__(exc_type, exc, tb)


def run_feature_job(sources, compute, writer, desc="features"):
    """Compute and write features for each utterance; failures are logged and counted.

    ``compute(source, samples, rate)`` returns ``(array, info)`` or raises
    UtteranceError. Returns ``(infos, num_failed)`` with ``infos[utt] = info``
    for the utterances written. Logs Kaldi's "Done N utterances, failed M".
    """
    infos, failed = {}, 0
    with tqdm(total=len(sources), desc=desc, unit="utt", file=sys.stderr, mininterval=10, ascii=True) as bar:
        for source, samples, rate, read_error in iter_utterance_audio(sources):
            error = read_error
            if error is None:
                try:
                    array, info = compute(source, samples, rate)
                except UtteranceError as e:
                    error = str(e)
            if error is None:
                writer.write(source.utt, array)
                infos[source.utt] = info
            else:
                log.warning("%s: %s", source.utt, error)
                failed += 1
            bar.update()
    log.info("Done %d utterances, failed %d", len(infos), failed)
    return infos, failed
