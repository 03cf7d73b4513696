"""A corpus's own tab-separated listing (e.g. ``utts.tsv``): a header row, then one row per item.

The recipes' data preparation (``egs/*/v1/local/prepare_data.py``) reads theirs
here, so a wrong header or a row with another number of columns stops with the
same message, naming the file and line, whatever the corpus.
"""

import csv
from collections.abc import Iterator, Sequence

from pyspk.fileutil import PathLike


def read_tsv_rows(path: PathLike, columns: Sequence[str],
                  error: type[Exception] = ValueError) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield ``(where, row)`` for each row of ``path`` (``where`` is ``path:line``, ``row`` maps column -> field).

    The header must be ``columns``; a wrong header or a row of another length raises ``error`` naming the line.
    """
    columns = list(columns)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header != columns:
            raise error(f"{path}:1: expected the header {' '.join(columns)}, got {' '.join(header or [])}")
        for fields in reader:
            where = f"{path}:{reader.line_num}"
            if len(fields) != len(columns):
                raise error(f"{where}: expected {len(columns)} tab-separated columns, got {len(fields)}")
            yield where, dict(zip(columns, fields, strict=True))
