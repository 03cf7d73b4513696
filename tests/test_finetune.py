"""Transfer fine-tuning: stages freeze and train what they should, resume, evaluation metrics, CLIs."""

import os
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_script

from pyspk.bin import evaluate_classifier
from pyspk.bin import train as train_cli
from pyspk.config import ConfigError
from pyspk.data.datadir import DataDir, DataDirError, read_kv, write_table
from pyspk.models import build_model, load_backbone, save_backbones
from pyspk.models.freeze import last_layer_prefixes
from pyspk.train import checkpoint as ckpt
from pyspk.train.data import CropDataset, ResumableBatchSampler
from pyspk.train.synthetic import make_feats_data_dir
from pyspk.transfer.evaluate import load_classifier
from pyspk.transfer.labels import classification_metrics, read_results
from pyspk.transfer.objective import FinetuneObjective
from pyspk.transfer.stages import build_stage_config, run_finetune, stage_dirs

MODEL = {"name": "resnet_thin", "feat_dim": 24, "embed_dim": 16, "blocks": [1, 1], "base_width": 4}
CONFIG = {
    "objective": "finetune",
    "seed": 3,
    "data": {"batch_size": 4, "num_workers": 0, "crops": {"chunk": {"count": 1, "frames": 40}},
             "aug_prob": 0.5, "specaug": {"prob": 0.5}, "channel": {"prob": 0.0}},
    "optim": {"name": "adamw", "lr": 0.01, "weight_decay": 0.0, "clip_grad": 5.0},
    "train": {"log_every": 1, "ckpt_every_steps": 2, "keep_checkpoints": 2, "threads": 1},
    "finetune": {"init_model": None, "random_init": False, "chunk_frames": None, "augment": None,
                 "label_file": "utt2label", "balance_classes": True, "head": {"batchnorm": True, "dropout": 0.1},
                 "eval": {"chunk_size": 60, "min_chunk_size": 20, "batch_size": 8},
                 "stages": [{"name": "last", "train": "last", "epochs": 1, "lr": 0.02},
                            {"name": "all", "train": "all", "epochs": 1, "lr": 0.005}]},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def add_labels(data_dir):
    """utt2label: speakers 0, 2, 4 ... are 'even', the others 'odd' (a speaker-level grouping)."""
    utt2spk = DataDir(data_dir).utt2spk()
    write_table(os.path.join(data_dir, "utt2label"),
                {u: ("even" if int(s[3:]) % 2 == 0 else "odd") for u, s in utt2spk.items()})
    return data_dir


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    train = add_labels(make_feats_data_dir(str(root / "train"), n_spk=4, n_utt=4, min_frames=40, max_frames=90,
                                           feat_dim=24, copies=("noise",)))
    test = add_labels(make_feats_data_dir(str(root / "test"), n_spk=4, n_utt=2, min_frames=30, max_frames=130,
                                          feat_dim=24, seed=1))
    torch.manual_seed(0)
    init = str(root / "ssl.pt")
    save_backbones(init, {"teacher": build_model(MODEL), "student": build_model(MODEL)}, "teacher")
    config_path = str(root / "ft.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(CONFIG, f)
    return {"train": train, "test": test, "init": init, "config": config_path, "root": root}


def with_init(init):
    """CONFIG fine-tuning the backbone file ``init`` (what --init-model sets)."""
    return dict(CONFIG, finetune=dict(CONFIG["finetune"], init_model=init))


def stage_objective(dirs, stage_index, init=None):
    init = init or {"file": dirs["init"], "backbone": None}
    config = build_stage_config(CONFIG, stage_index, MODEL, init)
    objective = FinetuneObjective(dirs["train"])
    torch.manual_seed(0)
    objective.build(config, 4, 8, torch.device("cpu"))
    return objective, config


def train_steps(objective, config, data_dir, steps):
    """A few optimiser steps the way the trainer takes them (train mode set once, then compute_loss)."""
    dataset = CropDataset(data_dir, config["data"]["crops"], seed=0)
    model = objective.trainable()
    model.train()
    groups = objective.param_groups(model)
    optimizer = torch.optim.AdamW([{"params": g["params"]} for g in groups], lr=0.05)
    sampler = ResumableBatchSampler(len(dataset), 4, seed=0)
    for step, keys in zip(range(steps), sampler, strict=False):  # the sampler runs on
        items = [dataset[key] for key in keys]
        batch = {"crops": {"chunk": torch.stack([it["crops"]["chunk"] for it in items])},
                 "index": torch.tensor([it["index"] for it in items])}
        loss, stats = objective.compute_loss(model, batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss, stats


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("what", ["head", "last", "all"])
def test_stage_freezes_and_trains_what_it_should(dirs, what):
    stage = {"name": what, "train": what, "epochs": 1, "lr": 0.01}
    config = dict(CONFIG, finetune=dict(CONFIG["finetune"], stages=[stage]))
    objective = FinetuneObjective(dirs["train"])
    objective.build(build_stage_config(config, 0, MODEL, {"file": dirs["init"]}), 4, 4, torch.device("cpu"))
    backbone, head = objective.classifier.backbone, objective.classifier.head
    # Stage 1 starts from the SSL backbone (the file's default, the teacher).
    initial = load_backbone(dirs["init"])
    assert all(torch.equal(a, b)
               for a, b in zip(initial.state_dict().values(), backbone.state_dict().values(), strict=True))
    before_backbone, before_head = snapshot(backbone), snapshot(head)
    loss, stats = train_steps(objective, config, dirs["train"], 3)
    assert torch.isfinite(loss) and 0.0 <= float(stats["accuracy"]) <= 1.0
    after = snapshot(backbone)
    last = [k for k in after if k.startswith("embedding.")]
    rest = [k for k in after if not k.startswith("embedding.")]
    changed = {k for k in after if not torch.equal(after[k], before_backbone[k])}
    assert all(not torch.equal(v, before_head[k]) for k, v in snapshot(head).items() if v.is_floating_point())
    if what == "head":
        assert not changed  # parameters and BatchNorm statistics alike
    elif what == "last":
        assert changed == set(last)
    else:
        assert set(last) <= changed
        assert {k for k in rest if k.endswith((".weight", "running_mean"))} <= changed
    trainable = {n for n, p in objective.classifier.named_parameters() if p.requires_grad}
    expected = {"head": set(), "last": {f"backbone.{k}" for k in last},
                "all": {f"backbone.{n}" for n, _ in backbone.named_parameters()}}[what]
    assert trainable == expected | {f"head.{n}" for n, _ in head.named_parameters()}


def test_last_layer_prefixes_defaults_and_errors():
    assert last_layer_prefixes(build_model(MODEL)) == ["embedding"]
    tdnn = build_model({"name": "tdnn", "feat_dim": 24, "channels": 8, "stats_channels": 8, "embed_dim": 4})
    assert last_layer_prefixes(tdnn) == ["segment6"]
    assert last_layer_prefixes(build_model(MODEL), ["stages.1", "embedding"]) == ["stages.1", "embedding"]
    with pytest.raises(ConfigError, match=r"'pool_norm' names no parameter.*top-level modules are embedding"):
        last_layer_prefixes(build_model(MODEL), ["pool_norm"])


def test_staged_run_resume_evaluate_and_idempotence(dirs):
    straight = str(dirs["root"] / "straight")
    assert run_finetune(with_init(dirs["init"]), dirs["train"], straight, device="cpu")
    stage1, stage2 = stage_dirs(straight, CONFIG)
    first = ckpt.load_checkpoint(ckpt.find_latest(os.path.join(stage1, "checkpoints")))
    second = ckpt.load_checkpoint(ckpt.find_latest(os.path.join(stage2, "checkpoints")))
    initial = load_backbone(dirs["init"]).state_dict()
    s1, s2 = first["backbones"]["model"]["state_dict"], second["backbones"]["model"]["state_dict"]
    for key, value in initial.items():  # stage 1 touches only the last layer, stage 2 all the weights
        assert torch.equal(s1[key], value) != key.startswith("embedding."), key
        if key.endswith("weight"):
            assert not torch.equal(s2[key], s1[key]), key
    for name in ("config.yaml", "metrics.tsv", "loss.png", "log/train.log", ".done"):
        assert os.path.isfile(os.path.join(stage2, name)), name
    classifier, classes, eval_cfg = load_classifier(os.path.join(straight, "final.pt"))
    assert classes == ["even", "odd"] and eval_cfg["chunk_size"] == 60
    assert torch.equal(classifier.head[-1].weight, second["objective"]["head"]["1.weight"])

    # Stopped part-way through stage 1, then re-run: the same classifier as the straight run.
    resumed = str(dirs["root"] / "resumed")
    assert not run_finetune(with_init(dirs["init"]), dirs["train"], resumed, device="cpu", max_steps=3)
    assert not os.path.exists(os.path.join(resumed, "final.pt"))
    assert not run_finetune(with_init(dirs["init"]), dirs["train"], resumed, device="cpu", max_steps=5)
    assert run_finetune(with_init(dirs["init"]), dirs["train"], resumed, device="cpu")
    a, b = (torch.load(os.path.join(d, "final.pt"), weights_only=True) for d in (straight, resumed))
    assert all(torch.equal(x, a["backbones"]["model"]["state_dict"][k])
               for k, x in b["backbones"]["model"]["state_dict"].items())
    assert all(torch.equal(x, a["classifier"]["head"][k]) for k, x in b["classifier"]["head"].items())

    out = str(dirs["root"] / "eval")
    evaluate_classifier.main(["--device", "cpu", os.path.join(straight, "final.pt"), dirs["test"], out])
    results = read_results(os.path.join(out, "results.txt"))
    assert set(results) == {"accuracy", "uar", "utterances", "failed"} and results["utterances"] == 8
    predictions = read_kv(os.path.join(out, "utt2pred"))
    labels = read_kv(os.path.join(dirs["test"], "utt2label"))
    expected = classification_metrics([labels[u] for u in sorted(predictions)],
                                      [predictions[u] for u in sorted(predictions)])
    assert results["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-4)
    mtime = os.path.getmtime(os.path.join(straight, "final.pt"))
    assert run_finetune(with_init(dirs["init"]), dirs["train"], straight, device="cpu")
    assert os.path.getmtime(os.path.join(straight, "final.pt")) == mtime


def test_random_init_and_crop_options(dirs):
    exp = str(dirs["root"] / "scratch")
    train_cli.main(["--config", dirs["config"], "--init-model", dirs["init"], "--device", "cpu", dirs["train"], exp,
                    "finetune.random_init=true", "finetune.chunk_frames=30", "finetune.augment=false",
                    "finetune.stages=[{train: all, epochs: 1}]"])
    saved = yaml.safe_load(Path(exp, "stage1_all", "config.yaml").read_text())
    assert saved["data"]["crops"]["chunk"]["frames"] == 30 and saved["data"]["aug_prob"] == 0.0
    assert saved["data"]["specaug"]["prob"] == 0.0 and saved["finetune"]["init"]["random_init"] is True
    assert saved["model"]["embed_dim"] == 16  # the architecture of --init
    trained = load_backbone(os.path.join(exp, "final.pt")).state_dict()
    initial = load_backbone(dirs["init"]).state_dict()
    # BatchNorm biases start at zero in both; the random convolutions differ from the SSL ones.
    assert not torch.equal(trained["stem.0.weight"], initial["stem.0.weight"])


def test_metrics_accuracy_and_uar():
    metrics = classification_metrics(["a", "a", "a", "b"], ["a", "a", "b", "a"])
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["uar"] == pytest.approx((2 / 3 + 0) / 2)
    assert metrics["recall"] == {"a": (pytest.approx(2 / 3), 3), "b": (0.0, 1)}


def test_user_errors_name_the_problem(dirs, tmp_path, capsys):
    bad = [("finetune.stages=[{train: some, epochs: 1}]", "train must be one of head, last, all"),
           ("finetune.label_file=utt2emotion", "utt2emotion: no such label file"),
           ("data.crops={a: {count: 1, frames: 9}, b: {count: 1, frames: 9}}", "exactly one data.crops group")]
    for override, message in bad:
        with pytest.raises(SystemExit) as exit_info:
            train_cli.main(["--config", dirs["config"], "--init-model", dirs["init"], "--device", "cpu",
                            dirs["train"], str(tmp_path / "e"), override])
        assert exit_info.value.code == 1
        assert message in capsys.readouterr().err
    partial = str(tmp_path / "partial")
    os.makedirs(partial)
    for name in ("feats.scp", "utt2spk"):
        os.link(os.path.join(dirs["train"], name), os.path.join(partial, name))
    write_table(os.path.join(partial, "utt2label"), {"spk000-utt000": "x"})
    objective = FinetuneObjective(partial)
    with pytest.raises(DataDirError, match="partial/utt2label: no label for utterance 'spk000-utt001'"):
        objective.build(build_stage_config(CONFIG, 0, MODEL, {"file": dirs["init"]}), 4, 4, torch.device("cpu"))


def test_finetune_script_usage_and_missing_input(dirs, tmp_path):
    proc = run_script(["steps/finetune.sh", dirs["init"]], check=False)
    assert proc.returncode == 1 and "e.g.:" in proc.stderr
    proc = run_script(["steps/finetune.sh", "--config", dirs["config"], dirs["init"], dirs["train"],
                       str(tmp_path / "nodata"), str(tmp_path / "e")], check=False)
    assert proc.returncode == 1 and "no such file" in proc.stderr and "nodata/feats.scp" in proc.stderr
