"""Command-line pieces every entry point in pyspk/bin shares.

Option values follow Kaldi: booleans are ``true``/``false`` and nothing else,
so a typo fails at parse time instead of meaning "false".
"""

import argparse
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TextIO

from pyspk.data.datadir import DataDirError


def bool_arg(text: str) -> bool:
    """Kaldi-style boolean option value: 'true' or 'false'."""
    if text in ("true", "false"):
        return text == "true"
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def positive_int(text: str) -> int:
    """An option value that must be an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N (default auto)")


def new_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose --help prints the entry point's docstring as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


@contextmanager
def user_errors_exit(prog: str, errors: tuple[type[BaseException], ...],
                     describe: Callable[[BaseException], str | None] = str) -> Iterator[None]:
    """Turn the errors a user can fix into "<prog>: error: ..." on stderr and the log, and exit status 1.

    describe(error) gives the message; None means the error is not the user's
    (it propagates with its traceback).
    """
    try:
        yield
    except errors as e:
        message = describe(e)
        if message is None:
            raise
        if logging.getLogger().handlers:  # the run's log (train.log) records why it stopped
            logging.getLogger(prog).error("%s", message)
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(1)


def report_data_dir_operation(prog: str, operation: Callable[[], Iterable[str]], stream: TextIO | None = None) -> None:
    """Run a data-dir operation of pyspk.data.ops and print its messages as "<prog>: ..." (Kaldi's utils/ style).

    A data-dir or OS error is printed as "<prog>: <error>" on stderr and exits with status 1.
    """
    try:
        messages = operation()
    except (DataDirError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        sys.exit(1)
    for message in messages:
        print(f"{prog}: {message}", file=stream or sys.stdout)
