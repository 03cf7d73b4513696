"""Apply a linear score calibration (pyspk.bin.train_calibration) to a Kaldi scores file (run by
steps/calibrate_scores.sh).

Usage:
  python -m pyspk.bin.apply_calibration <calibration> <scores-in> <scores-out>
e.g.:
  python -m pyspk.bin.apply_calibration exp/pl_dino_r1/calibration/cosine \\
      exp/pl_dino_r1/scores/cosine_trials_test exp/pl_dino_r1/scores/cosine_cal_trials_test

Writes "enroll test llr" lines in the order of <scores-in>, llr = scale * score + offset.
"""

import logging

from pyspk.backend.calibration import Calibration
from pyspk.backend.scoring import read_scores, write_scores
from pyspk.cli import new_parser, user_errors_exit
from pyspk.data.datadir import DataDirError
from pyspk.logutil import setup_logging


def get_parser():
    parser = new_parser(__doc__)
    parser.add_argument("calibration")
    parser.add_argument("scores_in")
    parser.add_argument("scores_out")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    with user_errors_exit("apply_calibration", (DataDirError, ValueError, OSError)):
        calibration = Calibration.load(args.calibration)
        enroll, test, scores = read_scores(args.scores_in)
        write_scores(args.scores_out, enroll, test, calibration.apply(scores))
    logging.getLogger("apply_calibration").info("wrote %d calibrated scores to %s", len(scores), args.scores_out)


if __name__ == "__main__":
    main()
