"""Read-only string tables in a few numpy arrays, for what forked loader workers read.

A dict or list of millions of Python strings (a VoxCeleb2 training list with
its augmented copies: 5.5 M feats.scp entries) is shared with forked
DataLoader workers copy-on-write, but reading it writes: every lookup changes
the reference counts of the objects it touches, so each worker ends up with its
own copy of every page it has read, gigabytes per worker. Packed into numpy
arrays the strings are no objects of their own: a lookup reads the arrays and
returns a new ``str``, and the pages stay shared between the workers.
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

from pyspk.data.datadir import ENCODING, c_sorted


def _encode(text: str) -> bytes:
    return text.encode(ENCODING["encoding"], ENCODING["errors"])


def _decode(data: bytes) -> str:
    return data.decode(ENCODING["encoding"], ENCODING["errors"])


class PackedStrings(Sequence[str]):
    """A read-only sequence of strings stored as one byte array and the offsets into it."""

    def __init__(self, strings: Iterable[str]):
        encoded = [_encode(s) for s in strings]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._bytes = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} strings")
        return _decode(self._bytes[self._offsets[index]:self._offsets[index + 1]].tobytes())


class PackedScp(Mapping[str, str]):
    """A read-only ``{key: value}`` of strings (a feats.scp): keys sorted in byte order in a fixed-width
    numpy bytes array (binary search), values as :class:`PackedStrings`.

    Keys may not hold NUL characters (numpy's fixed-width bytes drop trailing ones); Kaldi ids never do.
    """

    def __init__(self, table: Mapping[str, str]):
        keys = c_sorted(table)
        self._keys = np.array([_encode(k) for k in keys], dtype=bytes)
        self._values = PackedStrings(table[k] for k in keys)

    def _find(self, key: object) -> int:
        """The row of ``key``, -1 when absent."""
        if not isinstance(key, str) or not len(self._keys):
            return -1
        encoded = _encode(key)
        row = int(np.searchsorted(self._keys, encoded))
        return row if row < len(self._keys) and self._keys[row] == encoded else -1

    def __getitem__(self, key: str) -> str:
        row = self._find(key)
        if row < 0:
            raise KeyError(key)
        return self._values[row]

    def __contains__(self, key: object) -> bool:
        return self._find(key) >= 0

    def __iter__(self) -> Iterator[str]:
        return (_decode(key) for key in self._keys.tolist())

    def __len__(self) -> int:
        return len(self._keys)


class PackedLists(PackedScp, Mapping[str, list[str]]):
    """As :class:`PackedScp` for ``{key: [word, ...]}`` tables (words without whitespace)."""

    def __init__(self, table: Mapping[str, Sequence[str]]):
        super().__init__({key: " ".join(words) for key, words in table.items()})

    def __getitem__(self, key: str) -> list[str]:
        return super().__getitem__(key).split()
