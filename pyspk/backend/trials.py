"""Score a Kaldi trials file with any scorer (cosine, PLDA), optionally AS-normed."""

import logging

import numpy as np

from pyspk.backend.embeddings import EmbeddingDir
from pyspk.backend.norm import asnorm_trials
from pyspk.backend.scoring import Scorer, compact, index_trials, score_pairs, write_scores
from pyspk.backend.transforms import group_sums
from pyspk.data.datadir import DataDir, read_trials
from pyspk.fileutil import PathLike

logger = logging.getLogger(__name__)


def _check_dim(matrix, source, expected_dim, expected_from):
    if expected_dim is not None and matrix.shape[1] != expected_dim:
        raise ValueError(f"{source}: embeddings have dimension {matrix.shape[1]}, "
                         f"{expected_from} has {expected_dim}")


def load_cohort(cohort_dir: PathLike, level: str = "utt",
                data_dir: PathLike | None = None) -> tuple[np.ndarray, str]:
    """AS-norm cohort embeddings ``(matrix, source)`` from an x-vector dir.

    With ``data_dir``, only the utterances of its utt2spk are used and, at
    ``level`` 'spk', averaged per speaker of that utt2spk (true or pseudo
    labels); without it, ``level`` picks xvector.scp or spk_xvector.scp.
    """
    store = EmbeddingDir(cohort_dir)
    if not data_dir:
        source = store.file("xvector.scp" if level == "utt" else "spk_xvector.scp")
        return store.embeddings(level)[1], source
    keys, x = store.xvectors()
    utt2spk = DataDir(data_dir).utt2spk()
    rows = np.array([i for i, key in enumerate(keys) if key in utt2spk], dtype=np.int64)
    source = f"{store.file('xvector.scp')} (utterances of {data_dir}/utt2spk)"
    if rows.size == 0:
        raise ValueError(f"{source}: none of them has an x-vector")
    if level == "utt":
        return x[rows], source
    _, spk_index, counts = np.unique([utt2spk[keys[i]] for i in rows.tolist()], return_inverse=True,
                                     return_counts=True)
    return group_sums(x[rows].astype(np.float64), spk_index.ravel(), counts) / counts[:, None], source


def score_trials_file(scorer: Scorer, trials_path: PathLike, enroll_dir: PathLike, test_dir: PathLike,
                      scores_path: PathLike, enroll_level: str = "utt", cohort_dir: PathLike | None = None,
                      cohort_level: str = "utt", top_n: int = 300, skip_missing: bool = False,
                      expected_dim: int | None = None, expected_from: str | None = None,
                      cohort_data: PathLike | None = None) -> tuple[int, int]:
    """Score ``trials_path`` into ``scores_path`` (Kaldi ``enroll test score``, trials order).

    Enrolment keys are utterances of ``enroll_dir/xvector.scp`` (``enroll_level``
    'utt') or speakers of ``spk_xvector.scp`` with ``num_utts.ark`` ('spk'); test
    keys are utterances of ``test_dir/xvector.scp``. ``cohort_dir`` turns on
    AS-norm (cohort from :func:`load_cohort`). Returns ``(num_scored, num_skipped)``.
    """
    trials = read_trials(trials_path)
    enroll_store, test_store = EmbeddingDir(enroll_dir), EmbeddingDir(test_dir)
    enroll_keys, enroll_x, enroll_counts = enroll_store.embeddings(enroll_level)
    enroll_source = enroll_store.file("xvector.scp" if enroll_level == "utt" else "spk_xvector.scp")
    test_keys, test_x = test_store.xvectors()
    test_source = test_store.file("xvector.scp")
    expected_dim = enroll_x.shape[1] if expected_dim is None else expected_dim
    expected_from = expected_from or enroll_source
    _check_dim(enroll_x, enroll_source, expected_dim, expected_from)
    _check_dim(test_x, test_source, expected_dim, expected_from)

    kept, enroll_index, test_index = index_trials(trials, trials_path, enroll_keys, test_keys,
                                                  enroll_source, test_source, skip_missing)
    if kept.size == 0:
        raise ValueError(f"{trials_path}: no trial could be scored")
    enroll_rows, enroll_index = compact(enroll_index)
    test_rows, test_index = compact(test_index)
    enroll_x, enroll_counts, test_x = enroll_x[enroll_rows], enroll_counts[enroll_rows], test_x[test_rows]
    logger.info("scoring %d trials: %d enrolments, %d test utterances", kept.size, len(enroll_x), len(test_x))
    enroll = scorer.enroll_side(enroll_x, enroll_counts)
    test = scorer.test_side(test_x, enroll.group_values)
    scores = score_pairs(enroll, test, enroll_index, test_index)

    if cohort_dir:
        cohort_x, cohort_source = load_cohort(cohort_dir, cohort_level, cohort_data)
        _check_dim(cohort_x, cohort_source, expected_dim, expected_from)
        logger.info("AS-norm with %d cohort embeddings of %s, top-n %d", len(cohort_x), cohort_source, top_n)
        scores = asnorm_trials(scorer, enroll_x, enroll_counts, test_x, cohort_x, enroll_index, test_index,
                               scores, top_n)

    kept_trials = [trials[k] for k in kept.tolist()]
    write_scores(scores_path, [t[0] for t in kept_trials], [t[1] for t in kept_trials], scores)
    labels = np.fromiter((t[2] for t in kept_trials), dtype=bool, count=kept.size)
    for name, part in (("target", scores[labels]), ("non-target", scores[~labels])):
        if part.size:
            logger.info("%s scores: mean %.4f, standard deviation %.4f (%d trials)", name, part.mean(),
                        part.std(), part.size)
    return int(kept.size), len(trials) - int(kept.size)
