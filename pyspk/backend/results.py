"""``exp/results.txt``: one line per system, replaced in place when a system is re-scored."""

import contextlib
import fcntl
import os
from collections.abc import Iterable

from pyspk.fileutil import PathLike, atomic_open


def format_result(name: str, eer: float, min_dcfs: Iterable[tuple[float, float]], trials_path: PathLike) -> str:
    """``system=<name> EER=3.224% minDCF(p=0.01)=0.3492 ... trials=<file>`` (Kaldi's precisions)."""
    if any(c.isspace() for c in name) or not name:
        raise ValueError(f"system name must be non-empty without spaces, got '{name}'")
    fields = [f"system={name}", f"EER={100 * eer:.4g}%"]
    fields += [f"minDCF(p={p:g})={value:.4f}" for p, value in min_dcfs]
    fields.append(f"trials={trials_path}")
    return " ".join(fields)


def update_results(path: PathLike, name: str, line: str) -> None:
    """Put ``line`` into ``path``, replacing the line of the same system (atomic, process-safe)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    prefix = f"system={name} "
    # Lock the directory (no stray lock file) so parallel scoring jobs do not lose lines.
    lock = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lines = []
        with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
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
