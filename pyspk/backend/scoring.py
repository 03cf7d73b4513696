"""Vectorised trial scoring and Kaldi score files.

A scorer (cosine or PLDA) turns embeddings into an :class:`EnrollSide` and a
:class:`TestSide` such that every score is one dot product plus biases::

    score(i, j) = enroll.feats[i] . test.feats[j] + enroll.bias[i]
                  + test.group_bias[j, enroll.group[i]]

``group`` indexes ``enroll.group_values`` (for PLDA, the distinct numbers of
enrolment utterances, since the test-side term depends on it). Trials are
mapped to row indices once and scored in batches of gathered rows; cohort
scores for AS-norm use the full-matrix form.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

from pyspk.data.datadir import DataDirError, iter_lines
from pyspk.fileutil import PathLike, atomic_open

logger = logging.getLogger(__name__)

BATCH_SIZE = 8192  # trials per gathered batch: rows stay in cache


@dataclass
class EnrollSide:
    feats: np.ndarray                       # (n_enroll, k)
    bias: np.ndarray | None = None          # (n_enroll,) or None for zero
    group: np.ndarray | None = None         # (n_enroll,) index into group_values
    group_values: np.ndarray | None = None


@dataclass
class TestSide:
    feats: np.ndarray                       # (n_test, k)
    group_bias: np.ndarray | None = None    # (n_test, n_groups) or None for zero


class Scorer(Protocol):
    """A back-end (CosineScorer, PldaScorer): embeddings -> the two sides of every score."""

    def enroll_side(self, x: np.ndarray, counts: ArrayLike) -> EnrollSide:
        """Enrolment embeddings ``x`` (rows), each the mean of ``counts`` utterances (scalar or per row)."""

    def test_side(self, x: ArrayLike, group_values: ArrayLike | None) -> TestSide:
        """Test embeddings ``x``; ``group_values`` are the enrolment side's (PLDA needs them)."""


def score_pairs(enroll: EnrollSide, test: TestSide, enroll_index: ArrayLike, test_index: ArrayLike,
                batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Scores of the trials ``(enroll_index[k], test_index[k])`` (float64)."""
    if enroll.feats.shape[1] != test.feats.shape[1]:
        raise ValueError(f"enrollment dimension {enroll.feats.shape[1]} != test dimension {test.feats.shape[1]}")
    enroll_index = np.asarray(enroll_index, dtype=np.int64)
    test_index = np.asarray(test_index, dtype=np.int64)
    scores = np.empty(enroll_index.size, dtype=np.float64)
    for start in range(0, enroll_index.size, batch_size):
        ei = enroll_index[start:start + batch_size]
        ti = test_index[start:start + batch_size]
        # np.take is markedly faster than fancy indexing for row gathers.
        scores[start:start + ei.size] = np.einsum("ij,ij->i", np.take(enroll.feats, ei, axis=0),
                                                  np.take(test.feats, ti, axis=0))
    if enroll.bias is not None:
        scores += enroll.bias[enroll_index]
    if test.group_bias is not None:
        scores += test.group_bias[test_index, enroll.group[enroll_index]]
    return scores


def score_matrix(enroll: EnrollSide, test: TestSide) -> np.ndarray:
    """All enrolment x test scores, shape ``(n_enroll, n_test)`` (float64)."""
    scores = (enroll.feats @ test.feats.T).astype(np.float64)
    if enroll.bias is not None:
        scores += enroll.bias[:, None]
    if test.group_bias is not None:
        scores += test.group_bias[:, enroll.group].T
    return scores


def subset_enroll(side: EnrollSide, rows: np.ndarray) -> EnrollSide:
    """The enrolment side restricted to ``rows`` (indices or a mask)."""
    return EnrollSide(side.feats[rows], None if side.bias is None else side.bias[rows],
                      None if side.group is None else side.group[rows], side.group_values)


def index_trials(trials: Sequence[tuple[str, str, bool]], trials_path: PathLike, enroll_keys: Sequence[str],
                 test_keys: Sequence[str], enroll_source: str, test_source: str,
                 skip_missing: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map trials to row indices of the enrolment and test embeddings.

    Returns ``(kept, enroll_index, test_index)`` where ``kept`` are the
    positions of the scored trials. A key missing from the embeddings is an
    error naming the trials file and line, unless ``skip_missing`` (then the
    trial is skipped and counted).
    """
    enroll_lookup = {key: row for row, key in enumerate(enroll_keys)}
    test_lookup = {key: row for row, key in enumerate(test_keys)}
    n = len(trials)
    enroll_index = np.fromiter(map(enroll_lookup.get, map(itemgetter(0), trials), repeat(-1)), np.int64, n)
    test_index = np.fromiter(map(test_lookup.get, map(itemgetter(1), trials), repeat(-1)), np.int64, n)
    found = (enroll_index >= 0) & (test_index >= 0)
    if not found.all():
        missing = np.flatnonzero(~found)
        first = int(missing[0])
        enroll, test, _ = trials[first]
        what = (f"enrollment '{enroll}' not in {enroll_source}" if enroll_index[first] < 0
                else f"test '{test}' not in {test_source}")
        if not skip_missing:
            raise DataDirError(trials_path, first + 1,
                               f"{what} ({missing.size} trials have missing keys; --skip-missing true skips them)")
        logger.warning("skipped %d of %d trials with keys missing from the embeddings (first: %s:%d: %s)",
                       missing.size, n, trials_path, first + 1, what)
    kept = np.flatnonzero(found)
    return kept, enroll_index[kept], test_index[kept]


def compact(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, new_index)``: the distinct rows used and ``index`` renumbered into them."""
    rows, new_index = np.unique(index, return_inverse=True)
    return rows, new_index.ravel()


def write_scores(path: PathLike, enroll_keys: Sequence[str], test_keys: Sequence[str], scores: np.ndarray) -> None:
    """Kaldi score file: ``enroll test score`` lines in the given order (atomic)."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{e} {t} {s:.6f}\n" for e, t, s in zip(enroll_keys, test_keys, scores.tolist(), strict=True)))


def read_scores(path: PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """Read ``enroll test score`` lines: ``(enroll_keys, test_keys, scores)``; bad lines are errors."""
    enroll_keys, test_keys, scores = [], [], []
    for lineno, fields in iter_lines(path):
        if len(fields) != 3:
            raise DataDirError(path, lineno, f"expected 'enroll test score', got {len(fields)} fields")
        try:
            score = float(fields[2])
        except ValueError:
            raise DataDirError(path, lineno, f"score '{fields[2]}' is not a number") from None
        if not np.isfinite(score):
            raise DataDirError(path, lineno, f"score is {fields[2]}")
        enroll_keys.append(fields[0])
        test_keys.append(fields[1])
        scores.append(score)
    if not scores:
        raise DataDirError(path, 0, "no scores")
    return enroll_keys, test_keys, np.array(scores, dtype=np.float64)


def match_scores_to_trials(trials: Sequence[tuple[str, str, bool]], trials_path: PathLike, scores_path: PathLike,
                           skip_missing: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """Pair each trial with its score: ``(scores, labels, num_skipped)``.

    Every score line must be a trial (once); a trial without a score is an
    error naming the trials file and line unless ``skip_missing``.
    """
    if not trials:
        raise DataDirError(trials_path, 0, "no trials: the file is empty")
    enroll_keys, test_keys, scores = read_scores(scores_path)
    labels = np.fromiter((t[2] for t in trials), dtype=bool, count=len(trials))
    if (len(trials) == len(scores) and enroll_keys == [t[0] for t in trials]
            and test_keys == [t[1] for t in trials]):
        return scores, labels, 0  # the usual case: same order as the trials
    position = {}
    for i, (enroll, test, _) in enumerate(trials):
        if position.setdefault((enroll, test), i) != i:
            raise DataDirError(trials_path, i + 1, f"duplicate trial '{enroll} {test}'")
    trial_of_score = np.empty(len(scores), dtype=np.int64)
    for lineno, pair in enumerate(zip(enroll_keys, test_keys, strict=True), 1):
        i = position.get(pair)
        if i is None:
            raise DataDirError(scores_path, lineno, f"'{pair[0]} {pair[1]}' is not a trial of {trials_path}")
        trial_of_score[lineno - 1] = i
    has_score = np.zeros(len(trials), dtype=bool)
    has_score[trial_of_score] = True
    if np.count_nonzero(has_score) != len(scores):
        seen = np.zeros(len(trials), dtype=bool)
        for lineno, i in enumerate(trial_of_score, 1):
            if seen[i]:
                raise DataDirError(scores_path, lineno, f"second score for trial '{trials[i][0]} {trials[i][1]}'")
            seen[i] = True
    num_missing = len(trials) - len(scores)
    if num_missing:
        first = int(np.flatnonzero(~has_score)[0])
        if not skip_missing:
            raise DataDirError(trials_path, first + 1, f"no score in {scores_path} for this trial "
                               f"({num_missing} trials unscored; --skip-missing true skips them)")
        logger.warning("skipped %d of %d trials that have no score in %s", num_missing, len(trials), scores_path)
    return scores, labels[trial_of_score], num_missing
