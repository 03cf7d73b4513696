"""Kaldi's split_data.sh: a data dir cut into N parts, whole speakers per part (or single utterances)."""

import bisect
import contextlib
import fcntl
import itertools
import os
from collections.abc import Iterator, Sequence

from pyspk.data.datadir import DataDirError, gc_paused
from pyspk.data.tables import DataTables, is_data_file, write_tables
from pyspk.fileutil import PathLike


def _balanced_cuts(counts, num_parts):
    """End positions (exclusive) of ``num_parts`` contiguous, non-empty groups of ``counts`` with near-equal sums."""
    cum = list(itertools.accumulate(counts))
    n, total = len(cum), cum[-1]
    ends = []
    previous = 0
    for k in range(1, num_parts):
        target = total * k / num_parts
        after = bisect.bisect_left(cum, target)  # the first group end whose sum reaches the target
        before_sum = cum[after - 1] if after > 0 else 0
        cut = after + 1 if cum[after] - target <= target - before_sum else after
        previous = min(max(cut, previous + 1), n - (num_parts - k))
        ends.append(previous)
    return [*ends, n]


def split_dir_name(path: PathLike, num_splits: int, per_utt: bool = False) -> str:
    """Where ``split_data_dir`` writes the parts: ``path/split<N>[utt]``."""
    return os.path.join(os.fspath(path), f"split{num_splits}{'utt' if per_utt else ''}")


def _split_up_to_date(path, split_root, num_splits):
    sources = [n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n)) and is_data_file(n)]
    allowed = set(sources) | {"spk2utt"}  # always written, even when the source lacks it
    for i in range(1, num_splits + 1):
        part = os.path.join(split_root, str(i))
        if not os.path.isdir(part):
            return False
        for name in sources:
            target = os.path.join(part, name)
            if not os.path.isfile(target) or os.path.getmtime(target) < os.path.getmtime(os.path.join(path, name)):
                return False
        if any(is_data_file(n) and n not in allowed for n in os.listdir(part)):
            return False
    return True


@contextlib.contextmanager
def _split_lock(path: str) -> Iterator[None]:
    """Serialise concurrent splits of one directory (without a lock when the directory is read-only)."""
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(open(os.path.join(path, ".split_lock"), "a"))
        except OSError:
            handle = None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _mismatch_warnings(data, path):
    """Kaldi's warnings when feats.scp or text do not cover utt2spk."""
    return [f"warning: #lines of (utt2spk, {name}) is ({len(data.utt2spk)}, {len(data.tables[name])}); "
            f"you can use utils/fix_data_dir.sh {path} to fix this"
            for name in ("feats.scp", "text") if name in data.tables and len(data.tables[name]) != len(data.utt2spk)]


def _split_parts(data, path, num_splits, per_utt):
    """The utterances of each part: contiguous groups (speakers or utterances) with near-equal counts."""
    if per_utt:
        groups, unit = [[u] for u in data.utts()], "utterances"
    else:
        groups, unit = list(data.spk2utt().values()), "speakers"
    if len(groups) < num_splits:
        raise DataDirError(os.path.join(path, "utt2spk"), 0,
                           f"cannot split {len(groups)} {unit} into {num_splits} parts"
                           + ("" if per_utt else " (use --per-utt to split speakers)"))
    ends = _balanced_cuts([len(g) for g in groups], num_splits)
    return [[u for group in groups[start:end] for u in group] for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def _write_parts(data: DataTables, split_root: str, parts: Sequence[Sequence[str]]) -> None:
    for i, selected in enumerate(data.partition(parts), 1):
        part = os.path.join(split_root, str(i))
        written = write_tables(part, selected)
        for name in os.listdir(part):
            if name not in written and is_data_file(name):
                os.remove(os.path.join(part, name))


@gc_paused()
def split_data_dir(path: PathLike, num_splits: int, per_utt: bool = False) -> tuple[str, list[str]]:
    """Kaldi's split_data.sh: ``path/split<N>[utt]/{1..N}``; whole speakers per part unless ``per_utt``.

    Parts are contiguous in sorted order (utterances, or speakers by first utterance) with
    near-equal utterance counts. Does nothing when the parts are newer than the sources.
    Returns ``(split_root, messages)``.
    """
    path = os.fspath(path)
    if num_splits < 1:
        raise ValueError(f"number of splits must be positive, got {num_splits}")
    split_root = split_dir_name(path, num_splits, per_utt)
    with _split_lock(path):
        if _split_up_to_date(path, split_root, num_splits):
            return split_root, []
        data = DataTables(path)
        messages = _mismatch_warnings(data, path)
        _write_parts(data, split_root, _split_parts(data, path, num_splits, per_utt))
    return split_root, messages
