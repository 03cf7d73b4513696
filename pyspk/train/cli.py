"""Shared command line of the trainer entry points (pyspk.bin.train_*).

Each entry point keeps its own docstring (its usage text) and objective;
the options, the positional arguments and the handling of user errors
(message on stderr and in the log, exit status 1, no traceback) are here.
"""

import argparse
import logging
import sys

from pyspk.config import ConfigError, load_config
from pyspk.data.datadir import DataDirError
from pyspk.fileutil import DirLockedError, no_space_message
from pyspk.models import BackboneFileError
from pyspk.train.checkpoint import CheckpointError
from pyspk.train.loop import Trainer

# Errors a user can fix (bad config, data dir, backbone file, diverged loss, unreadable
# checkpoints, an experiment dir in use).
USER_ERRORS = (ConfigError, DataDirError, BackboneFileError, FloatingPointError, CheckpointError,
               DirLockedError)


def training_parser(doc, example_config, add_options=None):
    """Parser of "--config YAML [--device D] [options] [--max-steps N] <data-dir> <exp-dir> [overrides]".

    add_options(parser), when given, adds the trainer's own options after --device.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help=f"YAML training config (e.g. {example_config})")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    if add_options is not None:
        add_options(parser)
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after this many steps in total, with a checkpoint (re-run to continue)")
    parser.add_argument("data_dir")
    parser.add_argument("exp_dir")
    parser.add_argument("overrides", nargs="*", help="config overrides, section.key=value")
    return parser


def run_training_cli(prog, parser, make_objective, argv=None, build_config=None):
    """Parse argv with parser and train make_objective(args) in args.exp_dir.

    The config is build_config(args), by default args.config with args.overrides.
    User errors are logged and printed as "<prog>: error: ..." and exit with status 1.
    """
    args = parser.parse_args(argv)
    try:
        config = build_config(args) if build_config is not None else load_config(args.config, args.overrides)
        Trainer(make_objective(args), config, args.data_dir, args.exp_dir, device=args.device).run(args.max_steps)
    except (*USER_ERRORS, OSError) as e:
        message = no_space_message(e, args.exp_dir) if isinstance(e, OSError) else str(e)
        if message is None:
            raise
        logging.getLogger(prog).error("%s", message)
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(1)
