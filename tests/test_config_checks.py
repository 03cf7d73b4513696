"""Configs that fail before any work, with a clear message (issue 28), each through a real entry point:
pyspk.bin.train --check-only, steps/train.sh and steps/sv_pipeline.sh --check-only true.

1. every config a run uses is checked up front, the classifier's model section against the backbone it
   starts from; a classifier starting from a model file takes its backbone from the file;
2. overrides may set any key the objective knows, not only keys already in the YAML;
3. a wrong type anywhere, nested values included, names the key and where it came from;
4. a finished experiment re-run with another config stops, naming what differs (--retrain true retrains).
"""

import logging
import os
import sys

import pytest
import torch
import yaml
from conftest import ROOT, no_traceback, run_script

from pyspk.bin import train as train_cli_module
from pyspk.config import load_yaml
from pyspk.models import build_model, read_backbone_entry, save_backbones
from pyspk.train.objectives import check_training_config, load_training_config, resolve_init_backbone
from pyspk.train.synthetic import make_feats_data_dir

DINO_TINY = os.path.join(ROOT, "conf", "dino_tiny.yaml")
CLASSIFIER_TINY = os.path.join(ROOT, "conf", "classifier_tiny.yaml")
CLASSIFIER_DEMO = os.path.join(ROOT, "conf", "classifier_demo.yaml")
QUICK = ["model.feat_dim=40", "train.epochs=1", "train.ckpt_every_steps=0", "train.log_every=1"]
ENV = {"OMP_NUM_THREADS": "1"}


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture(autouse=True)
def no_stale_log_handlers():
    """Entry points run in this process: drop root handlers an earlier test left on its closed capture."""
    logging.getLogger().handlers.clear()


@pytest.fixture
def check_only(capsys):
    """``python -m pyspk.bin.train --check-only ARGS`` in this process (its main(), seconds faster)."""
    def run(*args):
        code = 0
        try:
            train_cli_module.main(["--check-only", *args])
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return Result(code, out.out, out.err)
    return run


def error_line(proc):
    """The one error line of a failed entry point (no traceback)."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    no_traceback(proc)
    return proc.stderr


@pytest.fixture(scope="module")
def feats40(tmp_path_factory):
    return make_feats_data_dir(str(tmp_path_factory.mktemp("feats")), n_spk=4, n_utt=3, min_frames=60,
                               max_frames=100, feat_dim=40)


# 1 ----------------------------------------------------------------------------------------------------
def test_check_only_compares_the_classifier_model_with_the_ssl_backbone(check_only):
    assert check_only("--config", CLASSIFIER_TINY, "--init-config", DINO_TINY).returncode == 0
    proc = check_only("--config", CLASSIFIER_TINY, "--init-config", DINO_TINY, "--init-overrides", "model.embed_dim=64")
    assert ("model.embed_dim: 32 in " + CLASSIFIER_TINY + ", 64 in the teacher backbone " + DINO_TINY
            + " trains") in error_line(proc)
    # The SSL config is checked too, with its own overrides.
    proc = check_only("--config", CLASSIFIER_TINY, "--init-config", DINO_TINY, "--init-overrides", "dino.nope=1")
    assert "unknown key 'nope' under dino" in error_line(proc)


def test_pipeline_check_only_checks_every_config():
    def pipeline(*options):
        return run_script(["steps/sv_pipeline.sh", "--check-only", "true", "--ssl-config", DINO_TINY, *options],
                          check=False)
    # (--online-aug adds JSON-valued overrides to both configs: data.online_aug={"types":{...}}.)
    assert pipeline("--classifier-config", CLASSIFIER_TINY, "--online-aug", "true").returncode == 0
    # Today's stage-7 failure ("its backbone differs from the config's model section") before stage 2:
    proc = pipeline("--classifier-config", CLASSIFIER_DEMO)
    assert proc.returncode == 1
    assert f"model.embed_dim: 128 in {CLASSIFIER_DEMO}, 32 in the teacher backbone" in proc.stderr
    # From scratch the classifier does not start from the SSL model: each config is checked on its own.
    proc = pipeline("--classifier-config", CLASSIFIER_DEMO, "--pl-init", "scratch",
                    "--classifier-overrides", "classifier.margn=0.3")
    assert proc.returncode == 1 and "unknown key 'margn' under classifier (did you mean margin?)" in proc.stderr
    proc = pipeline("--classifier-config", CLASSIFIER_TINY, "--ssl-overrides", "data.crops.global.count=two")
    assert proc.returncode == 1 and "data.crops.global.count must be an integer, got 'two'" in proc.stderr


def test_classifier_takes_its_backbone_from_the_init_model(feats40, tmp_path, check_only):
    """model: from_init (or no model section) trains the file's architecture; given keys must agree."""
    init = str(tmp_path / "ssl.pt")
    backbone = {"name": "resnet_thin", "feat_dim": 40, "embed_dim": 24, "blocks": [1, 1], "base_width": 4}
    save_backbones(init, {"teacher": build_model(backbone)}, "teacher")
    config = load_yaml(CLASSIFIER_TINY)
    config["model"] = "from_init"
    path = tmp_path / "classifier.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    exp = str(tmp_path / "exp")
    proc = run_script(["steps/train.sh", "--device", "cpu", "--config", str(path), "--init-model", init,
                       "--overrides", " ".join(q for q in QUICK if not q.startswith("model.")), feats40, exp],
                      env=ENV)
    assert "trained" in proc.stdout
    assert load_yaml(os.path.join(exp, "config.yaml"))["model"] == read_backbone_entry(init)["config"]
    assert read_backbone_entry(os.path.join(exp, "final.pt"))["config"]["embed_dim"] == 24
    # An explicit key that conflicts names both values; without a model file from_init has nothing to take.
    proc = check_only("--config", str(path), "--init-model", init, "model={name: resnet_thin, embed_dim: 32}")
    assert (f"model.embed_dim: 32 in {path}, 24 in {init}" in error_line(proc)
            and "model: from_init" in proc.stderr)
    proc = check_only("--config", str(path))
    assert "model: from_init takes the backbone from classifier.init_model, which is not set" in error_line(proc)


# 2 ----------------------------------------------------------------------------------------------------
def test_overrides_reach_every_key_the_objective_knows(tmp_path, check_only):
    for override in ("model.cmn=true",             # the case: not in the YAML, a key of every model
                     "data.online_aug.prob=0.3",   # under a null section of the YAML
                     "dino.collapse.patience_steps=5", "optim.betas=[0.9, 0.99]", "classifier.subcenters=2"):
        config = CLASSIFIER_TINY if override.startswith("classifier") else DINO_TINY
        proc = check_only("--config", config, override)
        assert proc.returncode == 0, (override, proc.stderr)
    # The untrained-network baseline (the pipeline's stage 5) takes the same overrides.
    out = str(tmp_path / "untrained.pt")
    run_script([sys.executable, "-m", "pyspk.bin.init_model", "--config", DINO_TINY, "model.cmn=false", out])
    assert read_backbone_entry(out)["config"]["cmn"] is False
    # An unknown key is still refused, with the close matches.
    proc = check_only("--config", DINO_TINY, "model.cnm=false")
    assert "override 'model.cnm=false': unknown key 'cnm' under model (did you mean cmn?)" in error_line(proc)
    proc = check_only("--config", DINO_TINY, "dino.head.out_dims=64")
    assert "unknown key 'out_dims' under dino.head (did you mean out_dim?)" in error_line(proc)


# 3 ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override,message", [
    ("data.crops.global.count=two", "data.crops.global.count must be an integer, got 'two'"),
    ("dino.regularisers.diversity=lots", "dino.regularisers.diversity must be a number, got 'lots'"),
    ("optim.lr.warmup_fraction=2", "optim.lr.warmup_fraction must be <= 1, got 2"),
    ("data.specaug.time_masks=1.5", "data.specaug.time_masks must be an integer, got 1.5"),
    ("model.blocks=[1, x]", "model.blocks must be a list of integers ('x' must be an integer), got [1, 'x']"),
    ("dino.momentum.lag_fraction=high", "dino.momentum.lag_fraction must be a number, got 'high'"),
])
def test_wrong_types_name_the_key_before_any_work(feats40, tmp_path, capsys, override, message):
    exp = tmp_path / "exp"
    with pytest.raises(SystemExit) as exit_info:
        train_cli_module.main(["--config", DINO_TINY, "--device", "cpu", feats40, str(exp), *QUICK, override])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"train: error: {message} (command line: {override}, over {DINO_TINY})\n" in err and "Traceback" not in err
    assert not exp.exists()


def test_a_wrong_type_in_the_file_names_the_file(feats40, tmp_path):
    config = load_yaml(DINO_TINY)
    config["data"]["crops"]["global"]["count"] = "two"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = run_script(["steps/train.sh", "--device", "cpu", "--config", str(path), feats40, str(tmp_path / "e")],
                      check=False)
    assert f"data.crops.global.count must be an integer, got 'two' (in {path})" in error_line(proc)
    assert not (tmp_path / "e").exists()  # refused before the exp dir, let alone a job


def test_every_shipped_training_config_passes_the_checks():
    recipes = ("wuw", "voxceleb", "arabic_commands", "speechocean762")
    configs = [os.path.join(d, f) for d in (os.path.join(ROOT, "conf"), *(os.path.join(ROOT, "egs", e, "v1", "conf")
               for e in recipes), os.path.join(ROOT, "egs", "transfer_demo", "conf"))
               for f in sorted(os.listdir(d)) if f.endswith(".yaml")]
    checked = 0
    for path in configs:
        if "objective" not in load_yaml(path):
            continue
        config = load_training_config(path)
        if config["objective"] != "finetune":
            resolve_init_backbone(config, path, None)
        check_training_config(config, path)
        checked += 1
    assert checked >= 20


# 4 ----------------------------------------------------------------------------------------------------
def test_finished_experiment_rerun_with_another_config_stops(feats40, tmp_path, check_only, capsys):
    exp = str(tmp_path / "exp")
    args = ["steps/train.sh", "--device", "cpu", "--config", DINO_TINY, feats40, exp]
    run_script([*args[:-2], "--overrides", " ".join(QUICK), *args[-2:]], env=ENV)
    final = os.path.join(exp, "final.pt")
    before = os.stat(final).st_mtime_ns
    # The same command: a no-op.
    proc = run_script([*args[:-2], "--overrides", " ".join(QUICK), *args[-2:]], env=ENV)
    assert "training already finished with this config; nothing to do" in proc.stdout
    # Another override: stops, naming what differs and the two ways on; nothing is touched.
    changed = " ".join([*QUICK, "optim.clip_grad=1.0"])
    proc = run_script([*args[:-2], "--overrides", changed, *args[-2:]], check=False, env=ENV)
    message = error_line(proc)
    assert f"{exp} is a finished training of another config (was -> now: optim.clip_grad: 3.0 -> 1.0)" in message
    assert "into a new experiment dir" in message and "--retrain true" in message
    assert os.stat(final).st_mtime_ns == before
    # The Python entry point alike (a user calling the trainer directly), and its --check-only.
    with pytest.raises(SystemExit):
        train_cli_module.main(["--config", DINO_TINY, "--device", "cpu", feats40, exp, *QUICK, "optim.clip_grad=1.0"])
    assert "optim.clip_grad: 3.0 -> 1.0" in capsys.readouterr().err
    assert "optim.clip_grad: 3.0 -> 1.0" in error_line(check_only("--config", DINO_TINY, feats40, exp, *QUICK,
                                                                  "optim.clip_grad=1.0"))
    # --retrain true trains it again with the new config.
    run_script([*args[:-2], "--retrain", "true", "--overrides", changed, *args[-2:]], env=ENV)
    assert os.stat(final).st_mtime_ns > before
    assert load_yaml(os.path.join(exp, "config.yaml"))["optim"]["clip_grad"] == 1.0
    assert torch.load(final, weights_only=True)["step"] > 0


def test_finished_finetuning_rerun_with_another_config_stops(tmp_path):
    """steps/finetune.sh: the same command evaluates again; other overrides stop, naming what differs."""
    from test_finetune import CONFIG, MODEL, add_labels
    train = add_labels(make_feats_data_dir(str(tmp_path / "train"), n_spk=4, n_utt=3, min_frames=40, max_frames=60,
                                           feat_dim=24))
    init = str(tmp_path / "ssl.pt")
    save_backbones(init, {"teacher": build_model(MODEL)}, "teacher")
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "finetune": {**CONFIG["finetune"], "stages": CONFIG["finetune"][
        "stages"][:1]}}))
    exp = str(tmp_path / "exp")

    def finetune(*overrides):
        return run_script(["steps/finetune.sh", "--device", "cpu", "--config", str(config),
                           "--overrides", " ".join(overrides), init, train, train, exp], check=False, env=ENV)
    assert finetune().returncode == 0
    before = os.stat(os.path.join(exp, "final.pt")).st_mtime_ns
    proc = finetune()
    assert proc.returncode == 0 and "training already finished" in proc.stdout
    proc = finetune("finetune.head.dropout=0.3")
    assert f"{exp} is a finished training of another config (was -> now: finetune.head.dropout: 0.1 -> 0.3)" \
        in error_line(proc)
    assert os.stat(os.path.join(exp, "final.pt")).st_mtime_ns == before
