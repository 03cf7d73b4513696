"""``exp/results.txt``: one line per system, replaced in place when a system is re-scored.

A line records the trials and the scores file it was computed from
(``... trials=<file> scores=<file>``). A line of the same system made from
*other* scores (another scores file or trial list) is not replaced unless
asked (``overwrite``): two experiments given one name would otherwise
silently take each other's place.
"""

import contextlib
import fcntl
import os
import re
from collections.abc import Iterable

from pyspk.fileutil import PathLike, atomic_open


class ResultConflict(ValueError):
    """The results file holds a line of the same system made from other scores."""


def format_result(name: str, eer: float, min_dcfs: Iterable[tuple[float, float]], trials_path: PathLike,
                  scores_path: PathLike | None = None, act_dcfs: Iterable[tuple[float, float]] = ()) -> str:
    """``system=<name> EER=3.224% minDCF(p=0.01)=0.3492 ... [actDCF(p=0.01)=0.4012 ...] trials=<file>[ scores=<file>]``
    (Kaldi's precisions; actDCF of calibrated scores only)."""
    if any(c.isspace() for c in name) or not name:
        raise ValueError(f"system name must be non-empty without spaces, got '{name}'")
    fields = [f"system={name}", f"EER={100 * eer:.4g}%"]
    fields += [f"minDCF(p={p:g})={value:.4f}" for p, value in min_dcfs]
    fields += [f"actDCF(p={p:g})={value:.4f}" for p, value in act_dcfs]
    fields.append(f"trials={trials_path}")
    if scores_path is not None:
        fields.append(f"scores={scores_path}")
    return " ".join(fields)


FIELD = re.compile(r"([\w.-]+(?:\(p=[^)]*\))?)=(.*)")  # key, or key(p=<prior>) as minDCF(p=0.01), = value


def line_fields(line: str) -> dict[str, str]:
    """``{key: value}`` of a results line's ``key=value`` fields (system, EER, minDCF(p=0.01), actDCF(p=0.01),
    trials, scores ...)."""
    return dict(match.groups() for match in map(FIELD.fullmatch, line.split()) if match)


def _same_file(a: str, b: str) -> bool:
    if os.path.normpath(a) == os.path.normpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def conflict(old_line: str, new_line: str) -> str | None:
    """Why ``new_line`` may not replace ``old_line`` of the same system (None: it may).

    Made from other scores: another ``scores=`` file, or another ``trials=``
    list (a line written before the scores were recorded is judged by its trials).
    """
    old, new = line_fields(old_line), line_fields(new_line)
    for key in ("scores", "trials"):
        if key in old and key in new and not _same_file(old[key], new[key]):
            return f"{key} {old[key]}, not {new[key]}"
    return None


def read_results(path: PathLike) -> list[str]:
    """The lines of a results file ([] when it does not exist)."""
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
        return f.read().splitlines()
    return []


def check_results(path: PathLike, name: str, line: str, lines: list[str] | None = None) -> None:
    """Raise :class:`ResultConflict` when ``path`` (its ``lines``, when already read) has a line of
    ``name`` that ``line`` may not replace."""
    prefix = f"system={name} "
    for old in read_results(path) if lines is None else lines:
        if old.startswith(prefix):
            why = conflict(old, line)
            if why is not None:
                raise ResultConflict(
                    f"{path} already has a line of system '{name}' made from other scores ({why}):\n  {old}\n"
                    f"it is kept; name this system otherwise (--name), write another results file (--results), "
                    f"or replace the line with --overwrite true")


def update_results(path: PathLike, name: str, line: str, overwrite: bool = True) -> None:
    """Put ``line`` into ``path``, replacing the line of the same system (atomic, process-safe).

    ``overwrite`` False: a line of the same system made from other scores is
    kept and :class:`ResultConflict` raised (see :func:`conflict`).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    prefix = f"system={name} "
    # Lock the directory (no stray lock file) so parallel scoring jobs do not lose lines.
    lock = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lines = read_results(path)
        if not overwrite:
            check_results(path, name, line, lines)
        updated, replaced = [], False
        for old in lines:
            if not old.startswith(prefix):
                updated.append(old)
            elif not replaced:  # first line of this system is replaced, any later ones dropped
                updated.append(line)
                replaced = True
        if not replaced:
            updated.append(line)
        with atomic_open(path, "w", encoding="utf-8") as f:
            f.write("".join(f"{entry}\n" for entry in updated))
    finally:
        os.close(lock)
