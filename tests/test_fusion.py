"""Score fusion: pyspk.backend.fusion, pyspk.bin.fuse_scores and steps/fuse_scores.sh."""

import os

import numpy as np
import pytest
from conftest import run_script

from pyspk.backend.fusion import fuse_score_files, parse_weights
from pyspk.backend.scoring import read_scores
from pyspk.bin import fuse_scores
from pyspk.data.datadir import DataDirError

TRIALS = [("a", "x", "target"), ("a", "y", "nontarget"), ("b", "x", "nontarget"), ("b", "y", "target")]
SCORES_1 = [0.8, 0.1, 0.2, 0.6]
SCORES_2 = [3.0, -1.0, 1.0, 5.0]


def write_lines(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(" ".join(str(v) for v in row) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def systems(tmp_path):
    """(trials, scores-1 in trials order, scores-2 in another order) with SCORES_1 and SCORES_2."""
    trials = write_lines(tmp_path / "trials", TRIALS)
    scores_1 = write_lines(tmp_path / "scores_1", [(e, t, s) for (e, t, _), s in zip(TRIALS, SCORES_1, strict=True)])
    order = [2, 0, 3, 1]
    scores_2 = write_lines(tmp_path / "scores_2", [(*TRIALS[i][:2], SCORES_2[i]) for i in order])
    return trials, scores_1, scores_2


def test_weighted_mean(systems, tmp_path):
    trials, scores_1, scores_2 = systems
    out = str(tmp_path / "fused")
    fused = fuse_score_files(trials, [scores_1, scores_2], out)
    np.testing.assert_allclose(fused, [1.9, -0.45, 0.6, 2.8])  # (s1 + s2) / 2 by hand
    enroll, test, written = read_scores(out)
    assert list(zip(enroll, test, strict=True)) == [t[:2] for t in TRIALS]  # trials order, though scores_2 is shuffled
    np.testing.assert_allclose(written, fused, atol=1e-6)
    fused = fuse_score_files(trials, [scores_1, scores_2], out, weights=[0.75, 0.25])
    np.testing.assert_allclose(fused, [1.35, -0.175, 0.4, 1.7])


def test_mean_std_normalisation(systems, tmp_path):
    trials, scores_1, scores_2 = systems
    fused = fuse_score_files(trials, [scores_1, scores_2], str(tmp_path / "fused"), weights=[0.5, 0.5],
                             normalize="mean-std")
    # s1: mean 0.425, std sqrt(0.081875); s2: mean 2, std sqrt(5)
    z1 = (np.array(SCORES_1) - 0.425) / np.sqrt(0.081875)
    z2 = (np.array(SCORES_2) - 2.0) / np.sqrt(5.0)
    np.testing.assert_allclose(fused, 0.5 * (z1 + z2))
    # Standardising makes the fusion blind to each system's scale and offset.
    scaled = write_lines(tmp_path / "scaled",
                         [(e, t, 100 * s - 7) for (e, t, _), s in zip(TRIALS, SCORES_1, strict=True)])
    again = fuse_score_files(trials, [scaled, scores_2], str(tmp_path / "fused2"), normalize="mean-std")
    np.testing.assert_allclose(again, fused)


@pytest.mark.parametrize("rows, message", [
    (lambda rows: rows[:-1], r"scores_bad: no score for trial 'b y' \(.*trials:4\)"),
    (lambda rows: [*rows, ("c", "x", 0.5)], r"scores_bad:5: 'c x' is not a trial of"),
    (lambda rows: [*rows, rows[1]], r"scores_bad:5: second score for trial 'a y'"),
    (lambda rows: [rows[0], ("a", "y", "high"), *rows[2:]], r"scores_bad:2: score 'high' is not a number"),
])
def test_bad_score_file_names_file_and_line(systems, tmp_path, rows, message):
    trials, scores_1, _ = systems
    good = [(e, t, s) for (e, t, _), s in zip(TRIALS, SCORES_1, strict=True)]
    bad = write_lines(tmp_path / "scores_bad", rows(good))
    out = tmp_path / "fused"
    with pytest.raises(DataDirError, match=message):
        fuse_score_files(trials, [scores_1, bad], str(out))
    assert not out.exists()


def test_duplicate_trial_is_an_error(systems, tmp_path):
    _, scores_1, scores_2 = systems
    trials = write_lines(tmp_path / "trials_dup", [*TRIALS, TRIALS[0]])
    with pytest.raises(DataDirError, match=r"trials_dup:5: duplicate trial 'a x' \(first on line 1\)"):
        fuse_score_files(trials, [scores_1, scores_2], str(tmp_path / "fused"))


def test_weights_must_match_systems():
    np.testing.assert_allclose(parse_weights("", 3), [1 / 3] * 3)
    np.testing.assert_allclose(parse_weights("0.6 0.4", 2), [0.6, 0.4])
    np.testing.assert_allclose(parse_weights("2,1", 2), [2, 1])
    with pytest.raises(ValueError, match=r"got 3 weights .* for 2 score files"):
        parse_weights("0.2 0.3 0.5", 2)
    with pytest.raises(ValueError, match="must be numbers"):
        parse_weights("0.5 half", 2)
    with pytest.raises(ValueError, match="not all zero"):
        parse_weights("0 0", 2)


def test_cli_reports_user_errors(systems, tmp_path, capsys):
    trials, scores_1, scores_2 = systems
    with pytest.raises(SystemExit, match=r"fuse_scores: got 1 weights .* for 2 score files"):
        fuse_scores.main(["--weights", "1", trials, scores_1, scores_2, str(tmp_path / "fused")])
    with pytest.raises(SystemExit):
        fuse_scores.main([trials, scores_1, str(tmp_path / "fused")])  # only one input system
    assert "at least two input score files" in capsys.readouterr().err


def test_fuse_scores_sh(systems, tmp_path):
    trials, scores_1, scores_2 = systems
    out = tmp_path / "scores" / "fused"
    proc = run_script(["steps/fuse_scores.sh", "--weights", "0.75 0.25", trials, scores_1, scores_2, str(out)])
    assert f"wrote 4 fused scores of 2 systems on {trials} to {out}" in proc.stdout
    enroll, test, fused = read_scores(str(out))
    assert list(zip(enroll, test, strict=True)) == [t[:2] for t in TRIALS]
    np.testing.assert_allclose(fused, [1.35, -0.175, 0.4, 1.7], atol=1e-6)
    log = out.parent / "log" / "fuse_scores.fused.log"
    assert "EER" in log.read_text()

    proc = run_script(["steps/fuse_scores.sh", "--weights", "1 2 3", trials, scores_1, scores_2, str(out)],
                      check=False)
    assert proc.returncode != 0 and "has 3 weights for 2 score files" in proc.stderr

    missing = write_lines(tmp_path / "scores_missing", [(e, t, 0.0) for e, t, _ in TRIALS[1:]])
    proc = run_script(["steps/fuse_scores.sh", trials, scores_1, missing, str(tmp_path / "scores" / "f2")],
                      check=False)
    assert proc.returncode != 0 and f"{missing}: no score for trial 'a x'" in proc.stderr
    assert not os.path.exists(tmp_path / "scores" / "f2")

    proc = run_script(["steps/fuse_scores.sh", trials, scores_1, str(out)], check=False)
    assert proc.returncode != 0 and "Usage:" in proc.stderr
