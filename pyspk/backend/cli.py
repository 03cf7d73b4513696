"""Small helpers shared by the back-end entry points in pyspk/bin."""

import argparse


def bool_arg(text):
    """Kaldi-style boolean option value: 'true' or 'false'."""
    if text in ("true", "false"):
        return text == "true"
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def level_arg(text):
    if text in ("utt", "spk"):
        return text
    raise argparse.ArgumentTypeError(f"expected utt or spk, got '{text}'")


def add_scoring_options(parser):
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
