"""Calibration trials from a training data dir's (pseudo-)labels (run by steps/calibrate_scores.sh's callers).

Usage:
  python -m pyspk.bin.make_calibration_trials [options] <labels-data-dir> <trials-out>
e.g.:
  python -m pyspk.bin.make_calibration_trials --cross-session true --exclude data/test/utt2spk \\
      data/train_pl_dino_r1 exp/pl_dino_r1/calibration/trials

Targets pair two utterances of one speaker of <labels-data-dir>/utt2spk (a
round's clusters, or true labels), non-targets two of different speakers; a
pseudo-labelled dir's ids (<cluster>-<utt>) are written as their source
utterances (utt2uniq), the ids of the train set's embeddings. Never test
trials: an utterance of an --exclude utt2spk among the labels is an error.
"""

import logging

from pyspk.backend.calibration import write_label_trials
from pyspk.cli import bool_arg, new_parser, positive_int, user_errors_exit
from pyspk.data.datadir import DataDirError
from pyspk.logutil import setup_logging


def get_parser():
    parser = new_parser(__doc__)
    parser.add_argument("--num-targets", type=positive_int, default=10000, help="target trials, at most (10000)")
    parser.add_argument("--num-nontargets", type=positive_int, default=50000,
                        help="non-target trials, at most (50000)")
    parser.add_argument("--seed", type=int, default=0, help="trial sampling (0)")
    parser.add_argument("--cross-session", type=bool_arg, default=False,
                        help="only pairs of two sessions (<labels-data-dir>/utt2session), as cross-call "
                             "trials (default: false)")
    parser.add_argument("--exclude", action="append", default=[],
                        help="utt2spk of a test set, none of whose utterances may be in a trial (repeatable)")
    parser.add_argument("labels_dir")
    parser.add_argument("trials")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    with user_errors_exit("make_calibration_trials", (DataDirError, ValueError, OSError)):
        targets, nontargets = write_label_trials(args.labels_dir, args.trials, args.num_targets,
                                                 args.num_nontargets, args.seed, args.cross_session,
                                                 tuple(args.exclude))
    logging.getLogger("make_calibration_trials").info(
        "wrote %s: %d target and %d non-target trials from the labels of %s%s", args.trials, targets, nontargets,
        args.labels_dir, " (pairs of two sessions)" if args.cross_session else "")


if __name__ == "__main__":
    main()
