"""Checks of Kaldi data directories, with the semantics of Kaldi's utils/validate_data_dir.sh.

Required: ``utt2spk`` and ``spk2utt`` (consistent with each other); ``text``,
``wav.scp`` and ``feats.scp`` when asked for. Every file present must have
one entry per line, no empty line, a final newline, and keys sorted in
``LC_ALL=C`` order without duplicates. By default utt2spk must also be sorted
by speaker (speaker ids prefixes of utterance ids), as Kaldi requires.

Which utterances / speakers / recordings a file must cover follows from its
name (``table_kind``): per-utterance files (``text``, ``feats.scp``,
``vad.scp``, ``segments`` and every ``utt2*``) list exactly the utterances of
utt2spk; per-speaker files (``cmvn.scp`` and every ``spk2*``) exactly its
speakers; ``wav.scp`` and ``reco2*`` exactly the recordings of ``segments``,
or the utterances when there is no segments file. Values are checked where
their meaning is known (durations and frame counts positive, segments
``start < end``, genders m/f, warps in (0.5, 1.5) ...).

``check_data_dir`` returns every problem found (each names file and line);
``validate_data_dir`` raises the first as a DataDirError.
"""

import itertools
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspk.data.datadir import DataDirError, c_sort_key, gc_paused, read_text
from pyspk.fileutil import PathLike

# Each file reports at most this many problems; the rest are only counted.
MAX_PROBLEMS_PER_CHECK = 5

_GENERIC_UTT = re.compile(r"^utt2[A-Za-z0-9_]+$")
_GENERIC_SPK = re.compile(r"^spk2[A-Za-z0-9_]+$")
_GENERIC_RECO = re.compile(r"^reco2[A-Za-z0-9_]+$")


# Value checks get the fields of a line (key first) and return an error message or None.

def _positive_float(fields):
    try:
        x = float(fields[1])
    except ValueError:
        return f"'{fields[1]}' is not a number"
    return None if math.isfinite(x) and x > 0 else f"value must be positive, got '{fields[1]}'"


def _positive_int(fields):
    try:
        x = int(fields[1])
    except ValueError:
        return f"'{fields[1]}' is not an integer"
    return None if x > 0 else f"value must be positive, got '{fields[1]}'"


def _warp(fields):
    try:
        x = float(fields[1])
    except ValueError:
        return f"'{fields[1]}' is not a number"
    return None if 0.5 < x < 1.5 else f"warp factor must be in (0.5, 1.5), got '{fields[1]}'"


def _gender(fields):
    return None if fields[1] in ("m", "f") else f"gender must be 'm' or 'f', got '{fields[1]}'"


def _channel(fields):
    return None if fields[2] in ("A", "B", "1") else f"channel must be 'A' or 'B', got '{fields[2]}'"


def _segment(fields):
    try:
        start, end = float(fields[2]), float(fields[3])
    except ValueError:
        return "start and end times must be numbers"
    if not (math.isfinite(start) and math.isfinite(end)):
        return "start and end times must be finite"
    if start < 0:
        return f"start time {fields[2]} is negative"
    if end <= start:
        return f"end time {fields[3]} is not after start time {fields[2]}"
    return None


def _rxfilename(fields):
    if fields[1].startswith("~"):
        return "do not use tilde (~) in wav.scp: it is not expanded when the file is opened"
    if fields[1].startswith("|"):
        return "a pipe command must end with '|', not start with it"
    return None


@dataclass(frozen=True)
class FileSpec:
    """What a data-dir file is keyed by and what each line holds."""
    kind: str                # "utt", "spk" or "reco" (recordings; utterances when no segments)
    min_fields: int = 2      # including the key
    max_fields: int = 0      # 0: no limit
    # check_value: fields of a line (key first) -> error message or None;
    # all_good: second fields of all lines -> True when check_value would pass them all (fast).
    check_value: Callable[[list[str]], str | None] | None = None
    all_good: Callable[[list[str]], bool] | None = None

    def field_count(self) -> str:
        """The number of fields a line needs, in words."""
        if self.max_fields == self.min_fields:
            return str(self.min_fields)
        return f"{self.min_fields} to {self.max_fields}" if self.max_fields else f"at least {self.min_fields}"


def _all_positive_ints(values):
    digits = "".join(values)
    return digits.isascii() and digits.isdigit() and all(values) and min(map(int, values)) > 0


def _all_positive_floats(values):
    try:
        numbers = list(map(float, values))
    except ValueError:
        return False
    return min(numbers) > 0 and all(map(math.isfinite, numbers))


def _all_plain_rxfilenames(values):
    return not any(v.startswith(("~", "|")) for v in values)


_SPECS = {
    "utt2spk": FileSpec("utt", 2, 2),
    "text": FileSpec("utt", 1),
    "feats.scp": FileSpec("utt"),
    "vad.scp": FileSpec("utt"),
    "segments": FileSpec("utt", 4, 4, _segment),
    "utt2dur": FileSpec("utt", 2, 2, _positive_float, _all_positive_floats),
    "utt2num_frames": FileSpec("utt", 2, 2, _positive_int, _all_positive_ints),
    "utt2num_samples": FileSpec("utt", 2, 2, _positive_int, _all_positive_ints),
    "utt2uniq": FileSpec("utt", 2, 2),
    "utt2lang": FileSpec("utt", 2, 2),
    "utt2warp": FileSpec("utt", 2, 2, _warp),
    "cmvn.scp": FileSpec("spk"),
    "spk2gender": FileSpec("spk", 2, 2, _gender),
    "spk2warp": FileSpec("spk", 2, 2, _warp),
    "wav.scp": FileSpec("reco", 2, 0, _rxfilename, _all_plain_rxfilenames),
    "reco2dur": FileSpec("reco", 2, 2, _positive_float, _all_positive_floats),
    "reco2num_samples": FileSpec("reco", 2, 2, _positive_int, _all_positive_ints),
    "reco2file_and_channel": FileSpec("reco", 3, 3, _channel),
}


def file_spec(name: str) -> FileSpec | None:
    """The FileSpec of data-dir file ``name``, or None when it is not a keyed table (spk2utt is special)."""
    if name in _SPECS:
        return _SPECS[name]
    if name == "spk2utt":
        return None
    if _GENERIC_UTT.match(name):
        return FileSpec("utt")
    if _GENERIC_SPK.match(name):
        return FileSpec("spk")
    if _GENERIC_RECO.match(name):
        return FileSpec("reco")
    return None


def table_files(path: PathLike) -> list[str]:
    """Names of the keyed tables present in data dir ``path`` (sorted; utt2spk and spk2utt excluded)."""
    names = []
    for name in sorted(os.listdir(path)):
        if name in ("utt2spk", "spk2utt") or not os.path.isfile(os.path.join(path, name)):
            continue
        if file_spec(name) is not None:
            names.append(name)
    return names


@dataclass
class ValidationReport:
    """Outcome of check_data_dir: problems (DataDirError, at most a few per check) and warnings."""
    path: str
    problems: list[DataDirError] = field(default_factory=list)
    num_problems: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.num_problems == 0


class _Checker:
    def __init__(self, path, report):
        self.path = path
        self.report = report

    def file(self, name):
        return os.path.join(self.path, name)

    def problem(self, counter, name, lineno, message):
        """Record a problem; ``counter`` is a one-element list limiting reports per check."""
        self.report.num_problems += 1
        counter[0] += 1
        if counter[0] <= MAX_PROBLEMS_PER_CHECK:
            self.report.problems.append(DataDirError(self.file(name), lineno, message))

    def scan(self, name, spec):
        """Parse one file, reporting format problems.

        Returns ``(rows, good)``: ``{key: (lineno, fields)}`` (fields include the key) of every
        line with a key, for comparing key sets, and of the well-formed lines only.
        """
        counter = [0]
        text = read_text(self.file(name))
        if not text:
            self.problem(counter, name, 0, "empty file")
            return {}, {}
        keyed = self._keyed_lines(counter, name, text)
        if not keyed:
            return {}, {}
        rows = self._index_keys(counter, name, keyed)
        self._check_key_order(counter, name, keyed)
        errors = _field_errors(spec, keyed)
        good = rows
        if errors:
            good = dict(rows)
            for lineno, f, error in sorted(errors, key=lambda e: e[0]):
                self.problem(counter, name, lineno, error)
                if rows[f[0]][0] == lineno:
                    good.pop(f[0], None)
        return rows, good

    def _keyed_lines(self, counter, name, text):
        """``[(lineno, fields)]`` of the non-empty lines of ``text``; reports line-ending problems and empty lines."""
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        else:
            self.problem(counter, name, len(lines), "last line has no newline")
        if "\r" in text:
            for i, line in enumerate(lines):
                if "\r" in line:
                    self.problem(counter, name, i + 1, "carriage return in line (DOS line endings? run dos2unix)")
        keyed = list(enumerate((line.split() for line in lines), 1))
        if all(f for _, f in keyed):
            return keyed
        for lineno, f in keyed:
            if not f:
                self.problem(counter, name, lineno, "empty line")
        return [(lineno, f) for lineno, f in keyed if f]

    def _index_keys(self, counter, name, keyed):
        """``{key: (lineno, fields)}``; for a duplicated key the first line wins and the others are reported."""
        rows = {f[0]: (lineno, f) for lineno, f in keyed}
        if len(rows) < len(keyed):
            first = {}
            for lineno, f in keyed:
                if f[0] in first:
                    self.problem(counter, name, lineno, f"duplicate key '{f[0]}' (first at line {first[f[0]][0]})")
                else:
                    first[f[0]] = rows[f[0]] = (lineno, f)
        return rows

    def _check_key_order(self, counter, name, keyed):
        """Report the first key out of C-locale order."""
        keys = [f[0] for _, f in keyed]
        if all(map(str.isascii, keys)) and keys == sorted(keys):
            return
        sort_keys = [c_sort_key(k) for k in keys]
        for j in range(1, len(keys)):
            if sort_keys[j] < sort_keys[j - 1]:
                self.problem(counter, name, keyed[j][0], f"not sorted: '{keys[j]}' after '{keys[j - 1]}' "
                             "(sort with LC_ALL=C, or run utils/fix_data_dir.sh)")
                return

    def compare_keys(self, ref_name, ref_rows, name, rows, what):
        """Report keys of ``ref_rows`` missing from ``rows`` and keys of ``rows`` not in ``ref_rows``."""
        if ref_rows.keys() == rows.keys():
            return
        counter = [0]
        for key, (lineno, _) in ref_rows.items():
            if key not in rows:
                self.problem(counter, name, 0, f"missing {what} '{key}' (listed at {self.file(ref_name)}:{lineno})")
        for key, (lineno, _) in rows.items():
            if key not in ref_rows:
                self.problem(counter, name, lineno, f"{what} '{key}' is not in {ref_name}")


def _field_errors(spec, keyed):
    """``[(lineno, fields, message)]`` for the lines of ``keyed`` with a wrong field count or a bad value."""
    lengths = [len(f) for _, f in keyed]
    low, high = spec.min_fields, spec.max_fields or max(lengths)
    errors = []
    if min(lengths) < low or max(lengths) > high:
        want = spec.field_count()
        errors = [(lineno, f, f"expected {want} fields, got {len(f)}")
                  for lineno, f in keyed if not low <= len(f) <= high]
    check = spec.check_value
    if check is not None and (spec.all_good is None or errors
                              or not spec.all_good([f[1] for _, f in keyed])):
        errors += [(lineno, f, error) for lineno, f in keyed if low <= len(f) <= high and (error := check(f))]
    return errors


def _check_spk2utt(checker, utt2spk, spk2utt):
    # Kaldi compares spk2utt with utt2spk_to_spk2utt.pl's output: each speaker's utterances in utt2spk order.
    order_counter = [0]
    for spk, (lineno, f) in spk2utt.items():
        keys = f[1:] if all(map(str.isascii, f[1:])) else [c_sort_key(u) for u in f[1:]]
        bad = next((i for i in range(1, len(keys)) if keys[i] < keys[i - 1]), None)
        if bad is not None:
            checker.problem(order_counter, "spk2utt", lineno,
                            f"utterances of speaker '{spk}' are not in utt2spk order ('{f[bad + 1]}' after "
                            f"'{f[bad]}'; rebuild it with utils/utt2spk_to_spk2utt.pl)")
    by_spk2utt = {utt: f[0] for _, f in spk2utt.values() for utt in f[1:]}
    listed = sum(len(f) - 1 for _, f in spk2utt.values())
    if listed == len(by_spk2utt) and by_spk2utt == {utt: f[1] for utt, (_, f) in utt2spk.items()}:
        return
    counter = [0]
    seen = {}
    for spk, (lineno, f) in spk2utt.items():
        for utt in f[1:]:
            if utt in seen:
                checker.problem(counter, "spk2utt", lineno, f"utterance '{utt}' also listed at line {seen[utt]}")
                continue
            seen[utt] = lineno
            if utt not in utt2spk:
                checker.problem(counter, "spk2utt", lineno, f"utterance '{utt}' of speaker '{spk}' is not in utt2spk")
            elif utt2spk[utt][1][1] != spk:
                checker.problem(counter, "spk2utt", lineno,
                                f"utterance '{utt}' listed under '{spk}', but utt2spk line "
                                f"{utt2spk[utt][0]} gives speaker '{utt2spk[utt][1][1]}'")
    for utt, (lineno, f) in utt2spk.items():
        if utt not in seen:
            checker.problem(counter, "utt2spk", lineno, f"utterance '{utt}' of speaker '{f[1]}' is missing from "
                            "spk2utt (rebuild it with utils/utt2spk_to_spk2utt.pl)")


def _check_speaker_order(checker, utt2spk):
    """Kaldi's default: utt2spk sorted by utterance is also sorted by speaker."""
    lines = sorted(utt2spk.values())
    speakers = [f[1] for _, f in lines]
    if all(a <= b for a, b in itertools.pairwise(speakers)) and all(s.isascii() for s in speakers):
        return
    previous = None
    for lineno, f in lines:
        if previous is not None and c_sort_key(f[1]) < c_sort_key(previous):
            checker.problem([0], "utt2spk", lineno,
                            f"speaker '{f[1]}' comes after speaker '{previous}': utt2spk must also be sorted by "
                            "speaker (make speaker ids prefixes of utterance ids, or use --no-spk-sort)")
            return
        previous = f[1]


def _check_text(checker, rows, non_print):
    counter = [0]
    for lineno, fields in rows.values():
        for word in fields[1:]:
            if any("\udc80" <= c <= "\udcff" for c in word):
                checker.problem(counter, "text", lineno, "invalid UTF-8")
                break
            if not non_print and not word.isprintable():
                checker.problem(counter, "text", lineno, "non-printable character (use --non-print to allow)")
                break
            if word in ("<s>", "</s>", "#0"):
                checker.problem(counter, "text", lineno, f"illegal symbol '{word}'")
                break


@gc_paused()
def check_data_dir(path: PathLike, need_feats: bool = False, need_wav: bool = False, need_text: bool = False,
                   spk_sort: bool = True, non_print: bool = False) -> ValidationReport:
    """Check data dir ``path``; returns a ValidationReport listing the problems found."""
    path = os.fspath(path)
    report = ValidationReport(path)
    checker = _Checker(path, report)
    if not os.path.isdir(path):
        report.num_problems = 1
        report.problems.append(DataDirError(path, 0, "no such data directory"))
        return report
    for name in ("utt2spk", "spk2utt"):
        if not os.path.isfile(checker.file(name)):
            checker.problem([0], name, 0, "no such file")
    if not report.ok:
        return report

    utt2spk, utt2spk_good = checker.scan("utt2spk", _SPECS["utt2spk"])
    spk2utt, spk2utt_good = checker.scan("spk2utt", FileSpec("spk"))
    _check_spk2utt(checker, utt2spk_good, spk2utt_good)
    if spk_sort:
        _check_speaker_order(checker, utt2spk_good)
    if len(spk2utt) == 1:
        report.warnings.append(f"{checker.file('spk2utt')}: only one speaker; this is probably a bad idea")

    present = set(table_files(path))
    requirements = (("text", need_text, "--no-text"), ("wav.scp", need_wav, "--no-wav"),
                    ("feats.scp", need_feats, "--no-feats"))
    for name, needed, option in requirements:
        if needed and name not in present:
            checker.problem([0], name, 0, f"no such file (if this is by design, specify {option})")
    _check_tables(checker, present, utt2spk, spk2utt, non_print)
    return report


def _check_tables(checker, present, utt2spk, spk2utt, non_print):
    """Scan each table file in ``present`` and compare its keys with those of the table it extends."""
    segments = segments_good = None
    if "segments" in present:
        segments, segments_good = checker.scan("segments", _SPECS["segments"])
        if "wav.scp" not in present:
            checker.problem([0], "segments", 0, "segments file exists but there is no wav.scp")
    if segments is not None:
        recordings = {}
        for lineno, fields in segments_good.values():
            recordings.setdefault(fields[1], (lineno, fields))
    else:
        recordings = utt2spk

    for name in sorted(present):
        spec = file_spec(name)
        rows, good = (segments, segments_good) if name == "segments" else checker.scan(name, spec)
        if name == "text":
            _check_text(checker, good, non_print)
        if name == "reco2file_and_channel" and any(f[2] == "1" for _, f in good.values()):
            checker.report.warnings.append(f"{checker.file(name)}: the channel should be marked as A or B, not 1")
        if spec.kind == "utt" or (spec.kind == "reco" and segments is None):
            checker.compare_keys("utt2spk", utt2spk, name, rows, "utterance")
        elif spec.kind == "spk":
            checker.compare_keys("spk2utt", spk2utt, name, rows, "speaker")
        else:
            checker.compare_keys("segments", recordings, name, rows, "recording")


def validate_data_dir(path: PathLike, need_feats: bool = False, need_wav: bool = False, need_text: bool = False,
                      spk_sort: bool = True, non_print: bool = False) -> list[str]:
    """Raise DataDirError naming the first problem of data dir ``path`` (and how many others); return warnings."""
    report = check_data_dir(path, need_feats, need_wav, need_text, spk_sort, non_print)
    if not report.ok:
        first = report.problems[0]
        more = report.num_problems - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''}; see utils/validate_data_dir.sh)" if more else ""
        raise DataDirError(first.path, first.lineno, first.detail + suffix)
    return report.warnings
