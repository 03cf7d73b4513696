"""Linear fusion of the score files of several systems on one trial list.

Each system's scores are aligned to the trials (every trial exactly once, in
any order), optionally standardised over the trial list (``mean-std``: useful
when the systems' scores have different scales), and combined as
``sum_k weights[k] * scores_k``. The weights are used as given; the default
is equal weights summing to 1 (the plain mean).
"""

import logging
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat

import numpy as np
from numpy.typing import ArrayLike

from pyspk.backend.scoring import read_scores, write_scores
from pyspk.data.datadir import DataDirError, read_trials
from pyspk.fileutil import PathLike
from pyspk.metrics import compute_eer

logger = logging.getLogger(__name__)

NORMALIZATIONS = ("none", "mean-std")


def parse_weights(text: str, num_systems: int) -> np.ndarray:
    """Weights from ``"w1 w2 ..."`` (spaces or commas); empty text: equal weights summing to 1."""
    if not text.strip():
        return np.full(num_systems, 1.0 / num_systems)
    fields = text.replace(",", " ").split()
    try:
        weights = np.array([float(w) for w in fields], dtype=np.float64)
    except ValueError:
        raise ValueError(f"weights must be numbers, got '{text}'") from None
    if weights.size != num_systems:
        raise ValueError(f"got {weights.size} weights ('{text}') for {num_systems} score files")
    if not np.all(np.isfinite(weights)) or not np.any(weights):
        raise ValueError(f"weights must be finite and not all zero, got '{text}'")
    return weights


def trial_positions(trials: Sequence[tuple[str, str, bool]], trials_path: PathLike) -> dict[tuple[str, str], int]:
    """``{(enroll, test): position}`` of the trials; a repeated trial is an error naming its line."""
    position = {}
    for i, (enroll, test, _) in enumerate(trials):
        first = position.setdefault((enroll, test), i)
        if first != i:
            raise DataDirError(trials_path, i + 1, f"duplicate trial '{enroll} {test}' (first on line {first + 1})")
    return position


def align_scores(trials: Sequence[tuple[str, str, bool]], trials_path: PathLike,
                 position: Mapping[tuple[str, str], int], scores_path: PathLike) -> np.ndarray:
    """Scores of ``scores_path`` in the order of ``trials``.

    The file must hold every trial exactly once: a line that is not a trial,
    a trial's second score, a missing trial or a bad score is an error naming
    the scores file (and its line, or the trial's line in the trials file).
    """
    enroll_keys, test_keys, scores = read_scores(scores_path)
    if (len(scores) == len(trials) and enroll_keys == [t[0] for t in trials]
            and test_keys == [t[1] for t in trials]):
        return scores  # the usual case: written in trials order
    trial_of_line = np.fromiter(map(position.get, zip(enroll_keys, test_keys, strict=True), repeat(-1)), np.int64,
                                len(scores))
    if np.any(trial_of_line < 0):
        lineno = int(np.flatnonzero(trial_of_line < 0)[0]) + 1
        raise DataDirError(scores_path, lineno, f"'{enroll_keys[lineno - 1]} {test_keys[lineno - 1]}' "
                           f"is not a trial of {trials_path}")
    # np.unique keeps each trial's first line: any other line repeats an earlier trial.
    _, first_lines = np.unique(trial_of_line, return_index=True)
    if first_lines.size != len(scores):
        repeated = np.ones(len(scores), dtype=bool)
        repeated[first_lines] = False
        lineno = int(np.flatnonzero(repeated)[0]) + 1
        i = int(trial_of_line[lineno - 1])
        raise DataDirError(scores_path, lineno, f"second score for trial '{trials[i][0]} {trials[i][1]}'")
    if len(scores) != len(trials):
        has_score = np.zeros(len(trials), dtype=bool)
        has_score[trial_of_line] = True
        i = int(np.flatnonzero(~has_score)[0])
        raise DataDirError(scores_path, 0, f"no score for trial '{trials[i][0]} {trials[i][1]}' "
                           f"({trials_path}:{i + 1}); {len(trials) - len(scores)} trials have no score")
    aligned = np.empty(len(trials), dtype=np.float64)
    aligned[trial_of_line] = scores
    return aligned


def normalize_scores(scores: np.ndarray, method: str, source: PathLike) -> np.ndarray:
    """``scores`` unchanged ('none') or standardised to mean 0, standard deviation 1 ('mean-std')."""
    if method == "none":
        return scores
    if method != "mean-std":
        raise ValueError(f"normalisation must be one of {', '.join(NORMALIZATIONS)}, got '{method}'")
    std = scores.std()
    if not std > 0:
        raise ValueError(f"{source}: all scores are equal, cannot standardise them")
    return (scores - scores.mean()) / std


def fuse_score_arrays(score_arrays: Sequence[np.ndarray], weights: Sequence[float] | np.ndarray,
                      normalize: str = "none", sources: Sequence[PathLike] | None = None) -> np.ndarray:
    """``sum_k weights[k] * normalize(score_arrays[k])`` for arrays of one length (float64)."""
    sources = sources or [f"system {k + 1}" for k in range(len(score_arrays))]
    fused = np.zeros(len(score_arrays[0]), dtype=np.float64)
    for weight, scores, source in zip(weights, score_arrays, sources, strict=True):
        fused += weight * normalize_scores(np.asarray(scores, dtype=np.float64), normalize, source)
    return fused


def fuse_score_files(trials_path: PathLike, scores_paths: Iterable[PathLike], out_path: PathLike,
                     weights: ArrayLike | None = None, normalize: str = "none") -> np.ndarray:
    """Fuse the score files of ``scores_paths`` on the trials of ``trials_path`` into ``out_path``.

    ``weights``: one per file (None: equal, summing to 1). The output has one
    ``enroll test score`` line per trial, in trials order, written atomically.
    Each system's and the fused scores' statistics (and EER, when the trials
    have both classes) are logged. Returns the fused scores (trials order).
    """
    scores_paths = list(scores_paths)
    if len(scores_paths) < 2:
        raise ValueError(f"need at least 2 score files to fuse, got {len(scores_paths)}")
    weights = (np.full(len(scores_paths), 1.0 / len(scores_paths)) if weights is None
               else np.asarray(weights, dtype=np.float64).ravel())
    if weights.size != len(scores_paths):
        raise ValueError(f"got {weights.size} weights for {len(scores_paths)} score files")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalisation must be one of {', '.join(NORMALIZATIONS)}, got '{normalize}'")
    trials = read_trials(trials_path)
    if not trials:
        raise DataDirError(trials_path, 0, "no trials")
    position = trial_positions(trials, trials_path)
    score_arrays = [align_scores(trials, trials_path, position, path) for path in scores_paths]
    fused = fuse_score_arrays(score_arrays, weights, normalize, scores_paths)
    write_scores(out_path, [t[0] for t in trials], [t[1] for t in trials], fused)

    labels = np.fromiter((t[2] for t in trials), dtype=bool, count=len(trials))
    both_classes = labels.any() and not labels.all()

    def summary(scores):
        eer = f", EER {100 * compute_eer(scores, labels):.3f}%" if both_classes else ""
        return f"mean {scores.mean():.4f}, standard deviation {scores.std():.4f}{eer}"

    for path, weight, scores in zip(scores_paths, weights.tolist(), score_arrays, strict=True):
        logger.info("%s: weight %g, %s", path, weight, summary(scores))
    logger.info("fused %d systems (normalisation %s) over %d trials into %s: %s", len(scores_paths), normalize,
                len(trials), out_path, summary(fused))
    return fused
