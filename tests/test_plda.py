"""PLDA, LDA and the PLDA back-end against Kaldi's definitions and closed forms."""

import numpy as np
import pytest

from pyspk.backend.embeddings import read_kaldi_object
from pyspk.backend.pipeline import PldaBackend, train_plda_backend
from pyspk.backend.plda import Plda, PldaScorer, estimate_plda
from pyspk.backend.scoring import score_matrix, score_pairs
from pyspk.backend.transforms import apply_transform, compute_lda, length_normalize
from pyspk.bin import copy_plda
from pyspk.data.datadir import DataDirError


def random_spd(rng, dim, scale):
    a = rng.standard_normal((dim, dim))
    return scale * (a @ a.T / dim + 0.3 * np.eye(dim))


def gaussian_speakers(rng, num_spk, dim, between, within, mean, min_utts=2, max_utts=8):
    counts = rng.integers(min_utts, max_utts + 1, num_spk)
    labels = np.repeat(np.arange(num_spk), counts)
    speakers = rng.multivariate_normal(np.zeros(dim), between, num_spk)
    x = mean + speakers[labels] + rng.multivariate_normal(np.zeros(dim), within, labels.size)
    return x, labels


@pytest.fixture(scope="module")
def model():
    """PLDA trained on synthetic speakers with known covariances."""
    rng = np.random.default_rng(0)
    dim = 6
    between, within, mean = random_spd(rng, dim, 2.0), random_spd(rng, dim, 0.5), rng.standard_normal(dim)
    x, labels = gaussian_speakers(rng, 4000, dim, between, within, mean)
    objectives = []
    plda = estimate_plda(x, labels, num_em_iters=10, objectives=objectives)
    return plda, between, within, mean, objectives


def test_plda_recovers_generating_covariances(model):
    plda, between, within, mean, _ = model
    est_within, est_between = plda.covariances()
    assert np.linalg.norm(est_within - within) / np.linalg.norm(within) < 0.03
    assert np.linalg.norm(est_between - between) / np.linalg.norm(between) < 0.08
    assert np.linalg.norm(plda.mean - mean) < 0.1


def test_plda_em_increases_likelihood_and_diagonalises(model):
    plda, *_, objectives = model
    assert len(objectives) == 10
    assert np.all(np.diff(objectives) > -1e-9)
    assert np.all(np.diff(plda.psi) <= 0) and np.all(plda.psi >= 0)
    est_within, est_between = plda.covariances()
    np.testing.assert_allclose(plda.transform @ est_within @ plda.transform.T, np.eye(plda.dim), atol=1e-9)
    np.testing.assert_allclose(plda.transform @ est_between @ plda.transform.T, np.diag(plda.psi), atol=1e-9)


def gaussian_logpdf(x, cov):
    _sign, logdet = np.linalg.slogdet(cov)
    return -0.5 * (x.size * np.log(2 * np.pi) + logdet + x @ np.linalg.solve(cov, x))


def naive_llr(plda, enroll_utts, test):
    """log p(enrol utts, test | same speaker) - log p(enrol utts) - log p(test), from the
    model's covariances in the input space (joint Gaussians, no diagonalisation)."""
    within, between = plda.covariances()
    utts = np.vstack([enroll_utts, test]) - plda.mean
    n = utts.shape[0]
    joint = np.kron(np.eye(n), within) + np.kron(np.ones((n, n)), between)
    enroll_only = joint[:-plda.dim, :-plda.dim]
    return (gaussian_logpdf(utts.ravel(), joint) - gaussian_logpdf(utts[:-1].ravel(), enroll_only)
            - gaussian_logpdf(utts[-1], within + between))


@pytest.mark.parametrize("num_enroll", [1, 3])
def test_plda_llr_equals_closed_form(model, num_enroll):
    plda = model[0]
    rng = np.random.default_rng(num_enroll)
    x, labels = gaussian_speakers(rng, 4, plda.dim, *plda.covariances()[::-1], plda.mean, 4, 4)
    enroll_utts = [x[labels == s][:num_enroll] for s in range(4)]
    tests = x[[4 * s + 3 for s in (0, 1, 2, 3)]][[0, 2, 1, 3]]  # 2 same-speaker, 2 different
    expected = [naive_llr(plda, e, t) for e, t in zip(enroll_utts, tests, strict=True)]

    enroll_means = np.array([e.mean(axis=0) for e in enroll_utts])
    enroll_t, _ = plda.transform_vectors(enroll_means, num_enroll, normalize_length=False)
    test_t, _ = plda.transform_vectors(tests, 1, normalize_length=False)
    np.testing.assert_allclose(plda.log_likelihood_ratio(enroll_t, num_enroll, test_t), expected, rtol=1e-9)

    # The vectorised scorer (dot product + biases) gives the same numbers.
    scorer = PldaScorer(plda, normalize_length=False)
    enroll = scorer.enroll_side(enroll_means, np.full(4, num_enroll))
    test = scorer.test_side(tests, enroll.group_values)
    np.testing.assert_allclose(score_pairs(enroll, test, np.arange(4), np.arange(4)), expected, rtol=1e-5)
    np.testing.assert_allclose(np.diag(score_matrix(enroll, test)), expected, rtol=1e-5)


def test_scorer_with_mixed_enrolment_counts(model):
    plda = model[0]
    rng = np.random.default_rng(9)
    enroll_x, test_x = rng.standard_normal((5, plda.dim)), rng.standard_normal((7, plda.dim))
    counts = np.array([1, 4, 2, 4, 1])
    scorer = PldaScorer(plda)  # with Kaldi's default length normalisation
    enroll = scorer.enroll_side(enroll_x, counts)
    test = scorer.test_side(test_x, enroll.group_values)
    enroll_t = np.vstack([plda.transform_vectors(enroll_x[i:i + 1], n)[0] for i, n in enumerate(counts)])
    test_t = plda.transform_vectors(test_x, 1)[0]
    ei, ti = np.repeat(np.arange(5), 7), np.tile(np.arange(7), 5)
    expected = plda.log_likelihood_ratio(enroll_t[ei], counts[ei], test_t[ti])
    np.testing.assert_allclose(score_pairs(enroll, test, ei, ti), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(score_matrix(enroll, test).ravel(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_examples", [1, 5])
def test_transform_length_normalisations(model, num_examples):
    plda = model[0]
    x = np.random.default_rng(2).standard_normal((10, plda.dim)) * 3
    y, factors = plda.transform_vectors(x, num_examples)
    quad = np.sum(y * y / (plda.psi + 1.0 / num_examples), axis=1)
    np.testing.assert_allclose(quad, plda.dim)
    raw, _ = plda.transform_vectors(x, num_examples, normalize_length=False)
    np.testing.assert_allclose(raw * factors[:, None], y)
    simple, _ = plda.transform_vectors(x, num_examples, simple_length_norm=True)
    np.testing.assert_allclose(np.linalg.norm(simple, axis=1), np.sqrt(plda.dim))


def test_smoothing_adds_between_to_within(model):
    plda = model[0]
    within, between = plda.covariances()
    smoothed_within, smoothed_between = plda.smooth_within_class_covariance(0.1).covariances()
    np.testing.assert_allclose(smoothed_within, within + 0.1 * between, atol=1e-9)
    np.testing.assert_allclose(smoothed_between, between, atol=1e-9)


@pytest.mark.parametrize("binary", [False, True])
def test_kaldi_format_round_trip(model, tmp_path, binary):
    plda = model[0]
    path = tmp_path / "plda"
    plda.write(path, binary=binary)
    back = Plda.read(path)
    np.testing.assert_array_equal(back.mean, plda.mean)
    np.testing.assert_array_equal(back.transform, plda.transform)
    np.testing.assert_array_equal(back.psi, plda.psi)


def test_kaldi_text_layout(tmp_path):
    plda = Plda([0.5, -1.0], [[1.0, 0.0], [0.25, 2.0]], [3.0, 1e-05])
    # Exactly what Kaldi's Plda::Write (text) produces, with full precision numbers.
    assert plda.to_kaldi_text() == ("<Plda>  [ 0.5 -1.0 ]\n [\n  1.0 0.0 \n  0.25 2.0 ]\n [ 3.0 1e-05 ]\n"
                                    "</Plda> \n")
    # As copy-plda --binary=false writes it (7 significant digits, no trailing newline).
    kaldi_text = "<Plda>  [ 0.5 -1 ]\n [\n  1 0 \n  0.25 2 ]\n [ 3 1e-05 ]\n</Plda> "
    (tmp_path / "kaldi.txt").write_text(kaldi_text)
    read = Plda.read(tmp_path / "kaldi.txt")
    np.testing.assert_array_equal(read.transform, plda.transform)
    np.testing.assert_array_equal(read.psi, plda.psi)


@pytest.mark.parametrize("content", ["<Plda> [ 1 2 ] [ 1 0 \n 0 1 ] </Plda>", "[ 1 ]", "<Plda> [ 1 2 ] [ 1 0 \n 0 ] "
                                     "[ 1 1 ] </Plda>"])
def test_malformed_plda_is_an_error(tmp_path, content):
    path = tmp_path / "plda"
    path.write_text(content)
    with pytest.raises(DataDirError, match=str(path)):
        Plda.read(path)


def test_lda_normalises_within_and_diagonalises_between():
    rng = np.random.default_rng(4)
    dim, lda_dim = 8, 5
    x, labels = gaussian_speakers(rng, 300, dim, random_spd(rng, dim, 1.0), random_spd(rng, dim, 0.5),
                                  rng.standard_normal(dim) + 2.0, 3, 6)
    lda = compute_lda(x, labels, lda_dim)
    assert lda.shape == (lda_dim, dim + 1)
    y = apply_transform(lda, x)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-9)
    spk_means = np.array([y[labels == s].mean(axis=0) for s in range(300)])
    within = sum((y[labels == s] - spk_means[s]).T @ (y[labels == s] - spk_means[s]) for s in range(300)) / len(y)
    np.testing.assert_allclose(within, np.eye(lda_dim), atol=1e-9)
    between = np.cov(y.T, bias=True) - within
    np.testing.assert_allclose(between, np.diag(np.diag(between)), atol=1e-9)
    assert np.all(np.diff(np.diag(between)) <= 1e-12)

    total_lda = compute_lda(x, labels, lda_dim, total_covariance_factor=1.0)
    np.testing.assert_allclose(np.cov(apply_transform(total_lda, x).T, bias=True), np.eye(lda_dim), atol=1e-9)


def test_length_normalize_matches_kaldi():
    x = np.array([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    y = length_normalize(x)
    np.testing.assert_allclose(np.linalg.norm(y[0]), 2.0)  # sqrt(dim)
    np.testing.assert_array_equal(y[1], 0.0)  # zero vectors stay as they are


def test_backend_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    dim = 10
    x, labels = gaussian_speakers(rng, 200, dim, random_spd(rng, dim, 2.0), random_spd(rng, dim, 0.5),
                                  rng.standard_normal(dim), 3, 6)
    backend = train_plda_backend(x, labels, lda_dim=6)
    backend.save(tmp_path)
    # Kaldi-readable single objects; the affine LDA has dim + 1 columns.
    assert read_kaldi_object(tmp_path / "mean.vec").shape == (dim,)
    assert read_kaldi_object(tmp_path / "transform.mat").shape == (6, dim + 1)
    loaded = PldaBackend.load(str(tmp_path))
    test_x = rng.standard_normal((20, dim))
    original = score_matrix(backend.scorer().enroll_side(test_x, 1), backend.scorer().test_side(test_x, [1]))
    scorer = loaded.scorer()
    reloaded = score_matrix(scorer.enroll_side(test_x, 1), scorer.test_side(test_x, [1]))
    np.testing.assert_allclose(reloaded, original, rtol=1e-4, atol=1e-4)  # mean/LDA stored as float
    with pytest.raises(ValueError, match="dimension"):
        scorer.enroll_side(rng.standard_normal((2, dim + 1)), 1)


def test_plda_needs_repeated_speakers():
    x = np.random.default_rng(0).standard_normal((5, 3))
    with pytest.raises(ValueError, match="more than one utterance"):
        estimate_plda(x, np.arange(5))


def test_copy_plda_converts_and_smooths(model, tmp_path):
    plda = model[0]
    plda.write(tmp_path / "plda.bin", binary=True)
    assert (tmp_path / "plda.bin").read_bytes().startswith(b"\0B<Plda> DV ")
    copy_plda.main(["--smoothing", "0.1", str(tmp_path / "plda.bin"), str(tmp_path / "plda.txt")])
    copied = Plda.read(tmp_path / "plda.txt")
    np.testing.assert_allclose(copied.psi, plda.smooth_within_class_covariance(0.1).psi)


def test_kaldi_made_plda_dir_is_scored_alike(tmp_path):
    """Kaldi's xvectors_train dir: binary plda, mean.vec, transform.mat and no backend.yaml."""
    rng = np.random.default_rng(8)
    dim = 8
    x, labels = gaussian_speakers(rng, 100, dim, random_spd(rng, dim, 2.0), random_spd(rng, dim, 0.5),
                                  rng.standard_normal(dim), 3, 5)
    backend = train_plda_backend(x, labels, lda_dim=5)
    backend.save(tmp_path / "ours")
    kaldi_dir = tmp_path / "kaldi"
    kaldi_dir.mkdir()
    for name in ("mean.vec", "transform.mat"):
        (kaldi_dir / name).write_bytes((tmp_path / "ours" / name).read_bytes())
    Plda.read(tmp_path / "ours" / "plda").write(kaldi_dir / "plda", binary=True)
    ours, kaldi = PldaBackend.load(str(tmp_path / "ours")), PldaBackend.load(str(kaldi_dir))
    assert kaldi.lnorm and kaldi.info == {}
    test_x = rng.standard_normal((6, dim))
    scores = [score_matrix(b.scorer().enroll_side(test_x, 2), b.scorer().test_side(test_x, [2])) for b in (ours, kaldi)]
    np.testing.assert_array_equal(scores[0], scores[1])
