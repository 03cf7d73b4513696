"""Kaldi x-vector directories: ``xvector.scp``, ``spk_xvector.scp``, ``num_utts.ark``.

Vectors are read with kaldiio, so archives written by Kaldi itself
(``extract_xvectors.sh``) work as well as ours. Single objects such as
``mean.vec`` and ``transform.mat`` are Kaldi binary (or text) files, readable
and writable by Kaldi's ``ivector-*`` and ``transform-vec`` programs.
"""

import io
import os
from collections.abc import Sequence

import kaldiio
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike

from pyspk.data.datadir import DataDirError, read_kv, read_scp
from pyspk.fileutil import PathLike, atomic_path


def read_vector_scp(path: PathLike) -> tuple[list[str], np.ndarray]:
    """Read a Kaldi vector scp into ``(keys, matrix)`` (float32, one row per key, file order).

    Every entry must load as a 1-D vector of the same dimension with finite
    values; otherwise the error names the scp file and line.
    """
    path = os.fspath(path)
    table = read_scp(path)  # checks the line format and duplicate keys
    if not table:
        raise DataDirError(path, 0, "no vectors")
    keys = list(table)
    matrix = _read_float_vectors_bulk(list(table.values()))
    if matrix is not None:
        bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
        if bad.size:
            raise DataDirError(path, int(bad[0]) + 1, f"'{keys[bad[0]]}' has non-finite values")
        return keys, matrix
    rows = []
    dim = None
    reader = kaldiio.load_scp_sequential(path)
    for lineno, key in enumerate(keys, 1):
        try:
            read_key, vector = next(reader)
        except Exception as e:  # kaldiio raises many kinds on corrupt archives
            raise DataDirError(path, lineno, f"cannot read vector of '{key}': {e}") from None
        vector = np.asarray(vector)
        if read_key != key or vector.ndim != 1:
            raise DataDirError(path, lineno, f"'{key}' is not a vector (shape {vector.shape})")
        if dim is None:
            dim = vector.size
        elif vector.size != dim:
            raise DataDirError(path, lineno, f"'{key}' has dimension {vector.size}, the first vector has {dim}")
        if not np.all(np.isfinite(vector)):
            raise DataDirError(path, lineno, f"'{key}' has non-finite values")
        rows.append(vector)
    return keys, np.stack(rows).astype(np.float32, copy=False)


_FLOAT_VECTOR_HEADER = np.frombuffer(b"\0BFV \x04", dtype=np.uint8)  # binary, float vector, 4-byte size


def _read_float_vectors_bulk(locations: Sequence[str]) -> np.ndarray | None:
    """The vectors at ``locations`` ("<ark>:<offset>"), gathered from each ark in one step; None unless
    every one is a binary float vector in a plain file, all of one dimension (kaldiio then reads them one
    by one: the same values in about twice the time)."""
    by_ark: dict[str, list[tuple[int, int]]] = {}
    for row, location in enumerate(locations):
        ark, _, offset = location.rpartition(":")
        if not offset.isdigit():  # pipes, ranges
            return None
        by_ark.setdefault(ark, []).append((row, int(offset)))
    matrix = None
    head_size = len(_FLOAT_VECTOR_HEADER) + 4
    for ark, entries in by_ark.items():
        if not os.path.isfile(ark) or os.path.getsize(ark) < head_size:
            return None
        rows, offsets = np.array(entries, dtype=np.int64).T
        data = np.memmap(ark, dtype=np.uint8, mode="r")
        if offsets.max() + head_size > data.size:
            return None
        heads = sliding_window_view(data, head_size)[offsets]
        dims = np.ascontiguousarray(heads[:, -4:]).view("<i4").ravel()
        dim = int(dims[0]) if matrix is None else matrix.shape[1]
        if dim < 1 or (heads[:, :-4] != _FLOAT_VECTOR_HEADER).any() or (dims != dim).any():
            return None
        starts = offsets + head_size
        if starts.max() + 4 * dim > data.size:
            return None
        if matrix is None:
            matrix = np.empty((len(locations), dim), dtype=np.float32)
        matrix[rows] = sliding_window_view(data, 4 * dim)[starts].view("<f4")
    return matrix


def write_vector_scp(ark_path: PathLike, scp_path: PathLike, keys: Sequence[str], matrix: ArrayLike) -> None:
    """Write rows of ``matrix`` as Kaldi float vectors to an ark and its scp (both atomic)."""
    ark_path, scp_path = os.fspath(ark_path), os.fspath(scp_path)
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(keys):
        raise ValueError(f"need one row per key: {len(keys)} keys, matrix {matrix.shape}")
    scp_lines = io.StringIO()
    with atomic_path(ark_path) as tmp_ark:
        with open(tmp_ark, "wb") as ark:
            kaldiio.save_ark(ark, {key: row for key, row in zip(keys, matrix, strict=True)}, scp=scp_lines)
        offsets = [line.rsplit(":", 1)[1] for line in scp_lines.getvalue().splitlines()]
        with atomic_path(scp_path) as tmp_scp, open(tmp_scp, "w", encoding="utf-8") as scp:
            for key, offset in zip(keys, offsets, strict=True):
                scp.write(f"{key} {ark_path}:{offset}\n")


def read_num_utts(path: PathLike) -> dict[str, int]:
    """Read ``num_utts.ark`` (text ``spk N`` lines) into a dict of positive ints."""
    counts = read_kv(path, int)
    for lineno, (spk, count) in enumerate(counts.items(), 1):
        if count < 1:
            raise DataDirError(path, lineno, f"number of utterances of '{spk}' must be positive, got {count}")
    return counts


def read_kaldi_object(path: PathLike) -> np.ndarray:
    """Read a Kaldi vector or matrix file (binary or text), e.g. ``mean.vec``, ``transform.mat``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataDirError(path, 0, "no such file")
    try:
        value = kaldiio.load_mat(path)
    except Exception as e:
        raise DataDirError(path, 0, f"not a Kaldi vector or matrix: {e}") from None
    value = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(value)):
        raise DataDirError(path, 0, "has non-finite values")
    return value


def write_kaldi_object(path: PathLike, value: ArrayLike) -> None:
    """Write a vector or matrix as a Kaldi binary float object (what Kaldi's tools write)."""
    with atomic_path(path) as tmp:
        kaldiio.save_mat(tmp, np.asarray(value, dtype=np.float32))


class EmbeddingDir:
    """A Kaldi x-vector directory (``xvector.scp`` and optionally speaker means)."""

    def __init__(self, path: PathLike):
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise DataDirError(self.path, 0, "embedding directory does not exist")

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def has(self, name: str) -> bool:
        return os.path.isfile(self.file(name))

    def xvectors(self) -> tuple[list[str], np.ndarray]:
        """Utterance embeddings: ``(keys, matrix)``."""
        return read_vector_scp(self.file("xvector.scp"))

    def spk_xvectors(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Speaker-mean embeddings with their utterance counts: ``(keys, matrix, counts)``."""
        keys, matrix = read_vector_scp(self.file("spk_xvector.scp"))
        num_utts_path = self.file("num_utts.ark")
        num_utts = read_num_utts(num_utts_path)
        missing = [key for key in keys if key not in num_utts]
        if missing:
            raise DataDirError(num_utts_path, 0, f"no count for speaker '{missing[0]}' "
                               f"({len(missing)} speakers of spk_xvector.scp missing)")
        return keys, matrix, np.array([num_utts[key] for key in keys], dtype=np.int64)

    def embeddings(self, level: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(keys, matrix, counts)`` at ``level`` 'utt' (counts all 1) or 'spk'."""
        if level == "utt":
            keys, matrix = self.xvectors()
            return keys, matrix, np.ones(len(keys), dtype=np.int64)
        if level == "spk":
            return self.spk_xvectors()
        raise ValueError(f"level must be 'utt' or 'spk', got '{level}'")

    def mean(self) -> np.ndarray:
        """Global mean: ``mean.vec`` if the directory has one, else the mean of ``xvector.scp``."""
        if self.has("mean.vec"):
            return read_kaldi_object(self.file("mean.vec")).ravel()
        return self.xvectors()[1].mean(axis=0, dtype=np.float64)
