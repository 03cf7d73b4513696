"""Reading and writing Kaldi data directories.

All Python code reads and writes data dirs through this module. Files are
written sorted under C-locale byte order (Kaldi's ``LC_ALL=C sort``) and
atomically; parse errors name the file and line.
"""

import contextlib
import gc
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TextIO

import numpy as np

from pyspk.fileutil import PathLike, atomic_open

# Kaldi files are byte strings: undecodable bytes survive a read/write round
# trip, and only "\n" ends a line (a stray "\r" stays inside the line).
ENCODING = dict(encoding="utf-8", errors="surrogateescape")


def open_text(path: PathLike, mode: str = "r") -> TextIO:
    """Open a data-dir file the way Kaldi reads it (see ENCODING)."""
    return open(path, mode, newline="\n", **ENCODING)


class DataDirError(ValueError):
    """A malformed data-dir file; the message names the file and line."""

    def __init__(self, path: PathLike, lineno: int, message: str):
        where = f"{path}:{lineno}" if lineno else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.lineno = lineno
        self.detail = message


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building big tables of strings.

    Millions of new lists and tuples trigger full collections that scan them
    all again and again; data-dir tables hold no reference cycles.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def c_sort_key(key: str) -> bytes:
    """Sort key equal to ``LC_ALL=C sort`` (byte order of UTF-8)."""
    return key.encode("utf-8", "surrogateescape")


def c_sorted(keys: Iterable[str]) -> list[str]:
    """``sorted(keys, key=c_sort_key)``, faster: code-point order equals UTF-8 byte order except for
    undecodable bytes, so plain sorting is used unless a key holds some."""
    keys = list(keys)
    if all(map(str.isascii, keys)) or not any(map(_has_raw_bytes, keys)):
        return sorted(keys)
    return sorted(keys, key=c_sort_key)


def _has_raw_bytes(text):
    return any("\udc80" <= c <= "\udcff" for c in text)


def read_text(path: PathLike) -> str:
    """The whole text of a data-dir file (see ENCODING)."""
    if not os.path.isfile(path):
        raise DataDirError(path, 0, "no such file")
    with open_text(path) as f:
        return f.read()


def read_lines(path: PathLike) -> tuple[list[str], bool]:
    """All lines of a file without their newlines, and whether the last line had one."""
    lines = read_text(path).split("\n")
    if lines[-1] == "":
        lines.pop()
        return lines, True
    return lines, False


def iter_raw_lines(path: PathLike) -> Iterator[tuple[int, str, bool]]:
    """Yield ``(lineno, line, has_newline)`` with the newline removed; nothing else is stripped."""
    lines, final_newline = read_lines(path)
    last = len(lines)
    for lineno, line in enumerate(lines, 1):
        yield lineno, line, final_newline or lineno < last


def iter_lines(path: PathLike) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(lineno, fields)`` for each line of a whitespace-separated file."""
    for lineno, line, _ in iter_raw_lines(path):
        fields = line.split()
        if not fields:
            raise DataDirError(path, lineno, "empty line")
        yield lineno, fields


def check_utf8_keys(path: PathLike) -> None:
    """Fail (file:line) on a first field that is not valid UTF-8.

    Data-dir files keep such bytes, but Kaldi archives written by pyspk need
    UTF-8 keys, so steps writing an archive check their key file first.
    """
    for lineno, line, _ in iter_raw_lines(path):
        key = line.split(maxsplit=1)[0] if line.strip() else ""
        if _has_raw_bytes(key):
            shown = key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise DataDirError(path, lineno, f"id '{shown}' is not valid UTF-8; rename it")


def read_table(path: PathLike, min_fields: int = 2, max_fields: int | None = None) -> dict[str, list[str]]:
    """Read ``key value...`` lines into a dict of key -> list of values."""
    table = {}
    for lineno, fields in iter_lines(path):
        if len(fields) < min_fields or (max_fields and len(fields) > max_fields):
            if max_fields == min_fields:
                want = f"{min_fields}"
            elif max_fields:
                want = f"{min_fields} to {max_fields}"
            else:
                want = f"at least {min_fields}"
            raise DataDirError(path, lineno, f"expected {want} fields, got {len(fields)}")
        key = fields[0]
        if key in table:
            raise DataDirError(path, lineno, f"duplicate key '{key}'")
        table[key] = fields[1:]
    return table


def read_scp(path: PathLike) -> dict[str, str]:
    """Read a ``key rest-of-line`` file (wav.scp, feats.scp); values keep inner spaces."""
    table = {}
    for lineno, line, _ in iter_raw_lines(path):
        parts = line.split(maxsplit=1)
        if not parts:
            raise DataDirError(path, lineno, "empty line")
        if len(parts) != 2:
            raise DataDirError(path, lineno, "expected '<key> <value>'")
        if parts[0] in table:
            raise DataDirError(path, lineno, f"duplicate key '{parts[0]}'")
        table[parts[0]] = parts[1].strip()
    return table


def read_kv(path: PathLike, convert: Callable[[str], Any] = str) -> dict[str, Any]:
    """Read a two-column file (utt2spk, utt2num_frames ...) into a dict."""
    table = {}
    for lineno, fields in iter_lines(path):
        if len(fields) != 2:
            raise DataDirError(path, lineno, f"expected 2 fields, got {len(fields)}")
        if fields[0] in table:
            raise DataDirError(path, lineno, f"duplicate key '{fields[0]}'")
        try:
            table[fields[0]] = convert(fields[1])
        except ValueError:
            raise DataDirError(path, lineno, f"bad value '{fields[1]}'") from None
    return table


def format_table(table: Mapping[str, Any]) -> str:
    """The text of ``write_table``: sorted ``key value`` lines (a bare key when the value is empty)."""
    keys = c_sorted(table)
    values = list(map(table.__getitem__, keys))
    if "" not in values and set(map(type, values)) <= {str}:
        return "".join(map("{} {}\n".format, keys, values))
    return _format_lines(keys, values)


def _format_lines(keys, values):
    lines = []
    for key, value in zip(keys, values, strict=True):
        text = " ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
        lines.append(f"{key} {text}\n" if text else f"{key}\n")
    return "".join(lines)


def write_table(path: PathLike, table: Mapping[str, Any]) -> None:
    """Write a dict as sorted ``key value`` lines; list values are space-joined."""
    with atomic_open(path, "w", newline="\n", **ENCODING) as f:
        f.write(format_table(table))


def utt2spk_to_spk2utt(utt2spk: Mapping[str, str]) -> dict[str, list[str]]:
    """Invert utt2spk; utterance lists follow the sorted utterance order."""
    spk2utt = {}
    for utt in c_sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return spk2utt


def spk2utt_to_utt2spk(spk2utt: Mapping[str, Iterable[str]]) -> dict[str, str]:
    return {utt: spk for spk, utts in spk2utt.items() for utt in utts}


def read_trials(path: PathLike) -> list[tuple[str, str, bool]]:
    """Read a Kaldi trials file: ``enroll test target|nontarget`` per line.

    Returns a list of ``(enroll, test, is_target)``.
    """
    trials = []
    for lineno, fields in iter_lines(path):
        if len(fields) != 3:
            raise DataDirError(path, lineno, f"expected 'enroll test target|nontarget', got {len(fields)} fields")
        if fields[2] not in ("target", "nontarget"):
            raise DataDirError(path, lineno, f"third field must be 'target' or 'nontarget', got '{fields[2]}'")
        trials.append((fields[0], fields[1], fields[2] == "target"))
    return trials


def trials_from_pairs(names: list[str], first: np.ndarray, second: np.ndarray, targets: np.ndarray,
                      nontargets: np.ndarray, rng: np.random.Generator) -> list[tuple[str, str, bool]]:
    """``(enroll, test, is_target)`` sorted as Kaldi sorts, from chosen pairs of ``names``.

    ``targets`` and ``nontargets`` index the pairs ``(first[i], second[i])``; which side of a
    pair enrols is drawn from ``rng``, so a list does not enrol the first utterance by name.
    """
    chosen = np.concatenate([np.asarray(targets, dtype=np.int64), np.asarray(nontargets, dtype=np.int64)])
    is_target = np.arange(len(chosen)) < len(targets)
    swap = rng.random(len(chosen)) < 0.5
    enroll = np.where(swap, second[chosen], first[chosen])
    test = np.where(swap, first[chosen], second[chosen])
    trials = [(names[e], names[t], bool(x)) for e, t, x in zip(enroll, test, is_target, strict=True)]
    trials.sort(key=lambda trial: (c_sort_key(trial[0]), c_sort_key(trial[1])))
    return trials


def write_trials(path: PathLike, trials: Iterable[tuple[str, str, bool]]) -> None:
    """Write ``(enroll, test, is_target)`` triples in Kaldi trials format (order kept)."""
    with atomic_open(path, "w", newline="\n", **ENCODING) as f:
        for enroll, test, is_target in trials:
            f.write(f"{enroll} {test} {'target' if is_target else 'nontarget'}\n")


class DataDir:
    """A Kaldi data directory; files are read lazily on access."""

    def __init__(self, path: PathLike):
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise DataDirError(self.path, 0, "data directory does not exist")

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def has(self, name: str) -> bool:
        return os.path.isfile(self.file(name))

    def utt2spk(self) -> dict[str, str]:
        return read_kv(self.file("utt2spk"))

    def spk2utt(self) -> dict[str, list[str]]:
        return read_table(self.file("spk2utt"))

    def wav_scp(self) -> dict[str, str]:
        return read_scp(self.file("wav.scp"))

    def feats_scp(self) -> dict[str, str]:
        return read_scp(self.file("feats.scp"))

    def segments(self) -> dict[str, tuple[str, float, float]] | None:
        """utt -> (recording, start, end) in seconds, or None when absent."""
        if not self.has("segments"):
            return None
        path = self.file("segments")
        segments = {}
        for lineno, fields in iter_lines(path):
            if len(fields) != 4:
                raise DataDirError(path, lineno, "expected '<utt> <recording> <start> <end>'")
            try:
                start, end = float(fields[2]), float(fields[3])
            except ValueError:
                raise DataDirError(path, lineno, "start and end must be numbers") from None
            if fields[0] in segments:
                raise DataDirError(path, lineno, f"duplicate key '{fields[0]}'")
            segments[fields[0]] = (fields[1], start, end)
        return segments

    def utt2num_frames(self) -> dict[str, int]:
        return read_kv(self.file("utt2num_frames"), int)

    def utts(self) -> list[str]:
        return c_sorted(self.utt2spk())
