"""Reading one Kaldi matrix or vector by its rxspecifier (``file.ark:offset``), with a reason when it fails.

kaldiio's own errors on a cut or corrupt archive say nothing of the file: an
entry past the end of a truncated ark fails with a bare ``AssertionError``,
one cut in its middle with ``cannot reshape array``. :func:`load_matrix`
names the file, the offset and the file's size instead.
"""

import os
import re
from collections.abc import MutableMapping
from typing import IO, Any

import kaldiio
import numpy as np

OFFSET = re.compile(r"^(?P<path>.+):(?P<offset>\d+)(\[[^\]]*\])?$")


class MatrixReadError(ValueError):
    """A feature/vector entry that cannot be read; the message names the file and why."""


def describe_failure(spec: str, error: BaseException) -> str:
    """Why ``spec`` could not be read: its file and offset, and a truncated file said as such."""
    detail = str(error).strip() or type(error).__name__
    match = OFFSET.match(spec.strip())
    if spec.rstrip().endswith("|") or match is None:
        return f"cannot read '{spec}': {detail}"
    path, offset = match["path"], int(match["offset"])
    if not os.path.isfile(path):
        return f"cannot read '{spec}': no such file '{path}'"
    size = os.path.getsize(path)
    if offset >= size:
        return (f"cannot read '{spec}': the entry starts at byte {offset} but {path} has {size} bytes "
                f"(the file is truncated or was rewritten: make the features again)")
    return (f"cannot read '{spec}': {detail} ({path} has {size} bytes: truncated or corrupt? "
            f"make the features again)")


def load_matrix(spec: str, fd_dict: MutableMapping[str, IO[Any]] | None = None, utt: str | None = None) -> np.ndarray:
    """``kaldiio.load_mat(spec)``; any failure is a :class:`MatrixReadError` naming the file (see module doc),
    and the utterance ``utt`` when given."""
    try:
        if fd_dict is None:
            return kaldiio.load_mat(spec)
        return kaldiio.load_mat(spec, fd_dict=fd_dict)
    except Exception as e:  # kaldiio raises many kinds (AssertionError, ValueError, EOFError ...) on a bad entry
        where = f"utterance '{utt}': " if utt is not None else ""
        raise MatrixReadError(where + describe_failure(spec, e)) from None
