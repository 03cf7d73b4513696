"""Result lines named after the experiment dir, and a line made from other scores kept (issue 28).

steps/sv_pipeline.sh on a tiny recipe root (4 speakers of synthetic voices): stages 2-3, then stages 5-6 of
two DINO configs of one method (their models made with init_model, not trained: the names are what is
tested). Also the messages the pipeline says once: the --num-clusters cap and the CPU process cap.
"""

import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_wav_data_dir, run_script

from pyspk.backend.results import line_fields
from pyspk.models.bundle import experiment_result_lines, legacy_pipeline_system_name, pipeline_system_name

LEGACY = "system=dino_cosine EER=30% minDCF(p=0.01)=0.9000 minDCF(p=0.05)=0.8000 trials=data/test/trials\n"


def results(root, name="exp/results.txt"):
    with open(os.path.join(root, name)) as f:
        return {line_fields(line)["system"]: line for line in f}


def pipeline(root, *args, check=True):
    return run_script(["steps/sv_pipeline.sh", "--nj", "1", "--device", "cpu", "--augment", "false",
                       "--classifier-config", "conf/classifier_tiny.yaml", *args], cwd=root, check=check)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """A recipe root with data/{train,test}, conf/dino_{a,b}.yaml; stages 2-3, then 5-6 of dino_a and dino_b."""
    tmp = tmp_path_factory.mktemp("names")
    root = tmp / "recipe"
    (root / "conf").mkdir(parents=True)
    for name in ("path.sh", "cmd.sh", "steps", "utils"):
        os.symlink(os.path.join(ROOT, name), root / name)
    for name in os.listdir(os.path.join(ROOT, "conf")):
        os.symlink(os.path.join(ROOT, "conf", name), root / "conf" / name)
    for config in ("dino_a", "dino_b"):
        shutil.copy(os.path.join(ROOT, "conf", "dino_tiny.yaml"), root / "conf" / f"{config}.yaml")
    for part, n_spk, n_utt, seed in (("train", 4, 3, 0), ("test", 3, 2, 1)):
        made = make_wav_data_dir(str(tmp / part), n_spk=n_spk, n_utt=n_utt, seed=seed, max_sec=1.5)
        shutil.copytree(made, root / "data" / part)
    utts = [line.split() for line in (root / "data" / "test" / "utt2spk").read_text().splitlines()]
    with open(root / "data" / "test" / "trials", "w") as f:
        for i, (enroll, spk) in enumerate(utts):
            for test, other in utts[i + 1:]:
                f.write(f"{enroll} {test} {'target' if spk == other else 'nontarget'}\n")
    (root / "exp").mkdir()
    (root / "exp" / "results.txt").write_text(LEGACY)  # a line of the old naming, kept
    procs = {"2-3": pipeline(root, "--stage", "2", "--stop-stage", "3", "--ssl-config", "conf/dino_a.yaml",
                             "--num-gpus", "64")}
    for seed, config in enumerate(("dino_a", "dino_b")):
        run_script([sys.executable, "-m", "pyspk.bin.init_model", "--config", f"conf/{config}.yaml", "--seed",
                    str(seed + 1), f"exp/{config}/final.pt"], cwd=root)
        procs[config] = pipeline(root, "--stage", "5", "--stop-stage", "6", "--ssl-config", f"conf/{config}.yaml")
    return str(root), procs


def test_two_configs_of_one_method_keep_their_own_lines(recipe):
    root, _ = recipe
    lines = results(root)
    assert set(lines) == {"dino_cosine", "fbank_mean_std_cosine", "untrained_cosine", "dino_a_cosine",
                          "dino_b_cosine"}
    assert lines["dino_cosine"] == LEGACY  # the old line stays
    for system, scores in (("dino_a_cosine", "exp/dino_a/scores/cosine_trials_test"),
                           ("dino_b_cosine", "exp/dino_b/scores/cosine_trials_test"),
                           ("fbank_mean_std_cosine", "exp/baseline/scores_trials_test")):
        assert line_fields(lines[system])["scores"] == scores and line_fields(lines[system])["trials"] == \
            "data/test/trials"


def test_rescoring_the_same_scores_is_a_no_op(recipe):
    root, _ = recipe
    before = Path(root, "exp", "results.txt").read_text()
    proc = pipeline(root, "--stage", "6", "--stop-stage", "6", "--ssl-config", "conf/dino_a.yaml")
    assert "the metrics of exp/dino_a/scores/cosine_trials_test are up to date" in proc.stdout
    assert Path(root, "exp", "results.txt").read_text() == before


def test_a_line_from_other_scores_is_kept_unless_asked(recipe):
    root, _ = recipe
    before = Path(root, "exp", "results.txt").read_text()
    # A second experiment root writing into the first one's results file: its baseline has other scores.
    proc = pipeline(root, "--stage", "3", "--stop-stage", "3", "--ssl-config", "conf/dino_a.yaml",
                    "--exp", "exp2", "--results", "exp/results.txt", check=False)
    assert proc.returncode == 1
    assert ("exp/results.txt already has a line of system 'fbank_mean_std_cosine' made from other scores "
            "(scores exp/baseline/scores_trials_test, not exp2/baseline/scores_trials_test)") in proc.stderr
    assert "--overwrite true" in proc.stderr
    assert Path(root, "exp", "results.txt").read_text() == before
    # Asked for: the line is replaced, in place.
    run_script(["steps/compute_metrics.sh", "--name", "fbank_mean_std_cosine", "--results", "exp/results.txt",
                "--overwrite", "true", "data/test/trials", "exp2/baseline/scores_trials_test"], cwd=root)
    lines = results(root)
    assert line_fields(lines["fbank_mean_std_cosine"])["scores"] == "exp2/baseline/scores_trials_test"
    assert list(lines) == [line_fields(line)["system"] for line in before.splitlines()]  # replaced in place


def test_caps_are_said_once_by_the_stages_they_concern(recipe):
    root, procs = recipe
    # Stages 2-3 neither train nor cluster: no word of --num-gpus 64 or --num-clusters 200.
    assert "--num-gpus" not in procs["2-3"].stderr and "--num-clusters" not in procs["2-3"].stderr
    # Stages 7-8 (here failing at once: no SSL embeddings under exp_none) say each cap once.
    proc = pipeline(root, "--stage", "7", "--stop-stage", "8", "--ssl-config", "conf/dino_a.yaml", "--rounds", "1",
                    "--exp", "exp_none", "--num-gpus", "64", check=False)
    assert proc.returncode != 0
    assert proc.stderr.count("--num-clusters 200 is more than a tenth of the 12 utterances of data/train: using 2") \
        == 1
    cores = len(os.sched_getaffinity(0))
    if cores < 64:
        assert proc.stderr.count(f"--num-gpus 64 with --device cpu but {cores} core(s) available: "
                                 f"training with {cores} CPU process(es)") == 1


def test_summary_prints_the_results(recipe):
    root, _ = recipe
    proc = pipeline(root, "--stage", "9", "--stop-stage", "9", "--ssl-config", "conf/dino_a.yaml")
    assert "system=dino_a_cosine" in proc.stdout and "system=dino_b_cosine" in proc.stdout


def test_model_card_names_follow_the_experiment_dir(tmp_path):
    assert pipeline_system_name("exp/dino_rdino") == "dino_rdino"
    assert pipeline_system_name("exp/pl_dino_r2/") == "pl_dino_r2"
    assert pipeline_system_name("exp/memo_demo", backbone="teacher_ecapa") == "memo_demo_teacher_ecapa"
    assert legacy_pipeline_system_name("exp/pl_dino_ahc_r1", "classifier", None) == "dino_pl_ahc_r1"
    path = tmp_path / "results.txt"
    # A results file written before the lines were named after the dir: the old name's lines are found.
    path.write_text("system=dino_pl_r1_plda EER=2% trials=t\nsystem=dino_cosine EER=9% trials=t\n")
    assert experiment_result_lines(path, "exp/pl_dino_r1", "classifier", None) == \
        ("dino_pl_r1", ["system=dino_pl_r1_plda EER=2% trials=t"])
    path.write_text("system=pl_dino_r1_plda EER=1% trials=t scores=s\nsystem=dino_pl_r1_plda EER=2% trials=t\n")
    assert experiment_result_lines(path, "exp/pl_dino_r1", "classifier", None) == \
        ("pl_dino_r1", ["system=pl_dino_r1_plda EER=1% trials=t scores=s"])


def test_compute_metrics_program_refuses_a_line_from_other_scores(tmp_path):
    """pyspk.bin.compute_metrics itself (what the step runs, and checks again under the file lock)."""
    trials = tmp_path / "trials"
    trials.write_text("a b target\na c nontarget\nb c nontarget\nb d target\n")
    for name, scores in (("s1", "a b 2\na c 1\nb c 0.5\nb d 0.1\n"), ("s2", "a b 2\na c 0.1\nb c 0.5\nb d 1\n")):
        (tmp_path / name).write_text(scores)
    results = tmp_path / "results.txt"

    def metrics(scores, *options):
        return run_script([sys.executable, "-m", "pyspk.bin.compute_metrics", "--name", "sys", "--results",
                           str(results), *options, str(trials), str(tmp_path / scores)], check=False)

    assert metrics("s1").returncode == 0 and metrics("s1").returncode == 0  # the same scores: replaced
    first = results.read_text()
    assert first.endswith(f"trials={trials} scores={tmp_path}/s1\n") and first.count("system=sys ") == 1
    proc = metrics("s2")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"already has a line of system 'sys' made from other scores (scores {tmp_path}/s1, not " in proc.stderr
    assert results.read_text() == first
    assert metrics("s2", "--overwrite", "true").returncode == 0
    assert results.read_text().count("system=sys ") == 1 and f"scores={tmp_path}/s2" in results.read_text()
