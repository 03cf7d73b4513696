"""Verification metrics with Kaldi's definitions, vectorised.

* EER as Kaldi's ``compute-eer`` (ivectorbin/compute-eer.cc): scores are
  float32 (Kaldi's BaseFloat); both score lists are sorted and, walking up the
  sorted target scores, the first position ``p`` where the non-target score at
  the mirrored position ``N - 1 - floor(N * p / T)`` falls below the target
  score gives ``EER = p / T``. This is Kaldi's estimate, not an interpolated
  ROC crossing; it differs from one by at most about ``1/T + 1/N``.
* minDCF as Kaldi's ``sid/compute_min_dcf.py``: scores are sorted ascending
  (stable, so tied scores keep their input order) and the cost is evaluated
  at every sorted position ``i`` with all scores up to and including ``i``
  rejected; the minimum is normalised by ``min(c_miss * p, c_fa * (1 - p))``.
* actDCF (of calibrated scores, log-likelihood ratios) as BOSARIS: the same
  normalised cost at the Bayes threshold ``log(c_fa * (1 - p) / (c_miss * p))``
  (``-logit(p)`` for unit costs), scores at or below it rejected as minDCF's.
"""

import numpy as np


def _split_scores(scores, labels, dtype):
    scores = np.asarray(scores, dtype=dtype).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if not np.all(np.isfinite(scores)):
        bad = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise ValueError(f"score {bad} is not finite ({scores[bad]})")
    if not labels.any():
        raise ValueError("no target trials")
    if labels.all():
        raise ValueError("no non-target trials")
    return scores, labels


def eer_and_threshold(scores, labels):
    """Kaldi ``compute-eer``: ``(eer as a fraction, threshold)``."""
    scores, labels = _split_scores(scores, labels, np.float32)
    target = np.sort(scores[labels])
    nontarget = np.sort(scores[~labels])
    n_tar, n_non = target.size, nontarget.size
    positions = np.arange(n_tar - 1, dtype=np.int64)
    # Kaldi truncates N * p / T toward zero; integer floor is the same for p >= 0.
    mirrored = np.maximum(n_non - 1 - (n_non * positions) // n_tar, 0)
    crossed = np.flatnonzero(nontarget[mirrored] < target[positions])
    position = int(crossed[0]) if crossed.size else n_tar - 1
    return position / n_tar, float(target[position])


def compute_eer(scores, labels):
    """Equal error rate (a fraction) as Kaldi's ``compute-eer``."""
    return eer_and_threshold(scores, labels)[0]


def _check_costs(p_target, c_miss, c_fa):
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError("c_miss and c_fa must be positive")
    return min(c_miss * p_target, c_fa * (1 - p_target))


def min_dcf_and_threshold(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Kaldi ``sid/compute_min_dcf.py``: ``(normalised minDCF, threshold)``."""
    c_def = _check_costs(p_target, c_miss, c_fa)
    scores, labels = _split_scores(scores, labels, np.float64)
    order = np.argsort(scores, kind="stable")
    sorted_labels = labels[order]
    fnr = np.cumsum(sorted_labels) / sorted_labels.sum()
    fpr = 1.0 - np.cumsum(~sorted_labels) / (~sorted_labels).sum()
    c_det = c_miss * fnr * p_target + c_fa * fpr * (1 - p_target)
    best = int(np.argmin(c_det))  # first minimum, like Kaldi's strict '<'
    return float(c_det[best] / c_def), float(scores[order[best]])


def compute_min_dcf(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Normalised minimum detection cost, as Kaldi's ``sid/compute_min_dcf.py``."""
    return min_dcf_and_threshold(scores, labels, p_target, c_miss, c_fa)[0]


def bayes_threshold(p_target=0.01, c_miss=1.0, c_fa=1.0):
    """The log-likelihood ratio above which accepting costs less: ``log(c_fa (1 - p) / (c_miss p))``."""
    _check_costs(p_target, c_miss, c_fa)
    return float(np.log(c_fa * (1 - p_target)) - np.log(c_miss * p_target))


def act_dcf(llrs, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Normalised actual detection cost of log-likelihood ratios, decided at :func:`bayes_threshold`."""
    c_def = _check_costs(p_target, c_miss, c_fa)
    llrs, labels = _split_scores(llrs, labels, np.float64)
    accept = llrs > bayes_threshold(p_target, c_miss, c_fa)
    p_miss = np.count_nonzero(labels & ~accept) / np.count_nonzero(labels)
    p_fa = np.count_nonzero(~labels & accept) / np.count_nonzero(~labels)
    return float((c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)) / c_def)


def det_curve(scores, labels):
    """Miss and false-alarm rates at every distinct threshold (for DET plots).

    Returns ``(p_miss, p_fa)``, from accept-all (miss 0, fa 1) to reject-all.
    """
    scores, labels = _split_scores(scores, labels, np.float64)
    order = np.argsort(scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # Only the last position of each run of equal scores is a real threshold.
    last_of_run = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    p_miss = np.cumsum(sorted_labels)[last_of_run] / sorted_labels.sum()
    p_fa = 1.0 - np.cumsum(~sorted_labels)[last_of_run] / (~sorted_labels).sum()
    return np.concatenate(([0.0], p_miss)), np.concatenate(([1.0], p_fa))
