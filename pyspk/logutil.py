"""Logging set-up shared by the entry points in pyspk/bin."""

import logging
import os
import sys


def setup_logging(log_file=None, level=logging.INFO, rank=0):
    """Log to stderr (and ``log_file``) with Kaldi-like prefixes; quiet on non-zero ranks."""
    fmt = "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s"
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level if rank == 0 else logging.WARNING, format=fmt, handlers=handlers, force=True)
