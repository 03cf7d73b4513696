"""Unsupervised PLDA adaptation (Kaldi's ivector-adapt-plda) and steps/adapt_plda.sh: mechanisms, not EERs."""

import os
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import yaml
from conftest import no_traceback, run_script

from pyspk.backend.embeddings import read_kaldi_object, read_vector_scp
from pyspk.backend.pipeline import PldaBackend
from pyspk.backend.plda import Plda, adapt_plda
from pyspk.backend.scoring import read_scores
from pyspk.data.datadir import read_trials, write_trials

DIM = 6


@pytest.fixture
def plda():
    """A PLDA model with a generic transform, decreasing psi and a non-zero mean."""
    rng = np.random.default_rng(0)
    transform = rng.standard_normal((DIM, DIM)) + 2 * np.eye(DIM)
    return Plda(rng.standard_normal(DIM), transform, [4.0, 2.5, 1.2, 0.6, 0.2, 0.05])


def exact_sample(rng, n, mean, covar):
    """``n`` rows whose sample mean and (biased) sample covariance are exactly ``mean`` and ``covar``."""
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(z.T @ z / n)).T
    return mean + z @ np.linalg.cholesky(covar).T


def covariances_in_plda_space(adapted, original):
    """Within and between covariances of ``adapted`` seen through ``original``'s transform."""
    within, between = adapted.covariances()
    t = original.transform
    return t @ within @ t.T, t @ between @ t.T


def from_plda_space(plda, y_covar):
    """Input-space covariance whose image under ``plda.transform`` is ``y_covar``."""
    inverse = np.linalg.inv(plda.transform)
    return inverse @ y_covar @ inverse.T


def assert_diagonalises(model):
    within, between = model.covariances()
    np.testing.assert_allclose(model.transform @ within @ model.transform.T, np.eye(model.dim), atol=1e-9)
    np.testing.assert_allclose(model.transform @ between @ model.transform.T, np.diag(model.psi), atol=1e-9)
    assert np.all(np.diff(model.psi) <= 1e-12) and np.all(model.psi >= 0)


def test_data_from_the_model_leaves_it_nearly_unchanged(plda):
    rng = np.random.default_rng(1)
    within, between = plda.covariances()
    num_spk, num_utt = 20000, 4
    speakers = rng.multivariate_normal(np.zeros(DIM), between, num_spk)
    x = plda.mean + np.repeat(speakers, num_utt, axis=0) + rng.multivariate_normal(np.zeros(DIM), within,
                                                                                     num_spk * num_utt)
    adapted = adapt_plda(plda, x)
    assert_diagonalises(adapted)
    new_within, new_between = covariances_in_plda_space(adapted, plda)
    # Only sampling noise can exceed the model's variance: a few per cent at most.
    assert np.linalg.norm(new_within - np.eye(DIM)) < 0.04 * np.sqrt(DIM)
    assert np.linalg.norm(new_between - np.diag(plda.psi)) < 0.05 * np.linalg.norm(plda.psi)
    np.testing.assert_allclose(adapted.psi, plda.psi, rtol=0.06, atol=0.01)
    np.testing.assert_allclose(adapted.mean, x.mean(axis=0))


@pytest.mark.parametrize("within_scale,between_scale", [(0.75, 0.25), (0.3, 0.7)])
def test_excess_variance_is_split_between_within_and_between(plda, within_scale, between_scale):
    """In the space where the model's total covariance D = I + diag(psi) is unit, the data has
    variance 3 along v and 0.5 along w (orthogonal); 1 elsewhere. Only the excess along v,
    D^1/2 (2 v v^T) D^1/2 in the PLDA's transformed space, is added, in the given shares."""
    rng = np.random.default_rng(2)
    sqrt_total = np.diag(np.sqrt(1.0 + plda.psi))
    v, w = np.linalg.qr(rng.standard_normal((DIM, 2)))[0].T
    unit_covar = np.eye(DIM) + 2.0 * np.outer(v, v) - 0.5 * np.outer(w, w)
    y_covar = sqrt_total @ unit_covar @ sqrt_total
    x = exact_sample(rng, 500, plda.mean, from_plda_space(plda, y_covar))
    adapted = adapt_plda(plda, x, within_scale, between_scale)
    assert_diagonalises(adapted)
    np.testing.assert_allclose(adapted.mean, plda.mean, atol=1e-12)
    excess = sqrt_total @ (2.0 * np.outer(v, v)) @ sqrt_total
    new_within, new_between = covariances_in_plda_space(adapted, plda)
    np.testing.assert_allclose(new_within, np.eye(DIM) + within_scale * excess, atol=1e-9)
    np.testing.assert_allclose(new_between, np.diag(plda.psi) + between_scale * excess, atol=1e-9)
    # Along w (less variance than the model expects) both are as they were.
    u = np.linalg.inv(sqrt_total) @ w  # u . y projects on w in the unit-total space, where v is orthogonal
    assert abs(u @ sqrt_total @ v) < 1e-12
    assert u @ new_within @ u == pytest.approx(u @ u)
    assert u @ new_between @ u == pytest.approx(u @ np.diag(plda.psi) @ u)


def test_less_variance_everywhere_changes_only_the_mean(plda):
    rng = np.random.default_rng(3)
    y_covar = 0.5 * np.diag(1.0 + plda.psi)
    new_mean = plda.mean + 0.01
    x = exact_sample(rng, 200, new_mean, from_plda_space(plda, y_covar))
    adapted = adapt_plda(plda, x, mean_diff_scale=0.0)
    np.testing.assert_allclose(adapted.mean, new_mean, atol=1e-12)
    for new, old in zip(adapted.covariances(), plda.covariances(), strict=True):
        np.testing.assert_allclose(new, old, atol=1e-9)


@pytest.mark.parametrize("mean_diff_scale", [0.0, 0.5, 1.0])
def test_mean_moves_to_the_adaptation_mean_and_its_shift_counts_as_variance(plda, mean_diff_scale):
    """Data with the model's own covariance but a mean shifted by c along axis k of the
    transformed space: the shift's outer product, times mean_diff_scale, is excess variance."""
    rng = np.random.default_rng(4)
    k, c = 2, 1.5
    shift = np.linalg.solve(plda.transform, c * np.eye(DIM)[k])
    total = from_plda_space(plda, np.diag(1.0 + plda.psi))
    x = exact_sample(rng, 300, plda.mean + shift, total)
    adapted = adapt_plda(plda, x, mean_diff_scale=mean_diff_scale)
    np.testing.assert_allclose(adapted.mean, plda.mean + shift, atol=1e-12)
    excess = mean_diff_scale * c ** 2 * np.outer(np.eye(DIM)[k], np.eye(DIM)[k])
    new_within, new_between = covariances_in_plda_space(adapted, plda)
    np.testing.assert_allclose(new_within, np.eye(DIM) + 0.75 * excess, atol=1e-9)
    np.testing.assert_allclose(new_between, np.diag(plda.psi) + 0.25 * excess, atol=1e-9)


def kaldi_update_plda(plda, x, within_covar_scale, between_covar_scale, mean_diff_scale):
    """PldaUnsupervisedAdaptor::UpdatePlda step by step, as Kaldi orders it: eigen-directions
    P of the projected variance, per-direction additions to P^T W P and P^T B P, back through
    the inverse of the combined transform, Cholesky, eigen."""
    mean = x.mean(axis=0)
    variance = x.T @ x / len(x) - np.outer(mean, mean)
    diff = mean - plda.mean
    variance = variance + mean_diff_scale * np.outer(diff, diff)
    transform_mod = plda.transform / np.sqrt(1.0 + plda.psi)[:, None]
    s, p = np.linalg.eigh(transform_mod @ variance @ transform_mod.T)
    s, p = s[::-1], p[:, ::-1]
    w_proj2 = p.T @ np.diag(1.0 / (1.0 + plda.psi)) @ p
    b_proj2 = p.T @ np.diag(plda.psi / (1.0 + plda.psi)) @ p
    for i in range(plda.dim):
        if s[i] > 1.0:
            w_proj2[i, i] += (s[i] - 1.0) * within_covar_scale
            b_proj2[i, i] += (s[i] - 1.0) * between_covar_scale
    combined_inv = np.linalg.inv(p.T @ transform_mod)
    w_mod = combined_inv @ w_proj2 @ combined_inv.T
    b_mod = combined_inv @ b_proj2 @ combined_inv.T
    c_inv = np.linalg.inv(np.linalg.cholesky(w_mod))
    psi, q = np.linalg.eigh(c_inv @ b_mod @ c_inv.T)
    return Plda(mean, q[:, ::-1].T @ c_inv, psi[::-1])


def test_matches_kaldis_step_by_step_update(plda):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((DIM, DIM))
    x = rng.standard_normal((400, DIM)) @ a.T * 1.5 + plda.mean + 0.3
    for scales in ((0.75, 0.25, 1.0), (0.3, 0.7, 0.0), (1.0, 1.0, 2.0)):
        ours, kaldi = adapt_plda(plda, x, *scales), kaldi_update_plda(plda, x, *scales)
        np.testing.assert_allclose(ours.mean, kaldi.mean, atol=1e-12)
        np.testing.assert_allclose(ours.psi, kaldi.psi, rtol=1e-9, atol=1e-12)
        for mine, theirs in zip(ours.covariances(), kaldi.covariances(), strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=1e-9, atol=1e-9)
        # Same transform up to the sign of each row (eigenvector signs are arbitrary).
        np.testing.assert_allclose(np.abs(ours.transform), np.abs(kaldi.transform), rtol=1e-7, atol=1e-9)


def test_adaptation_has_no_side_effects_and_checks_its_input(plda):
    before = (plda.mean.copy(), plda.transform.copy(), plda.psi.copy())
    x = np.random.default_rng(6).standard_normal((50, DIM)) * 3
    adapt_plda(plda, x)
    for now, then in zip((plda.mean, plda.transform, plda.psi), before, strict=True):
        np.testing.assert_array_equal(now, then)
    with pytest.raises(ValueError, match="dimension 6"):
        adapt_plda(plda, x[:, :5])
    with pytest.raises(ValueError, match="at least 2 vectors"):
        adapt_plda(plda, x[:1])
    with pytest.raises(ValueError, match="within_covar_scale"):
        adapt_plda(plda, x, within_covar_scale=-0.1)
    with pytest.raises(ValueError, match="mean_diff_scale"):
        adapt_plda(plda, x, mean_diff_scale=float("nan"))


def test_adapted_model_kaldi_text_round_trip(plda, tmp_path):
    x = np.random.default_rng(7).standard_normal((80, DIM)) * 2
    adapted = adapt_plda(plda, x)
    adapted.write(tmp_path / "plda")
    assert (tmp_path / "plda").read_text().startswith("<Plda>  [ ")
    back = Plda.read(tmp_path / "plda")
    np.testing.assert_array_equal(back.mean, adapted.mean)
    np.testing.assert_array_equal(back.transform, adapted.transform)
    np.testing.assert_array_equal(back.psi, adapted.psi)


# ---- steps/adapt_plda.sh between steps/train_plda.sh and steps/score_plda.sh ------------------

XV_DIM = 16


def write_xvector_dir(path, keys, vectors):
    os.makedirs(path, exist_ok=True)
    with kaldiio.WriteHelper(f"ark,scp:{path}/xvector.ark,{path}/xvector.scp") as writer:
        for key, vector in zip(keys, vectors, strict=True):
            writer(key, vector.astype(np.float32))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Out-of-domain labelled training x-vectors; in-domain unlabelled adaptation and test
    x-vectors with another mean and extra (channel) variance in a few directions."""
    root = tmp_path_factory.mktemp("adapt")
    rng = np.random.default_rng(11)
    speaker_subspace = rng.standard_normal((6, XV_DIM))
    channel = rng.standard_normal((3, XV_DIM))
    in_domain_offset = rng.standard_normal(XV_DIM)

    def speakers(prefix, num_spk, num_utt, in_domain):
        centres = rng.standard_normal((num_spk, 6)) @ speaker_subspace + 1.0
        if in_domain:
            centres += in_domain_offset + rng.standard_normal((num_spk, 3)) @ channel
        keys = [f"{prefix}{s:03d}-{u}" for s in range(num_spk) for u in range(num_utt)]
        x = np.repeat(centres, num_utt, axis=0) + 0.8 * rng.standard_normal((len(keys), XV_DIM))
        if in_domain:
            x += 0.7 * rng.standard_normal((len(keys), 3)) @ channel
        return keys, x

    keys, x = speakers("tr", 80, 5, False)
    write_xvector_dir(root / "xv_train", keys, x)
    os.makedirs(root / "data_train")
    (root / "data_train" / "utt2spk").write_text("".join(f"{k} {k.split('-')[0]}\n" for k in keys))
    keys, x = speakers("ad", 60, 4, True)
    write_xvector_dir(root / "xv_adapt", keys, x)
    keys, x = speakers("te", 8, 3, True)
    write_xvector_dir(root / "xv_test", keys, x)
    write_trials(root / "trials", [(a, b, a[:5] == b[:5]) for i, a in enumerate(keys) for b in keys[i + 1:]])
    run_script(["steps/train_plda.sh", "--lda-dim", "10", f"{root}/xv_train", f"{root}/data_train",
                f"{root}/plda"])
    return root


def test_step_adapts_and_scores(corpus):
    root = str(corpus)
    plda_dir, out = f"{root}/plda", f"{root}/plda_adapt"
    proc = run_script(["steps/adapt_plda.sh", f"{root}/plda", f"{root}/xv_adapt", out])
    assert "adapted the PLDA back-end" in proc.stdout
    assert sorted(os.listdir(out)) == ["adaptation.yaml", "backend.yaml", "log", "mean.vec", "plda",
                                       "transform.mat"]
    assert "Done: PLDA of dimension 10" in Path(f"{out}/log/adapt_plda.log").read_text()
    assert Path(f"{out}/transform.mat").read_bytes() == Path(f"{plda_dir}/transform.mat").read_bytes()
    x = read_vector_scp(f"{root}/xv_adapt/xvector.scp")[1].astype(np.float64)
    np.testing.assert_allclose(read_kaldi_object(f"{out}/mean.vec"), x.mean(axis=0), rtol=1e-6, atol=1e-6)

    # The plda is the trained one adapted on the sre16 pipe: minus the set's mean, LDA, length norm.
    trained, adapted = PldaBackend.load(plda_dir), PldaBackend.load(out)
    assert adapted.lnorm == trained.lnorm and adapted.info == trained.info
    vectors = PldaBackend(trained.plda, x.mean(axis=0), trained.lda, trained.lnorm).preprocess(x)
    expected = adapt_plda(trained.plda, vectors, 0.75, 0.25, 1.0)
    for got, want in zip(adapted.plda.covariances(), expected.covariances(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # the x-vectors were float32 in the scp
    assert not np.allclose(adapted.plda.psi, trained.plda.psi, rtol=0.01)
    record = yaml.safe_load(Path(f"{out}/adaptation.yaml").read_text())
    assert record == {"adaptations": [{"plda_dir": plda_dir, "xvector_dir": f"{root}/xv_adapt",
                                       "num_vectors": len(x), "within_covar_scale": 0.75,
                                       "between_covar_scale": 0.25, "mean_diff_scale": 1.0}]}

    # steps/score_plda.sh takes the adapted dir as it is.
    run_script(["steps/score_plda.sh", out, f"{root}/trials", f"{root}/xv_test", f"{root}/xv_test",
                f"{root}/scores/adapted"])
    trials, scores = read_trials(f"{root}/trials"), read_scores(f"{root}/scores/adapted")
    assert (scores[0], scores[1]) == ([t[0] for t in trials], [t[1] for t in trials])
    assert np.all(np.isfinite(scores[2]))

    # An adapted back-end adapts again; the records accumulate.
    run_script(["steps/adapt_plda.sh", "--mean-diff-scale", "0", out, f"{root}/xv_adapt", f"{root}/plda_adapt2"])
    record = yaml.safe_load(Path(f"{root}/plda_adapt2/adaptation.yaml").read_text())
    assert [r["plda_dir"] for r in record["adaptations"]] == [plda_dir, out]
    assert record["adaptations"][1]["mean_diff_scale"] == 0.0


def test_step_is_idempotent(corpus):
    root = str(corpus)
    out = f"{root}/plda_idem"
    args = [f"{root}/plda", f"{root}/xv_adapt", out]
    run_script(["steps/adapt_plda.sh", *args])
    first = Path(f"{out}/plda").read_text()
    mtime = os.path.getmtime(f"{out}/plda")
    proc = run_script(["steps/adapt_plda.sh", *args])
    assert "nothing to do" in proc.stdout
    assert os.path.getmtime(f"{out}/plda") == mtime
    proc = run_script(["steps/adapt_plda.sh", "--within-covar-scale", "0.5", *args])  # other settings: re-adapts
    assert "nothing to do" not in proc.stdout
    assert Path(f"{out}/plda").read_text() != first
    assert yaml.safe_load(Path(f"{out}/adaptation.yaml").read_text())["adaptations"][0]["within_covar_scale"] == 0.5


def test_step_errors_are_clear(corpus, tmp_path):
    root = str(corpus)
    bad = tmp_path / "xv_bad"
    write_xvector_dir(bad, ["a", "b", "c"], np.random.default_rng(0).standard_normal((3, XV_DIM - 4)))
    out = tmp_path / "out"
    proc = run_script(["steps/adapt_plda.sh", f"{root}/plda", str(bad), str(out)], check=False)
    assert proc.returncode != 0
    assert (f"{bad}/xvector.scp: x-vectors have dimension {XV_DIM - 4}, the back-end in {root}/plda "
            f"takes {XV_DIM}") in proc.stderr
    no_traceback(proc)
    assert not (out / "plda").exists() and not (out / "log" / ".adapt_plda.done").exists()

    one = tmp_path / "xv_one"
    write_xvector_dir(one, ["a"], np.ones((1, XV_DIM)))
    proc = run_script(["steps/adapt_plda.sh", f"{root}/plda", str(one), str(out)], check=False)
    assert proc.returncode != 0 and f"{one}/xvector.scp: PLDA adaptation needs at least 2 x-vectors" in proc.stderr
    no_traceback(proc)

    proc = run_script(["steps/adapt_plda.sh", f"{root}/plda", str(tmp_path / "missing"), str(out)], check=False)
    assert proc.returncode != 0 and f"no such file {tmp_path}/missing/xvector.scp" in proc.stderr
    proc = run_script(["steps/adapt_plda.sh", "--between-covar-scale", "-1", f"{root}/plda", f"{root}/xv_adapt",
                       str(out)], check=False)
    assert proc.returncode != 0 and "--between-covar-scale must be a non-negative number" in proc.stderr
    proc = run_script(["steps/adapt_plda.sh", f"{root}/plda", f"{root}/xv_adapt", f"{root}/plda"], check=False)
    assert proc.returncode != 0 and "must differ" in proc.stderr
    proc = run_script(["steps/adapt_plda.sh", f"{root}/plda"], check=False)
    assert proc.returncode != 0 and proc.stderr.startswith("Usage: ")
