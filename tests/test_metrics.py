"""EER / minDCF: Kaldi's definitions, checked against literal ports and sklearn's ROC."""

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from pyspk.metrics import compute_eer, compute_min_dcf, det_curve, eer_and_threshold, min_dcf_and_threshold


def kaldi_compute_eer_loop(target, nontarget):
    """Line-by-line port of ComputeEer in Kaldi's ivectorbin/compute-eer.cc (float32 scores)."""
    target = sorted(np.float32(target).tolist())
    nontarget = sorted(np.float32(nontarget).tolist())
    target_size, nontarget_size = len(target), len(nontarget)
    target_position = 0
    while target_position + 1 < target_size:
        nontarget_n = int(nontarget_size * target_position * 1.0 / target_size)
        nontarget_position = max(nontarget_size - 1 - nontarget_n, 0)
        if nontarget[nontarget_position] < target[target_position]:
            break
        target_position += 1
    return target_position / target_size, target[target_position]


def kaldi_min_dcf_loop(scores, labels, p_target, c_miss=1.0, c_fa=1.0):
    """Port of ComputeErrorRates + ComputeMinDcf of Kaldi's sid/compute_min_dcf.py."""
    pairs = sorted(enumerate(scores.tolist()), key=lambda pair: pair[1])
    sorted_labels = [int(labels[i]) for i, _ in pairs]
    fnrs, fprs = [], []
    for i, label in enumerate(sorted_labels):
        fnrs.append(label if i == 0 else fnrs[-1] + label)
        fprs.append(1 - label if i == 0 else fprs[-1] + 1 - label)
    n_tar = sum(sorted_labels)
    fnrs = [x / n_tar for x in fnrs]
    fprs = [1 - x / (len(sorted_labels) - n_tar) for x in fprs]
    min_c_det, threshold = float("inf"), pairs[0][1]
    for i in range(len(fnrs)):
        c_det = c_miss * fnrs[i] * p_target + c_fa * fprs[i] * (1 - p_target)
        if c_det < min_c_det:
            min_c_det, threshold = c_det, pairs[i][1]
    return min_c_det / min(c_miss * p_target, c_fa * (1 - p_target)), threshold


def random_trials(rng, n_tar, n_non, decimals=None):
    scores = np.concatenate([rng.normal(2.0, 1.0, n_tar), rng.normal(0.0, 1.0, n_non)])
    if decimals is not None:  # coarse rounding makes many ties
        scores = np.round(scores, decimals)
    labels = np.concatenate([np.ones(n_tar, bool), np.zeros(n_non, bool)])
    order = rng.permutation(scores.size)
    return scores[order], labels[order]


@pytest.mark.parametrize("n_tar,n_non,decimals", [(300, 3000, None), (300, 3000, 1), (57, 1000, 0),
                                                  (1, 50, None), (40, 1, None), (1, 1, None), (200, 200, 2)])
def test_eer_equals_kaldi_compute_eer(n_tar, n_non, decimals):
    rng = np.random.default_rng(n_tar * 7 + n_non)
    scores, labels = random_trials(rng, n_tar, n_non, decimals)
    eer, threshold = eer_and_threshold(scores, labels)
    expected_eer, expected_threshold = kaldi_compute_eer_loop(scores[labels], scores[~labels])
    assert eer == expected_eer
    assert threshold == pytest.approx(expected_threshold, abs=0)


@pytest.mark.parametrize("decimals", [None, 1, 0])
@pytest.mark.parametrize("p_target", [0.01, 0.05, 0.5])
def test_min_dcf_equals_kaldi_script(decimals, p_target):
    rng = np.random.default_rng(3)
    scores, labels = random_trials(rng, 250, 2500, decimals)
    min_dcf, threshold = min_dcf_and_threshold(scores, labels, p_target)
    expected, expected_threshold = kaldi_min_dcf_loop(scores, labels, p_target)
    assert min_dcf == pytest.approx(expected, rel=1e-12)
    assert threshold == expected_threshold


def roc_error_rates(scores, labels):
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return 1.0 - tpr, fpr


@pytest.mark.parametrize("p_target", [0.01, 0.05])
def test_min_dcf_against_sklearn_roc(p_target):
    rng = np.random.default_rng(11)
    scores, labels = random_trials(rng, 400, 4000)
    p_miss, p_fa = roc_error_rates(scores, labels)
    roc_min = np.min(p_target * p_miss + (1 - p_target) * p_fa) / min(p_target, 1 - p_target)
    assert compute_min_dcf(scores, labels, p_target) == pytest.approx(roc_min, rel=1e-12)


def test_min_dcf_with_ties_against_sklearn_roc():
    # Kaldi also evaluates positions inside runs of tied scores, so its minimum
    # can only be lower than the one over real thresholds (sklearn's ROC).
    rng = np.random.default_rng(12)
    scores, labels = random_trials(rng, 400, 4000, decimals=0)
    p_miss, p_fa = roc_error_rates(scores, labels)
    roc_min = np.min(0.01 * p_miss + 0.99 * p_fa) / 0.01
    kaldi = compute_min_dcf(scores, labels, 0.01)
    assert kaldi <= roc_min + 1e-12
    assert kaldi >= roc_min - 0.2  # and not by more than a run's worth


@pytest.mark.parametrize("decimals", [None, 1])
def test_eer_against_sklearn_roc(decimals):
    # The ROC crosses the diagonal between two thresholds (with ties, a whole
    # run of tied scores apart); Kaldi's estimate lies in that bracket, give or
    # take one target and one non-target step.
    rng = np.random.default_rng(5)
    n_tar, n_non = 500, 5000
    scores, labels = random_trials(rng, n_tar, n_non, decimals)
    p_miss, p_fa = roc_error_rates(scores, labels)  # thresholds decreasing: p_miss falls, p_fa rises
    k = int(np.flatnonzero(p_fa >= p_miss)[0])
    low, high = min(p_fa[k - 1], p_miss[k]), max(p_miss[k - 1], p_fa[k])
    step = 1 / n_tar + 1 / n_non
    if decimals is None:
        assert high - low <= step  # without ties the bracket is tight
    assert low - step <= compute_eer(scores, labels) <= high + step


def test_separable_scores():
    scores = np.array([0.1, 0.2, 0.3, 0.9, 1.0])
    labels = np.array([False, False, False, True, True])
    assert compute_eer(scores, labels) == 0.0
    assert compute_min_dcf(scores, labels, 0.01) == 0.0


def test_det_curve_matches_roc():
    rng = np.random.default_rng(8)
    scores, labels = random_trials(rng, 100, 900, decimals=1)
    p_miss, p_fa = det_curve(scores, labels)
    roc_miss, roc_fa = roc_error_rates(scores, labels)
    assert (p_miss[0], p_fa[0]) == (0.0, 1.0) and (p_miss[-1], p_fa[-1]) == (1.0, 0.0)
    # sklearn lists thresholds from high to low; ours go from accept-all upward.
    np.testing.assert_allclose(np.sort(p_miss), np.sort([*roc_miss[1:].tolist(), 1.0]))
    np.testing.assert_allclose(np.sort(p_fa), np.sort([*roc_fa[1:].tolist(), 0.0]))


@pytest.mark.parametrize("labels,message", [([True, True], "no non-target"), ([False, False], "no target")])
def test_one_class_only_is_an_error(labels, message):
    with pytest.raises(ValueError, match=message):
        compute_eer([0.1, 0.2], labels)
    with pytest.raises(ValueError, match=message):
        compute_min_dcf([0.1, 0.2], labels)


def test_nan_score_is_an_error():
    with pytest.raises(ValueError, match="not finite"):
        compute_eer([0.1, float("nan"), 0.3], [True, False, False])
