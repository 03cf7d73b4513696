"""Adaptive symmetric score normalisation (AS-norm).

Each enrolment and each test embedding is scored against a cohort (e.g. the
training set); the mean and standard deviation of its ``top_n`` highest cohort
scores normalise every trial it is in::

    s' = ((s - mu_e) / sigma_e + (s - mu_t) / sigma_t) / 2

Works for any scorer of :mod:`pyspk.backend.scoring` (cosine, PLDA): the
enrolment side is scored as enrolled (PLDA: with its number of utterances),
the test side as a one-utterance enrolment; cohort members are test vectors.
"""

import logging

import numpy as np

from pyspk.backend.scoring import EnrollSide, Scorer, TestSide, score_matrix, subset_enroll

logger = logging.getLogger(__name__)

BLOCK_ELEMENTS = 1 << 24  # score-matrix elements per block (128 MiB of float64)


def top_n_stats(enroll: EnrollSide, cohort: TestSide, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (ddof 0) of each enrolment row's ``top_n`` highest cohort scores.

    ``top_n <= 0`` or larger than the cohort uses the whole cohort.
    """
    num_cohort = cohort.feats.shape[0]
    if top_n <= 0 or top_n > num_cohort:
        if top_n > num_cohort:
            logger.warning("top-n %d exceeds the cohort size %d; using the whole cohort", top_n, num_cohort)
        top_n = num_cohort
    num_rows = enroll.feats.shape[0]
    means, stds = np.empty(num_rows), np.empty(num_rows)
    block = max(1, BLOCK_ELEMENTS // max(num_cohort, 1))
    for start in range(0, num_rows, block):
        rows = np.arange(start, min(start + block, num_rows))
        scores = score_matrix(subset_enroll(enroll, rows), cohort)
        if top_n < num_cohort:
            scores = np.partition(scores, num_cohort - top_n, axis=1)[:, num_cohort - top_n:]
        means[rows] = scores.mean(axis=1)
        stds[rows] = scores.std(axis=1)
    if np.any(stds <= 0):
        raise ValueError("cohort scores have zero spread; use a larger or more varied cohort")
    return means, stds


def as_norm(scores: np.ndarray, enroll_mean: np.ndarray, enroll_std: np.ndarray, test_mean: np.ndarray,
            test_std: np.ndarray) -> np.ndarray:
    """Symmetric normalisation of trial scores given per-trial cohort statistics."""
    return 0.5 * ((scores - enroll_mean) / enroll_std + (scores - test_mean) / test_std)


def asnorm_trials(scorer: Scorer, enroll_x: np.ndarray, enroll_counts: np.ndarray, test_x: np.ndarray,
                  cohort_x: np.ndarray, enroll_index: np.ndarray, test_index: np.ndarray, scores: np.ndarray,
                  top_n: int) -> np.ndarray:
    """AS-norm of trial ``scores`` (trial k: ``enroll_x[enroll_index[k]]`` vs ``test_x[test_index[k]]``)."""
    enroll = scorer.enroll_side(enroll_x, enroll_counts)
    enroll_mean, enroll_std = top_n_stats(enroll, scorer.test_side(cohort_x, enroll.group_values), top_n)
    test_as_enroll = scorer.enroll_side(test_x, np.ones(len(test_x), dtype=np.int64))
    test_mean, test_std = top_n_stats(test_as_enroll, scorer.test_side(cohort_x, test_as_enroll.group_values),
                                      top_n)
    return as_norm(scores, enroll_mean[enroll_index], enroll_std[enroll_index],
                   test_mean[test_index], test_std[test_index])
