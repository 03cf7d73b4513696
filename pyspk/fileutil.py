"""Atomic file writing (outputs appear whole or not at all) and directory locks."""

import contextlib
import errno
import fcntl
import os
import socket
import tempfile

# What functions taking a file or directory name accept.
PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On any exception the temporary file is removed, so a killed or failed
    step never leaves a half-written output under the final name.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    # mkstemp makes the file 0600; outputs should follow the umask like any other file.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """Open a temporary file for writing that replaces ``path`` on success."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def no_space_message(error, path):
    """"no space left on <path>: ..." when ``error`` is a full-disk OSError, else None."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on {path} ({error.strerror}); free some space and re-run the same command"
    return None


class DirLockedError(RuntimeError):
    pass


@contextlib.contextmanager
def dir_lock(directory, what):
    """Hold an exclusive lock on ``directory`` (file ``.lock`` in it) for the ``with`` block.

    A second process asking for the same lock fails at once with
    DirLockedError naming the holder's pid and host, instead of both writing
    the same outputs. The kernel drops the lock when its holder dies, so a
    killed run never leaves the directory locked.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise DirLockedError(f"{directory} is in use by {what} ({holder}, lock {path}); "
                                 "wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
