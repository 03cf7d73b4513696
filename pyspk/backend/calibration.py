"""Linear score calibration (BOSARIS, Kaldi users' logistic regression) and the trials it is trained on.

A calibration maps a system's score ``s`` to a log-likelihood ratio
``llr = scale * s + offset``, the two numbers minimising the prior-weighted
cross-entropy at a target prior ``p`` (BOSARIS ``train_linear_calibration``)::

    p * mean_tar log(1 + e^-(llr + logit p)) + (1 - p) * mean_non log(1 + e^(llr + logit p))

A calibrated score then has a threshold that means something: accept when
``llr > log((1 - p) / p)`` (:func:`pyspk.metrics.bayes_threshold`).

The training trials are never test trials: pairs of training utterances,
targets two utterances of one (pseudo-)speaker, non-targets of two; with
sessions (calls), only pairs of two sessions, as a cross-call trial list.
"""

import logging
import os
from dataclasses import dataclass

import numpy as np

from pyspk.cluster.report import label_codes
from pyspk.data.datadir import DataDirError, iter_lines, read_kv, write_trials
from pyspk.fileutil import PathLike, atomic_open

logger = logging.getLogger(__name__)

CALIBRATION_KEYS = ("scale", "offset", "p_target")


@dataclass(frozen=True)
class Calibration:
    scale: float
    offset: float
    p_target: float

    def apply(self, scores: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(scores, dtype=np.float64) + self.offset

    def save(self, path: PathLike, notes: dict | None = None) -> None:
        """``key value`` lines: scale, offset, p_target, then any ``notes`` (what it was trained on)."""
        with atomic_open(path, "w", encoding="utf-8") as f:
            f.write(f"scale {self.scale!r}\noffset {self.offset!r}\np_target {self.p_target!r}\n")
            f.write("".join(f"{key} {value}\n" for key, value in (notes or {}).items()))

    @classmethod
    def load(cls, path: PathLike) -> "Calibration":
        values = {}
        for lineno, fields in iter_lines(path):
            if fields[0] in CALIBRATION_KEYS:
                if len(fields) != 2:
                    raise DataDirError(path, lineno, f"expected '{fields[0]} <number>'")
                try:
                    values[fields[0]] = float(fields[1])
                except ValueError:
                    raise DataDirError(path, lineno, f"{fields[0]} '{fields[1]}' is not a number") from None
                if not np.isfinite(values[fields[0]]):
                    raise DataDirError(path, lineno, f"{fields[0]} is {fields[1]}")
        missing = [key for key in CALIBRATION_KEYS if key not in values]
        if missing:
            raise DataDirError(path, 0, f"no {', '.join(missing)} (not a calibration file)")
        if not 0 < values["p_target"] < 1:
            raise DataDirError(path, 0, f"p_target {values['p_target']} is not in (0, 1)")
        return cls(**values)


def _logit(p):
    return float(np.log(p) - np.log1p(-p))


def prior_weighted_xent(llrs, labels, p_target):
    """The objective above over the prior's entropy: 1.0 for LLRs of 0 (a system that says nothing), 0 for
    perfect ones, above 1 for misleading ones."""
    llrs = np.asarray(llrs, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    z = llrs + _logit(p_target)
    entropy = -p_target * np.log(p_target) - (1 - p_target) * np.log1p(-p_target)
    return float((p_target * np.logaddexp(0, -z[labels]).mean()
                  + (1 - p_target) * np.logaddexp(0, z[~labels]).mean()) / entropy)


def train_calibration(scores, labels, p_target=0.01, max_iter=100, tol=1e-10) -> Calibration:
    """The scale (at least 0: a calibration never reverses the scores' order) and offset minimising the
    prior-weighted cross-entropy (Newton's method; convex)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if not labels.any() or labels.all():
        raise ValueError(f"calibration needs target and non-target trials, got {int(labels.sum())} targets "
                         f"of {labels.size}")
    # Standardised scores keep the Newton steps well conditioned; mapped back at the end.
    centre, spread = scores.mean(), scores.std() or 1.0
    feats = np.stack([(scores - centre) / spread, np.ones_like(scores)], axis=1)
    weights = np.where(labels, p_target / labels.sum(), (1 - p_target) / (~labels).sum())
    sign = np.where(labels, -1.0, 1.0)
    shift = _logit(p_target)

    def loss(w):
        return float((weights * np.logaddexp(0, sign * (feats @ w + shift))).sum())

    w = np.zeros(2)
    current = loss(w)
    for _ in range(max_iter):
        prob = 0.5 * (1 + np.tanh((feats @ w + shift) / 2))  # posterior of target (a logistic without overflow)
        grad = feats.T @ (weights * (prob - labels))
        hess = (feats * (weights * prob * (1 - prob))[:, None]).T @ feats
        step = np.linalg.solve(hess + 1e-12 * np.eye(2), grad)
        rate = 1.0
        while loss(w - rate * step) > current and rate > 1e-8:  # backtracking keeps each step downhill
            rate /= 2
        w -= rate * step
        previous, current = current, loss(w)
        if previous - current < tol:
            break
    else:
        logger.warning("calibration did not converge in %d iterations (are the scores separable?)", max_iter)
    if w[0] < 0:  # higher scores meaning non-target: the scale's best value >= 0 is 0, whose best offset is 0
        logger.warning("the training trials' target scores are below their non-target ones: the calibration says "
                       "nothing (every LLR 0)")
        return Calibration(0.0, 0.0, float(p_target))
    scale = w[0] / spread
    return Calibration(float(scale), float(w[1] - scale * centre), float(p_target))


def read_labels(data_dir: PathLike) -> tuple[list[str], list[str], list[str] | None, str]:
    """``(utterances, labels, sessions or None, source)`` of a data dir's utt2spk (true or pseudo labels).

    A pseudo-labelled dir (steps/cluster_embeddings.sh: ids ``<cluster>-<utt>``, utt2uniq naming the
    source utterance) gives the source ids, the ids its model's embeddings have.
    """
    utt2spk_path = os.path.join(data_dir, "utt2spk")
    utt2spk = read_kv(utt2spk_path)
    if not utt2spk:
        raise DataDirError(utt2spk_path, 0, "no utterances")
    uniq_path = os.path.join(data_dir, "utt2uniq")
    utt2uniq = read_kv(uniq_path) if os.path.isfile(uniq_path) else {}
    session_path = os.path.join(data_dir, "utt2session")
    utt2session = read_kv(session_path) if os.path.isfile(session_path) else None
    utts, labels, sessions, seen = [], [], [], {}
    for utt, label in utt2spk.items():
        source = utt2uniq.get(utt, utt)
        if source in seen:
            raise DataDirError(uniq_path, 0, f"utterances '{seen[source]}' and '{utt}' are both '{source}'")
        seen[source] = utt
        if utt2session is not None:
            if utt not in utt2session:
                raise DataDirError(session_path, 0, f"no session for utterance '{utt}'")
            sessions.append(utt2session[utt])
        utts.append(source)
        labels.append(label)
    return utts, labels, sessions if utt2session is not None else None, utt2spk_path


def sample_label_trials(utts, labels, num_targets, num_nontargets, seed=0, sessions=None):
    """Sorted ``(enroll, test, is_target)`` pairs of distinct utterances: targets of one label, non-targets
    of two, at most ``num_targets`` and ``num_nontargets`` of them (each pair once, random); with
    ``sessions``, only pairs of two sessions."""
    n = len(utts)
    label = label_codes(labels)
    session = label_codes(sessions) if sessions is not None else np.arange(n)
    order = np.argsort(label, kind="stable")
    sizes = np.bincount(label)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    pair_weights = sizes * (sizes - 1) / 2.0
    rng = np.random.default_rng(seed)

    def draw(count, target):
        if target:
            if pair_weights.sum() == 0:
                return np.empty((0, 2), dtype=np.int64)
            group = rng.choice(len(sizes), count, p=pair_weights / pair_weights.sum())
            first = rng.integers(0, sizes[group])
            second = rng.integers(0, sizes[group] - 1)
            second += second >= first
            return np.stack([order[starts[group] + first], order[starts[group] + second]], axis=1)
        pairs = rng.integers(0, n, size=(count, 2))
        return pairs[label[pairs[:, 0]] != label[pairs[:, 1]]]

    chosen = {}
    for target, wanted in ((True, num_targets), (False, num_nontargets)):
        found = set()
        for _ in range(20):  # rejection sampling; a pool smaller than asked for ends short
            if len(found) >= wanted:
                break
            pairs = draw(2 * (wanted - len(found)) + 16, target)
            pairs = pairs[session[pairs[:, 0]] != session[pairs[:, 1]]]
            for i, j in np.sort(pairs, axis=1).tolist():
                if len(found) < wanted:
                    found.add((i, j))
        chosen[target] = found
    trials = [(utts[i], utts[j], target) for target, pairs in chosen.items() for i, j in pairs]
    return sorted(trials)


def write_label_trials(data_dir: PathLike, trials_path: PathLike, num_targets: int = 10000,
                       num_nontargets: int = 50000, seed: int = 0, cross_session: bool = False,
                       exclude: tuple[PathLike, ...] = ()) -> tuple[int, int]:
    """Calibration trials of ``data_dir``'s labels into ``trials_path``: ``(targets, non-targets)``.

    ``exclude``: utt2spk files of test sets; an utterance of them among the labels is an error (a
    calibration trained on test utterances would flatter its actDCF).
    """
    utts, labels, sessions, source = read_labels(data_dir)
    if cross_session and sessions is None:
        raise DataDirError(os.path.join(data_dir, "utt2session"), 0, "no such file (--cross-session true)")
    labelled = set(utts)
    for path in exclude:
        for lineno, fields in iter_lines(path):
            if fields[0] in labelled:
                raise DataDirError(path, lineno, f"utterance '{fields[0]}' is a test utterance and also labelled "
                                                 f"in {source}: calibration trials must not hold test utterances")
    trials = sample_label_trials(utts, labels, num_targets, num_nontargets, seed,
                                 sessions if cross_session else None)
    num_target = sum(t for _, _, t in trials)
    if cross_session and num_target == 0:  # every speaker within one session: better than no calibration
        logger.warning("%s: no speaker has utterances of two sessions; calibrating on pairs of any sessions", source)
        trials = sample_label_trials(utts, labels, num_targets, num_nontargets, seed)
        num_target = sum(t for _, _, t in trials)
    if num_target == 0 or num_target == len(trials):
        raise DataDirError(source, 0, f"no {'target' if num_target == 0 else 'non-target'} pair to calibrate on")
    write_trials(trials_path, trials)
    return num_target, len(trials) - num_target
