"""Kaldi-style augmented copies of a data dir: ``<src>_reverb``, ``_noise``, ``_music``, ``_babble``.

Each copy is a data dir whose utterances are ``<utt>-<type>`` (Kaldi's
``--utt-suffix`` naming, same speaker) with written audio, plus ``utt2uniq``
(augmented -> clean utterance, as Kaldi writes it) and ``utt2dur``.

Work is split in three calls so a shell script can fan out over jobs:

* :func:`prepare` checks the inputs and freezes the options in
  ``<audio-dir>/options.json`` (rewritten only when they change);
* :func:`run_job` augments one shard of the utterances; the result of each
  utterance depends only on (seed, type, utterance id), so any number of jobs
  gives the same audio. Outputs newer than ``options.json`` are kept, so a
  killed run resumes where it stopped;
* :func:`merge` gathers the shards into the data dir and fails when too many
  utterances failed.

Sources: RIRS_NOISES lists and MUSAN when their directories are given (Kaldi's
voxceleb settings: foreground noise at 15/10/5/0 dB one second apart, one
background music at 15/10/8/5 dB, babble of 3-7 speakers at 20/17/15/13 dB);
otherwise simulated rooms, coloured noise, synthetic music and babble summed
from other speakers of the source data dir.
"""

import functools
import hashlib
import json
import logging
import os

import numpy as np
import soundfile as sf
from tqdm import tqdm

from pyspk.augment.noise import (
    add_background,
    add_foreground,
    coloured_noise,
    musan_files,
    read_noise_file,
    synth_music,
)
from pyspk.augment.rir import RIR_SETS, read_rir, read_rir_list, resample, reverberate, simulate_rir
from pyspk.data.datadir import DataDir, DataDirError, c_sort_key, read_scp, utt2spk_to_spk2utt
from pyspk.features.audio import (
    KALDI_SAMPLE_SCALE,
    UtteranceError,
    cut_segment,
    iter_utterance_audio,
    read_audio,
    select_channel,
    shard,
    utterance_sources,
)
from pyspk.fileutil import atomic_open, atomic_path

log = logging.getLogger(__name__)

AUG_TYPES = ("reverb", "noise", "music", "babble")
TYPE_DEFAULTS = {
    "reverb": {"rir_sets": ["smallroom", "mediumroom"]},
    "noise": {"snrs": [15.0, 10.0, 5.0, 0.0], "interval": 1.0},
    "music": {"snrs": [15.0, 10.0, 8.0, 5.0], "num_noises": [1]},
    "babble": {"snrs": [20.0, 17.0, 15.0, 13.0], "num_noises": [3, 4, 5, 6, 7]},
}
MUSAN_PART = {"noise": "noise", "music": "music", "babble": "speech"}
AUDIO_FORMATS = {"wav": "WAV", "flac": "FLAC"}
OPTIONS_FILE = "options.json"
# Generated foreground noises last 1-5 s, like most MUSAN noise files.
GENERATED_NOISE_SEC = (1.0, 5.0)
# Files of the source data dir that stay valid for an augmented copy (per utterance / per speaker).
CARRIED_UTT_FILES = ("text", "utt2lang")
CARRIED_SPK_FILES = ("spk2gender",)
PEAK_LIMIT = 32767.0 / 32768.0


class AugmentError(Exception):
    """A user-level problem (bad options, missing corpus, too many failures)."""


def make_options(aug_type, seed=777, rir_dir=None, rir_sets=None, musan_dir=None, snrs=None, interval=None,
                 num_noises=None, audio_format="wav"):
    """The full option set of one augmentation type; unset values take Kaldi's voxceleb defaults."""
    if aug_type not in AUG_TYPES:
        raise AugmentError(f"unknown augmentation type '{aug_type}'; known: {', '.join(AUG_TYPES)}")
    if audio_format not in AUDIO_FORMATS:
        raise AugmentError(f"unknown audio format '{audio_format}'; known: {', '.join(AUDIO_FORMATS)}")
    given = {"rir_dir": rir_dir, "rir_sets": rir_sets, "musan_dir": musan_dir, "snrs": snrs, "interval": interval,
             "num_noises": num_noises}
    applicable = {"reverb": ("rir_dir", "rir_sets")}.get(aug_type, ("musan_dir", "snrs"))
    applicable += {"noise": ("interval",), "music": ("num_noises",), "babble": ("num_noises",)}.get(aug_type, ())
    misplaced = [k for k, v in given.items() if v is not None and k not in applicable]
    if misplaced:
        raise AugmentError(f"option(s) {', '.join(misplaced)} do not apply to '{aug_type}'")
    options = {"type": aug_type, "seed": int(seed), "audio_format": audio_format}
    for key in applicable:
        value = given[key] if given[key] is not None else TYPE_DEFAULTS[aug_type].get(key)
        if key.endswith("_dir"):
            value = os.path.abspath(value) if value else None
        options[key] = value
    _normalise_values(options)
    return options


def _normalise_values(options):
    """Convert ``options``' lists and numbers to their types in place; raise AugmentError on bad values."""
    if options["type"] == "reverb":
        options["rir_sets"] = list(options["rir_sets"])
        unknown = [s for s in options["rir_sets"] if s not in RIR_SETS]
        if unknown or not options["rir_sets"]:
            raise AugmentError(f"bad RIR set(s) {unknown or '(none)'}; known: {', '.join(RIR_SETS)}")
    else:
        options["snrs"] = [float(s) for s in options["snrs"]]
        if not options["snrs"]:
            raise AugmentError("empty SNR list")
    if "num_noises" in options:
        options["num_noises"] = [int(n) for n in options["num_noises"]]
        if not options["num_noises"] or min(options["num_noises"]) < 1:
            raise AugmentError(f"number of noises must be >= 1, got {options['num_noises']}")
    if "interval" in options:
        options["interval"] = float(options["interval"])
        if options["interval"] < 0:
            raise AugmentError("foreground interval must be >= 0")


def utterance_rng(seed, aug_type, utt):
    """Generator for one utterance: depends only on the seed, the type and the utterance id."""
    utt_key = int.from_bytes(hashlib.blake2b(utt.encode("utf-8"), digest_size=8).digest(), "little")
    return np.random.default_rng([int(seed), AUG_TYPES.index(aug_type), utt_key])


def load_mono(entry, start=None, end=None):
    """First channel of a wav.scp entry (optionally a segment) as float64 in [-1, 1], and its rate."""
    samples, rate = read_audio(entry)
    if start is not None:
        samples = cut_segment(samples, rate, start, end)
    return select_channel(samples, 0).astype(np.float64) / KALDI_SAMPLE_SCALE, rate


class Augmenter:
    """Applies one augmentation type to single utterances."""

    def __init__(self, options, sources, utt2spk):
        self.options = options
        self.type = options["type"]
        self.rir_lists = self.musan = self.spk2sources = None
        if self.type == "reverb":
            if options["rir_dir"]:
                try:
                    self.rir_lists = [read_rir_list(options["rir_dir"], s) for s in options["rir_sets"]]
                except (OSError, ValueError) as e:
                    raise AugmentError(str(e)) from None
        elif options["musan_dir"]:
            try:
                self.musan = musan_files(options["musan_dir"], MUSAN_PART[self.type])
            except (OSError, ValueError) as e:
                raise AugmentError(str(e)) from None
        elif self.type == "babble":
            self.spk2sources = {}
            for source in sources:
                self.spk2sources.setdefault(utt2spk[source.utt], []).append(source)
            if len(self.spk2sources) < 2:
                raise AugmentError("babble without --musan-dir sums other speakers' utterances: "
                                   "the source data dir needs at least 2 speakers")
            self.speakers = sorted(self.spk2sources)
            self.speaker_index = {spk: i for i, spk in enumerate(self.speakers)}
        self._read_rir = functools.lru_cache(maxsize=512)(read_rir)

    def __call__(self, signal, rate, spk, rng):
        """Augment ``signal`` (float64, [-1, 1]); returns (audio, description)."""
        if self.type == "reverb":
            return self._reverb(signal, rate, rng)
        if self.type == "noise":
            return self._noise(signal, rate, rng)
        count = int(rng.choice(self.options["num_noises"]))
        snrs = [float(s) for s in rng.choice(self.options["snrs"], size=count)]
        if self.musan is not None:
            names = [self.musan[i] for i in rng.integers(len(self.musan), size=count)]
            noises = [read_noise_file(p, rate, rng, max_samples=len(signal)) for p in names]
            names = [os.path.basename(p) for p in names]
        elif self.type == "music":
            noises, names = [synth_music(rng, len(signal), rate) for _ in range(count)], ["synthetic"] * count
        else:
            noises, names = self._babble_from_data(spk, count, rate, rng)
            snrs = snrs[:len(noises)]  # fewer other speakers than ``count``: fewer noises
        out = add_background(signal, noises, snrs, rng)
        return out, " ".join(f"{n}@{s:g}dB" for n, s in zip(names, snrs, strict=True))

    def _reverb(self, signal, rate, rng):
        if self.rir_lists is None:
            rir, rt60 = simulate_rir(rng, rate)
            return reverberate(signal, rir), f"simulated-rir rt60={rt60:.2f}s"
        paths = self.rir_lists[int(rng.integers(len(self.rir_lists)))]
        path = paths[int(rng.integers(len(paths)))]
        return reverberate(signal, self._read_rir(path, rate)), f"rir={os.path.basename(path)}"

    def _noise(self, signal, rate, rng):
        names = []

        def draw(max_samples):
            if self.musan is not None:
                path = self.musan[int(rng.integers(len(self.musan)))]
                names.append(os.path.basename(path))
                return read_noise_file(path, rate, rng, max_samples=max_samples)
            names.append("coloured")
            length = min(int(rng.uniform(*GENERATED_NOISE_SEC) * rate), max_samples)
            return coloured_noise(rng, length, rate)

        out, segments = add_foreground(signal, draw, self.options["snrs"], self.options["interval"], rate, rng)
        return out, " ".join(f"{n}@{snr:g}dB[{a / rate:.2f}-{b / rate:.2f}s]"
                             # strict=False: a last, empty draw has a name but no segment
                             for n, (a, b, snr) in zip(names, segments, strict=False))

    def _babble_from_data(self, spk, count, rate, rng):
        # Distinct speakers other than ``spk``: draw among n-1 indices, then skip over spk's own.
        n_others = len(self.speakers) - 1
        chosen = rng.choice(n_others, size=min(count, n_others), replace=False)
        chosen += chosen >= self.speaker_index[spk]
        noises, names = [], []
        for i in chosen:
            candidates = self.spk2sources[self.speakers[i]]
            source = candidates[int(rng.integers(len(candidates)))]
            if source.entry is None:
                raise UtteranceError(f"babble source '{source.utt}': recording not in wav.scp")
            audio, audio_rate = load_mono(source.entry, source.start, source.end)
            noises.append(resample(audio, audio_rate, rate))
            names.append(source.utt)
        return noises, names


def options_path(audio_dir):
    return os.path.join(audio_dir, OPTIONS_FILE)


def load_options(audio_dir):
    path = options_path(audio_dir)
    if not os.path.isfile(path):
        raise AugmentError(f"{path}: no such file (run the 'prepare' step first)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _source_digest(data):
    digest = hashlib.blake2b(digest_size=16)
    for name in ("wav.scp", "segments", "utt2spk"):
        if data.has(name):
            with open(data.file(name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()


def _load_source(src_dir):
    data = DataDir(src_dir)
    for name in ("wav.scp", "utt2spk"):
        if not data.has(name):
            raise DataDirError(data.file(name), 0, "no such file")
    sources = utterance_sources(src_dir)
    utt2spk = data.utt2spk()
    missing = [s.utt for s in sources if s.utt not in utt2spk]
    if missing:
        raise DataDirError(data.file("utt2spk"), 0, f"{len(missing)} utterance(s) have no speaker, e.g. '{missing[0]}'")
    if not sources:
        raise DataDirError(data.file("wav.scp"), 0, "no utterances")
    return data, sources, utt2spk


def prepare(src_dir, audio_dir, options):
    """Check inputs and sources, then write ``<audio_dir>/options.json`` (only if it changes)."""
    data, sources, utt2spk = _load_source(src_dir)
    if any(c.isspace() for c in os.path.abspath(audio_dir)):
        raise AugmentError(f"'{audio_dir}': audio paths go into wav.scp and may not contain whitespace")
    Augmenter(options, sources, utt2spk)
    frozen = dict(options, source_digest=_source_digest(data))
    text = json.dumps(frozen, indent=1, sort_keys=True) + "\n"
    path = options_path(audio_dir)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return frozen
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return frozen


def output_path(audio_dir, options, utt, spk):
    return os.path.join(audio_dir, spk, f"{utt}-{options['type']}.{options['audio_format']}")


def _part_paths(audio_dir, job):
    parts = os.path.join(audio_dir, "parts")
    return os.path.join(parts, f"done.{job}"), os.path.join(parts, f"failed.{job}")


def _read_part(path):
    """``{new_utt: (path, duration, description)}`` of a job's part file."""
    entries = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                new_utt, audio, duration, desc = [*line.rstrip("\n").split(" ", 3), ""][:4]
                entries[new_utt] = (audio, duration, desc)
    return entries


def run_job(src_dir, audio_dir, job, num_jobs, progress=True):
    """Augment the ``job``-th of ``num_jobs`` shards; returns (done, failed)."""
    options = load_options(audio_dir)
    aug_type = options["type"]
    _, sources, utt2spk = _load_source(src_dir)
    augmenter = Augmenter(options, sources, utt2spk)
    fresh_after = os.stat(options_path(audio_dir)).st_mtime_ns
    done_path, failed_path = _part_paths(audio_dir, job)
    previous = _read_part(done_path)

    kept, todo = {}, []
    for source in shard(sources, job, num_jobs):
        new_utt = f"{source.utt}-{aug_type}"
        path = output_path(audio_dir, options, source.utt, utt2spk[source.utt])
        if new_utt in previous and os.path.isfile(path) and os.stat(path).st_mtime_ns >= fresh_after:
            kept[new_utt] = previous[new_utt]
        else:
            todo.append(source)
    if kept:
        log.info("%d utterance(s) already augmented with these options, kept", len(kept))

    failures = []
    fmt = AUDIO_FORMATS[options["audio_format"]]
    with tqdm(total=len(todo), desc=f"{aug_type} job {job}", disable=not progress, mininterval=10) as bar:
        for source, samples, rate, error in iter_utterance_audio(todo):
            bar.update(1)
            try:
                if error is not None:
                    raise UtteranceError(error)
                spk = utt2spk[source.utt]
                signal = select_channel(samples, 0).astype(np.float64) / KALDI_SAMPLE_SCALE
                rng = utterance_rng(options["seed"], aug_type, source.utt)
                out, desc = augmenter(signal, rate, spk, rng)
                peak = float(np.max(np.abs(out)))
                if peak > PEAK_LIMIT:  # scale down rather than clip
                    out *= PEAK_LIMIT / peak
                    desc += f" gain={PEAK_LIMIT / peak:.3f}"
                path = output_path(audio_dir, options, source.utt, spk)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with atomic_path(path) as tmp:
                    sf.write(tmp, out, rate, format=fmt, subtype="PCM_16")
                kept[f"{source.utt}-{aug_type}"] = (path, f"{len(out) / rate:.3f}", desc)
            except (UtteranceError, OSError, ValueError, RuntimeError) as e:
                log.warning("utterance %s failed: %s", source.utt, e)
                failures.append((source.utt, str(e).replace("\n", " ")))

    with atomic_open(done_path, "w", encoding="utf-8") as f:
        for new_utt in sorted(kept):
            audio, duration, desc = kept[new_utt]
            f.write(f"{new_utt} {audio} {duration} {desc}\n")
    with atomic_open(failed_path, "w", encoding="utf-8") as f:
        for utt, reason in failures:
            f.write(f"{utt} {reason}\n")
    log.info("Done %d utterances, failed %d (%s, job %d)", len(kept), len(failures), aug_type, job)
    return len(kept), len(failures)


def _wav_scp_value(path, audio_format):
    # Kaldi's wave reader takes only wav; flac goes through sox as an extended filename.
    return path if audio_format == "wav" else f"sox {path} -t wav - |"


def merge(src_dir, audio_dir, dest_dir, num_jobs, max_fail_fraction=0.05):
    """Gather the jobs' outputs into the data dir ``dest_dir``; returns (done, failed)."""
    options = load_options(audio_dir)
    aug_type = options["type"]
    data = DataDir(src_dir)
    utt2spk = data.utt2spk()
    entries, failures = {}, []
    for job in range(1, num_jobs + 1):
        done_path, failed_path = _part_paths(audio_dir, job)
        if not os.path.isfile(done_path) or not os.path.isfile(failed_path):
            raise AugmentError(f"{done_path}: missing; did job {job} of {num_jobs} run?")
        entries.update(_read_part(done_path))
        with open(failed_path, encoding="utf-8") as f:
            failures.extend(line.split(" ", 1)[0] for line in f if line.strip())
    total = len(entries) + len(failures)
    log.info("Done %d utterances, failed %d (%s, all jobs)", len(entries), len(failures), aug_type)
    if total == 0:
        raise AugmentError("no utterances were augmented")
    if len(failures) > max_fail_fraction * total:
        raise AugmentError(f"{aug_type}: {len(failures)} of {total} utterances failed "
                           f"(more than {max_fail_fraction:g}); see the job logs")
    suffix = "-" + aug_type
    orig = {new: new[:-len(suffix)] for new in entries}
    tables = {
        "wav.scp": {new: _wav_scp_value(e[0], options["audio_format"]) for new, e in entries.items()},
        "utt2spk": {new: utt2spk[orig[new]] for new in entries},
        "utt2uniq": orig,
        "utt2dur": {new: e[1] for new, e in entries.items()},
    }
    tables["spk2utt"] = utt2spk_to_spk2utt(tables["utt2spk"])
    for name in CARRIED_UTT_FILES:
        if data.has(name):
            table = read_scp(data.file(name))
            tables[name] = {new: table[orig[new]] for new in entries if orig[new] in table}
    for name in CARRIED_SPK_FILES:
        if data.has(name):
            table = read_scp(data.file(name))
            tables[name] = {spk: table[spk] for spk in tables["spk2utt"] if spk in table}

    _write_dir(dest_dir, tables)
    with atomic_open(os.path.join(audio_dir, "info.txt"), "w", encoding="utf-8") as f:
        for new in sorted(entries):
            f.write(f"{new} {entries[new][2]}\n")
    return len(entries), len(failures)


def _table_text(table):
    lines = []
    for key in sorted(table, key=c_sort_key):
        value = table[key]
        lines.append(f"{key} {' '.join(map(str, value)) if isinstance(value, (list, tuple)) else value}\n")
    return "".join(lines)


def _write_dir(dest_dir, tables):
    """Write the data dir, leaving files whose content is unchanged untouched (so their
    times still say that later features are up to date); if the audio changed,
    files of the older version (features, VAD ...) are removed."""
    os.makedirs(dest_dir, exist_ok=True)
    wav_scp = os.path.join(dest_dir, "wav.scp")
    if not (os.path.isfile(wav_scp) and read_scp(wav_scp) == tables["wav.scp"]):
        for name in os.listdir(dest_dir):
            path = os.path.join(dest_dir, name)
            if os.path.isfile(path) and name not in tables:
                os.remove(path)
    for name, table in tables.items():
        path = os.path.join(dest_dir, name)
        text = _table_text(table)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    continue
        with atomic_open(path, "w", encoding="utf-8") as f:
            f.write(text)
