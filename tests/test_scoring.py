"""Trial scoring, AS-norm, score/result files, x-vector dirs and the steps/ scripts."""

import os
from pathlib import Path

import kaldiio
import numpy as np
import pytest
from conftest import run_script

from pyspk.backend.cosine import CosineScorer
from pyspk.backend.embeddings import EmbeddingDir, read_vector_scp, write_vector_scp
from pyspk.backend.norm import asnorm_trials
from pyspk.backend.plda import Plda, PldaScorer
from pyspk.backend.plots import plot_det, plot_score_histogram
from pyspk.backend.results import format_result, update_results
from pyspk.backend.scoring import index_trials, match_scores_to_trials, read_scores, score_pairs, write_scores
from pyspk.backend.trials import load_cohort
from pyspk.data.datadir import DataDirError, read_trials, write_trials
from pyspk.metrics import compute_eer


def test_cosine_scores_equal_naive():
    rng = np.random.default_rng(0)
    enroll_x, test_x, mean = rng.standard_normal((6, 5)), rng.standard_normal((9, 5)), rng.standard_normal(5)
    ei, ti = rng.integers(0, 6, 40), rng.integers(0, 9, 40)
    scorer = CosineScorer(mean)
    scores = score_pairs(scorer.enroll_side(enroll_x), scorer.test_side(test_x), ei, ti, batch_size=7)

    def cosine(a, b):
        return (a - mean) @ (b - mean) / np.linalg.norm(a - mean) / np.linalg.norm(b - mean)

    np.testing.assert_allclose(scores, [cosine(enroll_x[e], test_x[t]) for e, t in zip(ei, ti, strict=True)], rtol=1e-5)
    dot = score_pairs(CosineScorer(lnorm=False).enroll_side(enroll_x), CosineScorer(lnorm=False).test_side(test_x),
                      ei, ti)
    np.testing.assert_allclose(dot, np.einsum("ij,ij->i", enroll_x[ei], test_x[ti]), rtol=1e-5)


def naive_asnorm(score_fn, enroll_x, test_x, cohort_x, ei, ti, top_n):
    """Per trial: sort each side's cohort scores, keep the top n, normalise both ways."""
    out = []
    for e, t in zip(ei, ti, strict=True):
        s = score_fn(enroll_x[e], test_x[t])
        e_top = sorted((score_fn(enroll_x[e], c) for c in cohort_x), reverse=True)[:top_n]
        t_top = sorted((score_fn(test_x[t], c) for c in cohort_x), reverse=True)[:top_n]
        out.append(0.5 * ((s - np.mean(e_top)) / np.std(e_top) + (s - np.mean(t_top)) / np.std(t_top)))
    return np.array(out)


@pytest.mark.parametrize("top_n", [5, 0])
def test_asnorm_cosine(top_n):
    rng = np.random.default_rng(1)
    enroll_x, test_x, cohort_x = (rng.standard_normal((n, 4)) for n in (3, 4, 30))
    ei, ti = np.array([0, 1, 2, 2, 0]), np.array([0, 3, 1, 2, 2])
    scorer = CosineScorer()
    raw = score_pairs(scorer.enroll_side(enroll_x), scorer.test_side(test_x), ei, ti)
    normed = asnorm_trials(scorer, enroll_x, np.ones(3), test_x, cohort_x, ei, ti, raw, top_n)

    def cosine(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    expected = naive_asnorm(cosine, enroll_x, test_x, cohort_x, ei, ti, top_n or len(cohort_x))
    np.testing.assert_allclose(normed, expected, rtol=1e-4, atol=1e-5)


def test_asnorm_plda_uses_enrolment_counts():
    rng = np.random.default_rng(2)
    dim = 4
    a = rng.standard_normal((dim, dim)) + 2 * np.eye(dim)
    plda = Plda(rng.standard_normal(dim), a, [3.0, 2.0, 0.5, 0.1])
    scorer = PldaScorer(plda)
    enroll_x, test_x, cohort_x = (rng.standard_normal((n, dim)) for n in (3, 4, 25))
    counts = np.array([1, 3, 2])
    ei, ti = np.array([0, 1, 2, 1]), np.array([0, 1, 3, 2])
    enroll = scorer.enroll_side(enroll_x, counts)
    raw = score_pairs(enroll, scorer.test_side(test_x, enroll.group_values), ei, ti)
    normed = asnorm_trials(scorer, enroll_x, counts, test_x, cohort_x, ei, ti, raw, 10)

    def llr(x, n, y):
        tx = plda.transform_vectors(x[None], n)[0]
        return plda.log_likelihood_ratio(tx, n, plda.transform_vectors(y[None], 1)[0])[0]

    expected = []
    for e, t, s in zip(ei, ti, raw, strict=True):
        e_top = sorted((llr(enroll_x[e], counts[e], c) for c in cohort_x), reverse=True)[:10]
        t_top = sorted((llr(test_x[t], 1, c) for c in cohort_x), reverse=True)[:10]
        expected.append(0.5 * ((s - np.mean(e_top)) / np.std(e_top) + (s - np.mean(t_top)) / np.std(t_top)))
    np.testing.assert_allclose(normed, expected, rtol=1e-4, atol=1e-4)


def test_index_trials_missing_keys(tmp_path):
    trials = [("a", "x", True), ("b", "y", False), ("zz", "x", False), ("a", "q", True)]
    with pytest.raises(DataDirError, match=r"trials:3: enrollment 'zz' not in enroll.scp \(2 trials"):
        index_trials(trials, "trials", ["a", "b"], ["x", "y"], "enroll.scp", "test.scp")
    kept, ei, ti = index_trials(trials, "trials", ["a", "b"], ["x", "y"], "enroll.scp", "test.scp",
                                skip_missing=True)
    assert kept.tolist() == [0, 1] and ei.tolist() == [0, 1] and ti.tolist() == [0, 1]


def test_score_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "scores"
    write_scores(path, ["a", "b"], ["x", "y"], np.array([0.5, -1.25]))
    assert path.read_text() == "a x 0.500000\nb y -1.250000\n"
    assert read_scores(path)[2].tolist() == [0.5, -1.25]
    for content, message in [("a x 0.5\nb y nan\n", ":2: score is nan"), ("a x\n", ":1: expected"),
                             ("a x one\n", ":1: score 'one' is not a number")]:
        path.write_text(content)
        with pytest.raises(DataDirError, match=message):
            read_scores(path)


def test_match_scores_to_trials(tmp_path):
    trials = [("a", "x", True), ("a", "y", False), ("b", "x", False)]
    scores = tmp_path / "scores"
    scores.write_text("b x -1.0\na x 2.0\na y 0.0\n")  # any order
    values, labels, skipped = match_scores_to_trials(trials, "trials", scores)
    assert values.tolist() == [-1.0, 2.0, 0.0] and labels.tolist() == [False, True, False] and skipped == 0
    scores.write_text("a x 2.0\nb y 1.0\n")
    with pytest.raises(DataDirError, match="scores:2: 'b y' is not a trial"):
        match_scores_to_trials(trials, "trials", scores)
    scores.write_text("a x 2.0\na x 1.0\n")
    with pytest.raises(DataDirError, match="scores:2: second score"):
        match_scores_to_trials(trials, "trials", scores)
    scores.write_text("a x 2.0\nb x 1.0\n")
    with pytest.raises(DataDirError, match="trials:2: no score"):
        match_scores_to_trials(trials, "trials", scores)
    assert match_scores_to_trials(trials, "trials", scores, skip_missing=True)[2] == 1


def test_results_file_keeps_one_line_per_system(tmp_path):
    path = str(tmp_path / "exp" / "results.txt")
    update_results(path, "cos", format_result("cos", 0.03224, [(0.01, 0.3492), (0.05, 0.2)], "trials"))
    update_results(path, "plda", format_result("plda", 0.02, [(0.01, 0.25)], "trials"))
    update_results(path, "cos", format_result("cos", 0.031, [(0.01, 0.3)], "trials"))
    lines = Path(path).read_text().splitlines()
    assert lines == ["system=cos EER=3.1% minDCF(p=0.01)=0.3000 trials=trials",
                     "system=plda EER=2% minDCF(p=0.01)=0.2500 trials=trials"]
    assert os.listdir(tmp_path / "exp") == ["results.txt"]


def test_vector_scp_io_and_errors(tmp_path):
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((3, 4)).astype(np.float32)
    write_vector_scp(str(tmp_path / "x.ark"), str(tmp_path / "x.scp"), ["u1", "u2", "u3"], matrix)
    keys, read = read_vector_scp(tmp_path / "x.scp")
    assert keys == ["u1", "u2", "u3"]
    np.testing.assert_array_equal(read, matrix)
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/bad.ark,{tmp_path}/bad.scp") as writer:
        writer("u1", np.zeros(4, np.float32))
        writer("u2", np.zeros(3, np.float32))
    with pytest.raises(DataDirError, match=r"bad.scp:2: 'u2' has dimension 3, the first vector has 4"):
        read_vector_scp(tmp_path / "bad.scp")


def test_vector_scp_bulk_read_matches_kaldiio(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    matrix = rng.standard_normal((6, 5)).astype(np.float32)
    keys = [f"u{i}" for i in range(6)]
    write_vector_scp(str(tmp_path / "a.ark"), str(tmp_path / "a.scp"), keys[:3], matrix[:3])
    write_vector_scp(str(tmp_path / "b.ark"), str(tmp_path / "b.scp"), keys[3:], matrix[3:])
    lines = (tmp_path / "a.scp").read_text().splitlines() + (tmp_path / "b.scp").read_text().splitlines()
    (tmp_path / "x.scp").write_text("".join(lines[i] + "\n" for i in (4, 0, 5, 2, 1, 3)))  # arks interleaved
    with kaldiio.WriteHelper(f"ark,t,scp:{tmp_path}/t.ark,{tmp_path}/t.scp") as writer:  # text: kaldiio's path
        for key, row in zip(keys, matrix, strict=True):
            writer(key, row)
    np.testing.assert_allclose(read_vector_scp(tmp_path / "t.scp")[1], matrix, rtol=1e-6)
    expected = np.stack([kaldiio.load_mat(line.split()[1]) for line in (tmp_path / "x.scp").read_text().splitlines()])
    monkeypatch.setattr(kaldiio, "load_scp_sequential", None)  # binary float arks: read in bulk
    bulk_keys, bulk = read_vector_scp(tmp_path / "x.scp")
    assert bulk_keys == [keys[i] for i in (4, 0, 5, 2, 1, 3)]
    np.testing.assert_array_equal(bulk, matrix[[4, 0, 5, 2, 1, 3]])
    np.testing.assert_array_equal(bulk, expected)
    matrix[4, 1] = np.nan
    write_vector_scp(str(tmp_path / "b.ark"), str(tmp_path / "b.scp"), keys[3:], matrix[3:])
    with pytest.raises(DataDirError, match=r"x.scp:1: 'u4' has non-finite values"):
        read_vector_scp(tmp_path / "x.scp")


# ---- the steps/ scripts on a synthetic x-vector corpus -------------------------------------

def write_xvector_dir(path, keys, vectors, utt2spk=None):
    os.makedirs(path, exist_ok=True)
    with kaldiio.WriteHelper(f"ark,scp:{path}/xvector.ark,{path}/xvector.scp") as writer:
        for key, vector in zip(keys, vectors, strict=True):
            writer(key, vector.astype(np.float32))
    if utt2spk:  # as Kaldi's extract_xvectors.sh: speaker means and counts
        speakers = sorted(set(utt2spk.values()))
        index = {key: i for i, key in enumerate(keys)}
        with kaldiio.WriteHelper(f"ark,scp:{path}/spk_xvector.ark,{path}/spk_xvector.scp") as writer:
            for spk in speakers:
                rows = [index[u] for u in keys if utt2spk[u] == spk]
                writer(spk, vectors[rows].mean(axis=0).astype(np.float32))
        with open(f"{path}/num_utts.ark", "w") as f:
            f.writelines(f"{spk} {sum(1 for u in keys if utt2spk[u] == spk)}\n" for spk in speakers)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Train and test x-vector dirs of Gaussian speakers, a train data dir and test trials."""
    root = tmp_path_factory.mktemp("xv")
    rng = np.random.default_rng(7)
    dim = 24
    speaker_subspace = rng.standard_normal((8, dim))  # speakers differ in 8 of the 24 dimensions

    def speakers(prefix, num_spk, num_utt):
        centres = rng.standard_normal((num_spk, 8)) @ speaker_subspace * 0.9 + 2.0
        utt2spk = {f"{prefix}{s:03d}-{u}": f"{prefix}{s:03d}" for s in range(num_spk) for u in range(num_utt)}
        keys = sorted(utt2spk)
        x = np.array([centres[int(utt2spk[k][-3:])] for k in keys]) + rng.standard_normal((len(keys), dim))
        return keys, x, utt2spk

    train_keys, train_x, train_utt2spk = speakers("tr", 100, 6)
    write_xvector_dir(root / "xv_train", train_keys, train_x)
    os.makedirs(root / "data_train")
    with open(root / "data_train" / "utt2spk", "w") as f:
        f.writelines(f"{k} {train_utt2spk[k]}\n" for k in train_keys)
    test_keys, test_x, test_utt2spk = speakers("te", 12, 5)
    write_xvector_dir(root / "xv_test", test_keys, test_x, test_utt2spk)
    trials = [(a, b, test_utt2spk[a] == test_utt2spk[b]) for i, a in enumerate(test_keys) for b in test_keys[i + 1:]]
    write_trials(root / "trials", trials)
    spk_trials = [(s, u, s == test_utt2spk[u]) for s in sorted(set(test_utt2spk.values())) for u in test_keys]
    write_trials(root / "spk_trials", spk_trials)
    return root


@pytest.fixture(scope="module")
def plda_dir(corpus):
    run_script(["steps/train_plda.sh", "--lda-dim", "12", f"{corpus}/xv_train", f"{corpus}/data_train",
                f"{corpus}/plda"])
    return f"{corpus}/plda"


def test_steps_train_score_and_metrics(corpus, plda_dir):
    root = str(corpus)
    assert sorted(os.listdir(plda_dir)) == ["backend.yaml", "log", "mean.vec", "plda", "transform.mat"]
    assert Path(f"{plda_dir}/plda").read_text().startswith("<Plda>  [ ")
    run_script(["steps/score_plda.sh", "--asnorm-cohort", f"{root}/xv_train", "--cohort-data", f"{root}/data_train",
                "--cohort-level", "spk", "--top-n", "50", plda_dir,
                f"{root}/trials", f"{root}/xv_test", f"{root}/xv_test", f"{root}/scores/plda"])
    run_script(["steps/score_cosine.sh", "--mean-dir", f"{root}/xv_train", f"{root}/trials", f"{root}/xv_test",
                f"{root}/xv_test", f"{root}/scores/cosine"])
    trials = read_trials(f"{root}/trials")
    for name in ("plda", "cosine"):
        scores = read_scores(f"{root}/scores/{name}")
        assert (scores[0], scores[1]) == ([t[0] for t in trials], [t[1] for t in trials])  # trials order
        assert compute_eer(scores[2], [t[2] for t in trials]) < 0.1
    results = f"{root}/results.txt"
    for i, name in enumerate(("plda", "cosine", "plda")):  # re-running replaces the system's line
        plot = ["--det-plot", f"{root}/{name}.png"] if i == 0 else []
        proc = run_script(["steps/compute_metrics.sh", "--name", name, "--results", results, *plot,
                           f"{root}/trials", f"{root}/scores/{name}"])
        assert "EER: " in proc.stdout
    lines = Path(results).read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["system=plda", "system=cosine"]
    assert lines[0].split()[2].startswith("minDCF(p=0.01)=") and lines[0].split()[3].startswith("minDCF(p=0.05)=")
    assert Path(f"{root}/plda.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_steps_speaker_enrolment(corpus, plda_dir):
    """Kaldi-style spk_xvector.scp + num_utts.ark enrolment (ivector-plda-scoring --num-utts)."""
    root = str(corpus)
    trials = read_trials(f"{root}/spk_trials")
    for script, extra in (("steps/score_plda.sh", [plda_dir]), ("steps/score_cosine.sh", [])):
        out = f"{root}/scores/spk_{os.path.basename(script)}"
        run_script([script, "--enroll-level", "spk", *extra, f"{root}/spk_trials", f"{root}/xv_test",
                    f"{root}/xv_test", out])
        scores = read_scores(out)
        assert compute_eer(scores[2], [t[2] for t in trials]) < 0.05


def test_steps_report_bad_trials(corpus, tmp_path):
    root = str(corpus)
    trials = [*read_trials(f"{root}/trials")[:3], ("te000-0", "unknown-utt", False)]
    write_trials(tmp_path / "trials", trials)
    proc = run_script(["steps/score_cosine.sh", str(tmp_path / "trials"), f"{root}/xv_test", f"{root}/xv_test",
                       str(tmp_path / "scores")], check=False)
    assert proc.returncode != 0
    assert f"{tmp_path}/trials:4: test 'unknown-utt' not in {root}/xv_test/xvector.scp" in proc.stderr
    assert not os.path.exists(tmp_path / "scores")
    run_script(["steps/score_cosine.sh", "--skip-missing", "true", str(tmp_path / "trials"), f"{root}/xv_test",
                f"{root}/xv_test", str(tmp_path / "scores")])
    assert len((tmp_path / "scores").read_text().splitlines()) == 3

    assert all(t[2] for t in trials[:3])  # te000-0 against other te000 utterances
    write_trials(tmp_path / "targets", trials[:3])
    proc = run_script(["steps/compute_metrics.sh", "--results", "", str(tmp_path / "targets"),
                       str(tmp_path / "scores")], check=False)
    assert proc.returncode != 0 and "no non-target trials" in proc.stderr


def test_cohort_from_data_dir(corpus, tmp_path):
    root = str(corpus)
    keys, x = EmbeddingDir(f"{root}/xv_train").xvectors()
    os.makedirs(tmp_path / "cohort")
    chosen = {k: k.split("-")[0] for k in keys if k.startswith(("tr000-", "tr001-"))}
    chosen.pop("tr001-0")
    with open(tmp_path / "cohort" / "utt2spk", "w") as f:
        f.writelines(f"{k} {chosen[k]}\n" for k in sorted(chosen))
    utts, source = load_cohort(f"{root}/xv_train", "utt", str(tmp_path / "cohort"))
    assert utts.shape == (11, 24) and "cohort/utt2spk" in source
    speakers, _ = load_cohort(f"{root}/xv_train", "spk", str(tmp_path / "cohort"))
    rows = {k: i for i, k in enumerate(keys)}
    for s, spk in enumerate(("tr000", "tr001")):
        expected = x[[rows[k] for k in chosen if chosen[k] == spk]].mean(axis=0)
        np.testing.assert_allclose(speakers[s], expected, rtol=1e-6)


def test_dimension_mismatch_is_reported(corpus, tmp_path):
    root = str(corpus)
    keys, x = EmbeddingDir(f"{root}/xv_test").xvectors()
    write_xvector_dir(tmp_path / "short", keys, x[:, :10])
    for extra, against in ((["--mean-dir", f"{root}/xv_train"], f"the mean of {root}/xv_train has 24"),
                           ([], f"{root}/xv_test/xvector.scp has 24")):
        proc = run_script(["steps/score_cosine.sh", *extra, f"{root}/trials", f"{root}/xv_test",
                           str(tmp_path / "short"), str(tmp_path / "scores")], check=False)
        assert proc.returncode != 0
        assert f"{tmp_path}/short/xvector.scp: embeddings have dimension 10, {against}" in proc.stderr


def test_plots_write_png(tmp_path):
    rng = np.random.default_rng(4)
    scores = np.concatenate([rng.normal(2, 1, 100), rng.normal(0, 1, 1000)])
    labels = np.arange(1100) < 100
    plot_det({"sys": (scores, labels)}, str(tmp_path / "det.png"), {"sys": 0.16})
    plot_score_histogram(scores, labels, str(tmp_path / "hist.png"))
    for name in ("det.png", "hist.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
