"""Small helpers shared by the back-end entry points in pyspk/bin."""

import argparse
import logging
import sys
from collections.abc import Callable

from pyspk.backend.scoring import Scorer
from pyspk.backend.trials import score_trials_file
from pyspk.cli import bool_arg
from pyspk.data.datadir import DataDirError
from pyspk.logutil import setup_logging


def level_arg(text: str) -> str:
    """Embedding level option value: 'utt' or 'spk'."""
    if text in ("utt", "spk"):
        return text
    raise argparse.ArgumentTypeError(f"expected utt or spk, got '{text}'")


def add_scoring_options(parser: argparse.ArgumentParser) -> None:
    """Options common to cosine and PLDA scoring."""
    parser.add_argument("--enroll-level", type=level_arg, default="utt",
                        help="enrolment keys are utterances (xvector.scp) or speakers (spk_xvector.scp with "
                             "num_utts.ark) (default: %(default)s)")
    parser.add_argument("--asnorm-cohort", default="",
                        help="x-vector dir of the AS-norm cohort, e.g. the training set; empty: no AS-norm")
    parser.add_argument("--cohort-level", type=level_arg, default="utt",
                        help="cohort embeddings: utterances or speaker means (default: %(default)s)")
    parser.add_argument("--cohort-data", default="",
                        help="data dir whose utt2spk selects the cohort utterances (and, with --cohort-level spk, "
                             "defines the speakers averaged); empty: all of the cohort dir")
    parser.add_argument("--top-n", type=int, default=300,
                        help="AS-norm: number of best cohort scores (<= 0: all) (default: %(default)s)")
    parser.add_argument("--skip-missing", type=bool_arg, default=False,
                        help="skip (and count) trials whose keys have no embedding instead of failing "
                             "(default: false)")


def add_trials_arguments(parser: argparse.ArgumentParser) -> None:
    """Positional arguments common to cosine and PLDA scoring (after the back-end's own)."""
    parser.add_argument("trials")
    parser.add_argument("enroll_dir")
    parser.add_argument("test_dir")
    parser.add_argument("scores_out")


def run_trials_scoring(prog: str, args: argparse.Namespace,
                       make_scorer: Callable[[], tuple[Scorer, int | None, str | None]]) -> None:
    """Score args.trials into args.scores_out with the options of add_scoring_options.

    make_scorer() returns (scorer, expected_dim, expected_from): the embedding
    dimension the back-end needs (None: any) and what to name as its source in
    a mismatch message. User errors exit with "<prog>: message".
    """
    setup_logging()
    log = logging.getLogger(prog)
    try:
        scorer, expected_dim, expected_from = make_scorer()
        num_scored, num_skipped = score_trials_file(
            scorer, args.trials, args.enroll_dir, args.test_dir, args.scores_out, args.enroll_level,
            args.asnorm_cohort or None, args.cohort_level, args.top_n, args.skip_missing,
            expected_dim=expected_dim, expected_from=expected_from, cohort_data=args.cohort_data or None)
    except (DataDirError, ValueError, OSError) as e:
        sys.exit(f"{prog}: {e}")
    log.info("Done %d trials, skipped %d; wrote %s", num_scored, num_skipped, args.scores_out)
