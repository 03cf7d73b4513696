"""Train a linear score calibration (log-likelihood ratio = scale * score + offset) by prior-weighted
logistic regression, as BOSARIS (run by steps/calibrate_scores.sh).

Usage:
  python -m pyspk.bin.train_calibration [options] <trials> <scores> <calibration-out>
e.g.:
  python -m pyspk.bin.train_calibration --p-target 0.01 exp/pl_dino_r1/calibration/trials \\
      exp/pl_dino_r1/calibration/scores_cosine exp/pl_dino_r1/calibration/cosine

<trials> and <scores> are training trials (never test trials) scored by the
system to calibrate. <calibration-out> holds "scale", "offset" and "p_target"
lines (pyspk.bin.apply_calibration reads them) and what it was trained on.
"""

import argparse
import logging

from pyspk.backend.calibration import prior_weighted_xent, train_calibration
from pyspk.backend.scoring import match_scores_to_trials
from pyspk.cli import new_parser, user_errors_exit
from pyspk.data.datadir import DataDirError, read_trials
from pyspk.logutil import setup_logging


def p_target_arg(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a prior in (0, 1), got '{text}'")
    return value


def get_parser():
    parser = new_parser(__doc__)
    parser.add_argument("--p-target", type=p_target_arg, default=0.01,
                        help="target prior of the cross-entropy, in (0, 1) (default: 0.01)")
    parser.add_argument("trials")
    parser.add_argument("scores")
    parser.add_argument("calibration")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    log = logging.getLogger("train_calibration")
    with user_errors_exit("train_calibration", (DataDirError, ValueError, OSError)):
        scores, labels, _ = match_scores_to_trials(read_trials(args.trials), args.trials, args.scores)
        calibration = train_calibration(scores, labels, args.p_target)
        before = prior_weighted_xent(scores, labels, args.p_target)
        after = prior_weighted_xent(calibration.apply(scores), labels, args.p_target)
        calibration.save(args.calibration, {"num_targets": int(labels.sum()), "num_nontargets": int((~labels).sum()),
                                            "xent_raw": f"{before:.4f}", "xent": f"{after:.4f}",
                                            "trials": args.trials, "scores": args.scores})
    if after < 0.01:
        log.warning("the scores separate these training trials (almost) perfectly (cross-entropy %.4f): the system "
                    "was trained on them, and the calibration will be overconfident on other trials", after)
    log.info("llr = %.6g * score + %.6g (p-target %g): normalised cross-entropy %.4f (the raw scores read as "
             "LLRs: %.4f; 1.0: LLRs of 0) on %d target and %d non-target trials", calibration.scale,
             calibration.offset, args.p_target, after, before, labels.sum(), (~labels).sum())


if __name__ == "__main__":
    main()
