"""The default recipe, ./run.sh, end to end on a tiny corpus with the tiny configs."""

import os
from pathlib import Path

import pytest
from conftest import ROOT, run_script

from pyspk.data.datadir import DataDir
from pyspk.train.data import group_copies

SHARED = ("path.sh", "cmd.sh", "utils", "steps", "tools", "local", "conf")
# Named after the experiment dirs (conf/dino_tiny.yaml -> exp/dino_tiny; rounds exp/pl_dino_r<r>).
SYSTEMS = ["fbank_mean_std_cosine", "untrained_cosine", "dino_tiny_cosine", "pl_dino_r1_cosine", "pl_dino_r1_plda",
           "pl_dino_r2_cosine", "pl_dino_r2_plda", "supervised_upper_bound_cosine", "supervised_upper_bound_plda"]
# --calibrate true (the default): calibrated lines of every system but the untrained network.
CALIBRATED = [f"{system}_cal" for system in SYSTEMS if not system.startswith("untrained")]
TINY = ["--nj", "1", "--device", "cpu", "--num-speakers", "8", "--test-speakers", "3", "--utts-per-speaker", "8",
        "--ssl-config", "conf/dino_tiny.yaml", "--classifier-config", "conf/classifier_tiny.yaml",
        "--rounds", "2", "--num-clusters", "4"]


def make_recipe_root(tmp_path, installed=True):
    """run.sh in a scratch root (its data/, exp/ go there), the rest shared with the repository;
    installed=False: a fresh clone's, whose tools/ holds install.sh but no virtual env yet."""
    root = tmp_path / "recipe"
    root.mkdir()
    for name in SHARED:
        if name == "tools" and not installed:
            (root / name).mkdir()
            os.symlink(os.path.join(ROOT, name, "install.sh"), root / name / "install.sh")
        else:
            os.symlink(os.path.join(ROOT, name), root / name)
    os.symlink(os.path.join(ROOT, "run.sh"), root / "run.sh")
    return str(root)


def results(root):
    with open(os.path.join(root, "exp", "results.txt")) as f:
        return {line.split()[0].split("=", 1)[1]: line for line in f}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = make_recipe_root(tmp_path_factory.mktemp("run"))
    proc = run_script(["./run.sh", "--stage", "1", *TINY], cwd=root)
    return root, proc


def test_every_stage_runs_and_reports_each_system(recipe):
    root, proc = recipe
    assert "Done (stages 1..100)" in proc.stdout
    lines = results(root)
    assert sorted(lines) == sorted(SYSTEMS + CALIBRATED)
    assert all(("actDCF(p=0.01)=" in lines[system]) == (system in CALIBRATED) for system in lines)
    for r in (1, 2):
        report = os.path.join(root, "exp", f"pl_dino_r{r}", "cluster", "cluster_report.txt")
        assert "truth_all.nmi" in Path(report).read_text()


def test_training_draws_on_the_augmented_copies(recipe):
    root, _ = recipe
    combined = DataDir(os.path.join(root, "data", "train_combined"))
    groups = group_copies(combined, list(combined.feats_scp()))
    assert len(groups) == 5 * 8 and all(len(copies) == 4 for copies in groups.values())
    pl = DataDir(os.path.join(root, "data", "train_pl_dino_r1_combined"))
    kept = DataDir(os.path.join(root, "data", "train_pl_dino_r1")).utt2spk()
    utt2spk = pl.utt2spk()
    assert len(utt2spk) == 5 * len(kept)
    for utt, copies in group_copies(pl, list(pl.feats_scp())).items():
        assert utt in kept and len(copies) == 4 and {utt2spk[c] for c in copies} == {kept[utt]}
    with open(os.path.join(root, "exp", "dino_tiny", "log", "launch.log")) as f:
        assert "data/train_combined" in f.readline()


def snapshot(root):
    """``{path: (size, mtime)}`` of every file the recipe wrote."""
    files = {}
    for top in ("data", "exp", "fbank"):
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            for name in names:
                path = os.path.join(dirpath, name)
                files[path] = (os.path.getsize(path), os.path.getmtime(path))
    return files


def test_rerunning_finished_stages_rewrites_nothing(recipe):
    root, _ = recipe
    before = snapshot(root)
    proc = run_script(["./run.sh", "--stage", "2", *TINY], cwd=root)
    assert "round 2/2 is finished" in proc.stdout and "upper bound is finished" in proc.stdout
    after = snapshot(root)
    assert sorted(after) == sorted(before)
    assert [path for path in before if after[path] != before[path]] == []


def test_rerun_with_changed_overrides_stops_naming_what_differs(recipe):
    """Issue 28: a finished SSL model or round re-run with other overrides stops; nothing is written."""
    root, _ = recipe
    before = snapshot(root)
    proc = run_script(["./run.sh", "--stage", "4", "--stop-stage", "4", *TINY, "--ssl-overrides",
                       "optim.clip_grad=1.0"], cwd=root, check=False)
    assert proc.returncode == 1
    assert ("exp/dino_tiny is a finished training of another config (was -> now: optim.clip_grad: 3.0 -> 1.0)"
            in proc.stderr)
    proc = run_script(["./run.sh", "--stage", "7", "--stop-stage", "7", *TINY, "--classifier-overrides",
                       "classifier.scale=20"], cwd=root, check=False)
    assert proc.returncode == 1
    assert "exp/pl_dino_r1 is a finished training of another config (was -> now: classifier.scale: 30.0 -> 20)" \
        in proc.stderr
    assert snapshot(root) == before


def test_tagged_rounds_sit_beside_the_default_ones(recipe):
    # Run after the idempotence test: this adds files.
    root, _ = recipe
    before = Path(root, "exp", "pl_dino_r1", "final.pt").stat().st_mtime
    proc = run_script(["./run.sh", "--stage", "7", "--stop-stage", "7", *TINY, "--rounds", "1", "--pl-tag", "ahc",
                       "--cluster-method", "agglomerative", "--num-clusters", "0"], cwd=root)
    assert "exp/pl_dino_ahc_r1" in proc.stdout
    report = Path(root, "exp", "pl_dino_ahc_r1", "cluster", "cluster_report.txt").read_text()
    assert "settings.method agglomerative" in report
    assert {"pl_dino_ahc_r1_cosine", "pl_dino_ahc_r1_plda"} <= set(results(root))
    assert Path(root, "exp", "pl_dino_r1", "final.pt").stat().st_mtime == before


def test_bad_option_values_stop_before_any_work(tmp_path):
    root = make_recipe_root(tmp_path)
    for option, value in (("--ssl", "simclr"), ("--pl-init", "random"), ("--augment", "maybe"),
                          ("--pl-tag", "a_b"), ("--cluster-method", "dbscan")):
        proc = run_script(["./run.sh", "--stage", "1", option, value], cwd=root, check=False)
        assert proc.returncode == 1 and option.lstrip("-") in proc.stderr
        assert not os.path.exists(os.path.join(root, "data"))


def test_without_the_virtual_env_a_later_stage_says_to_install_it_not_that_a_config_is_wrong(tmp_path):
    # A fresh clone run from stage 1 skips stage 0's install: the config check cannot import pyspk.
    root = make_recipe_root(tmp_path, installed=False)
    system_path = os.pathsep.join([os.path.join(ROOT, "utils"), os.path.join(ROOT, "steps"), "/usr/bin", "/bin"])
    proc = run_script(["./run.sh", "--stage", "1", *TINY], cwd=root, check=False, env={"PATH": system_path})
    assert proc.returncode == 1
    assert "pyspk is not installed" in proc.stderr and "tools/install.sh" in proc.stderr
    assert "config" not in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists(os.path.join(root, "data"))
