"""Verification metrics: EER and minDCF (vectorised)."""

import numpy as np


def _error_rates(scores, labels):
    """Miss and false-alarm rates at every threshold between sorted scores."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_tar, n_non = labels.sum(), (~labels).sum()
    if n_tar == 0 or n_non == 0:
        raise ValueError("need both target and non-target trials")
    order = np.argsort(scores, kind="mergesort")
    sorted_labels = labels[order]
    # Threshold just above the i-th lowest score: all scores <= it are rejected.
    fnr = np.concatenate(([0.0], np.cumsum(sorted_labels) / n_tar))
    fpr = np.concatenate(([1.0], 1.0 - np.cumsum(~sorted_labels) / n_non))
    return fnr, fpr


def compute_eer(scores, labels):
    """Equal error rate (a fraction) of target/non-target scores."""
    fnr, fpr = _error_rates(scores, labels)
    idx = np.argmin(np.abs(fnr - fpr))
    return float((fnr[idx] + fpr[idx]) / 2)


def compute_min_dcf(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Normalised minimum detection cost, as Kaldi's sid/compute_min_dcf.py."""
    fnr, fpr = _error_rates(scores, labels)
    c_det = c_miss * fnr * p_target + c_fa * fpr * (1 - p_target)
    c_def = min(c_miss * p_target, c_fa * (1 - p_target))
    return float(c_det.min() / c_def)
