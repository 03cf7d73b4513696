"""The pseudo-label classifier: AAM-softmax, margin warm-up, labels, init, trainer, resume, DDP, script."""

import csv
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, kill_training_at_checkpoint, run_script

from pyspk.bin import train as train_cli
from pyspk.config import ConfigError, load_yaml, save_config
from pyspk.data.datadir import DataDir, DataDirError
from pyspk.models import build_model, list_backbones, load_backbone, save_backbones
from pyspk.supervised.aam import AAMSoftmax, MarginSchedule, build_margin_schedule
from pyspk.supervised.classifier import ClassifierObjective, utterance_labels
from pyspk.train import checkpoint as ckpt
from pyspk.train.data import CropDataset
from pyspk.train.synthetic import make_feats_data_dir
from pyspk.train.trainer import Trainer

DEMO = os.path.join(ROOT, "conf", "classifier_demo.yaml")
TINY_MODEL = {"name": "resnet_thin", "feat_dim": 40, "embed_dim": 32, "blocks": [1, 1], "base_width": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**sections):
    """The demo config shrunk to seconds: tiny model, short crops, 4-item batches, 2 epochs."""
    config = load_yaml(DEMO)
    config["model"] = dict(TINY_MODEL)
    config["data"].update(batch_size=4, num_workers=0, crops={"train": {"count": 2, "frames": 40}})
    config["classifier"].update(margin_warmup={"start_epoch": 0.5, "end_epoch": 1}, two_step=None)
    config["optim"]["lr"] = {"base": 0.05, "final": 1.0e-3, "warmup_epochs": 0.5}
    config["train"].update(epochs=2, log_every=1, ckpt_every_steps=3, keep_checkpoints=2)
    for name, values in sections.items():
        config[name].update(values)
    return config


@pytest.fixture(scope="module")
def feats_dir(tmp_path_factory):
    return make_feats_data_dir(str(tmp_path_factory.mktemp("feats")), n_spk=4, n_utt=4, min_frames=30,
                               max_frames=120, feat_dim=40, copies=("reverb",))


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("conf") / "classifier_tiny.yaml")
    save_config(tiny_config(), path)
    return path


# -- AAM-softmax and the margin schedule ------------------------------------------

def hand_aam_loss(embeddings, weight, labels, margin, scale):
    """AAM-softmax by the textbook: angles, margin added to the target angle, log-sum-exp."""
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    w = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    cos = e @ w.T
    losses = []
    for i, y in enumerate(labels):
        logits = scale * cos[i].copy()
        theta = math.acos(cos[i, y])
        logits[y] = scale * (math.cos(theta + margin) if theta + margin <= math.pi
                             else cos[i, y] - margin * math.sin(margin))
        losses.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[y])
    return float(np.mean(losses))


def test_aam_softmax_matches_hand_computation():
    rng = np.random.default_rng(0)
    head = AAMSoftmax(3, 4, margin=0.3, scale=10.0).double()
    weight = head.weight.detach().numpy()
    embeddings = rng.normal(size=(5, 3))
    # Row 4 points almost opposite its class vector: theta + margin > pi takes the linear branch.
    embeddings[4] = -weight[2] + 0.01
    labels = np.array([0, 1, 3, 1, 2])
    for margin in (0.3, 0.0):
        loss, _logits, cosines = head(torch.from_numpy(embeddings), torch.from_numpy(labels), margin)
        assert loss.item() == pytest.approx(hand_aam_loss(embeddings, weight, labels, margin, 10.0), rel=1e-5)
    # Non-target logits are scale * cos; the margin lowers only the targets.
    loss_m, logits_m, _ = head(torch.from_numpy(embeddings), torch.from_numpy(labels), 0.3)
    target = torch.zeros_like(logits_m, dtype=torch.bool)
    target[torch.arange(5), torch.from_numpy(labels)] = True
    assert torch.allclose(logits_m[~target], 10.0 * cosines[~target])
    assert (logits_m[target] < 10.0 * cosines[target]).all()
    assert loss_m > loss


def test_margin_warmup_values():
    schedule = MarginSchedule(0.2, steps_per_epoch=10, start_epoch=1, end_epoch=3)
    values = [schedule(s) for s in (0, 9, 10, 15, 20, 29, 30, 100)]
    assert values == pytest.approx([0.0, 0.0, 0.0, 0.05, 0.1, 0.19, 0.2, 0.2])
    assert build_margin_schedule(0.3, None, 10)(0) == 0.3
    assert build_margin_schedule(0.3, {"start_epoch": 0.5, "end_epoch": 0.5}, 10)(4) == 0.0
    assert build_margin_schedule(0.3, {"start_epoch": 0.5, "end_epoch": 0.5}, 10)(5) == 0.3
    with pytest.raises(ConfigError, match="unknown key"):
        build_margin_schedule(0.2, {"start": 1}, 10)
    with pytest.raises(ConfigError, match="margin must be in"):
        build_margin_schedule(-0.1, None, 10)


# -- labels and initialisation ---------------------------------------------------------

def test_labels_follow_the_crop_dataset_order(feats_dir, tmp_path):
    classes, labels = utterance_labels(feats_dir)
    assert classes == ["spk000", "spk001", "spk002", "spk003"]
    dataset = CropDataset(feats_dir, {"train": {"count": 1, "frames": 10}})
    assert len(labels) == len(dataset) == 16  # the -reverb copies are not extra examples
    utt2spk = DataDir(feats_dir).utt2spk()
    assert [classes[i] for i in labels] == [utt2spk[u] for u in dataset.utts]
    # Pseudo-labels: any utt2spk, e.g. cluster ids, not necessarily the speaker prefix.
    d = make_feats_data_dir(str(tmp_path / "d"), n_spk=2, n_utt=2, feat_dim=8)
    with open(os.path.join(d, "utt2spk"), "w") as f:
        f.write("spk000-utt000 c7\nspk000-utt001 c12\nspk001-utt000 c7\n")
    with pytest.raises(DataDirError, match="no speaker for utterance 'spk001-utt001'"):
        utterance_labels(d)
    with open(os.path.join(d, "utt2spk"), "a") as f:
        f.write("spk001-utt001 c12\n")
    classes, labels = utterance_labels(d)
    assert classes == ["c12", "c7"] and labels.tolist() == [1, 0, 1, 0]


def test_init_from_model_loads_the_weights(feats_dir, tmp_path):
    torch.manual_seed(5)
    teacher, student = build_model(TINY_MODEL), build_model(TINY_MODEL)
    path = str(tmp_path / "dino.pt")
    save_backbones(path, {"teacher": teacher, "student": student}, "teacher")
    for name, source in ((None, teacher), ("student", student)):
        objective = ClassifierObjective(feats_dir)
        objective.build(tiny_config(classifier={"init_model": path, "init_backbone": name}), 4, 8,
                        torch.device("cpu"))
        loaded = objective.backbones()[0]["model"].state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())
    objective = ClassifierObjective(feats_dir)
    with pytest.raises(ConfigError, match="embed_dim: 32 in the file, 16 in the config"):
        objective.build(tiny_config(classifier={"init_model": path}, model={"embed_dim": 16}), 4, 8,
                        torch.device("cpu"))


# -- training -------------------------------------------------------------------

def test_loss_falls_on_a_tiny_set(feats_dir):
    config = tiny_config(classifier={"margin": 0.2, "margin_warmup": None},
                         data={"crops": {"train": {"count": 1, "frames": 40}}})
    torch.manual_seed(0)
    objective = ClassifierObjective(feats_dir)
    objective.build(config, 4, 40, torch.device("cpu"))
    model = objective.trainable()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    dataset = CropDataset(feats_dir, config["data"]["crops"], seed=0, aug_prob=0.0)
    fixed = [dataset[(i, 0)] for i in range(len(dataset))]  # the same crops every step
    batch = {"crops": {"train": torch.stack([it["crops"]["train"] for it in fixed])},
             "index": torch.tensor([it["index"] for it in fixed])}
    losses, accuracies = [], []
    for step in range(40):
        loss, stats = objective.compute_loss(model, batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        accuracies.append(stats["accuracy"].item())
    assert np.mean(losses[-3:]) < 0.3 * np.mean(losses[:3])
    assert np.mean(accuracies[-3:]) > 0.7 and np.mean(accuracies[:3]) < 0.5


def trained_tensors(path):
    """{name: tensor} of a checkpoint or final.pt: backbones and the objective's head."""
    content = ckpt.load_checkpoint(path)
    out = {f"backbone/{k}": v for k, v in content["backbones"]["model"]["state_dict"].items()}
    out.update({f"head/{k}": v for k, v in content.get("objective", {}).get("head", {}).items()})
    out.update({f"optimizer/{i}": s["momentum_buffer"]
                for i, s in content.get("optimizer", {}).get("state", {}).items()})
    return out


def assert_same_tensors(path_a, path_b):
    a, b = trained_tensors(path_a), trained_tensors(path_b)
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def straight(feats_dir, tmp_path_factory):
    exp = str(tmp_path_factory.mktemp("straight"))
    Trainer(ClassifierObjective(feats_dir), tiny_config(), feats_dir, exp, device="cpu").run()
    return exp


def test_trainer_outputs_and_idempotence(feats_dir, straight):
    for name in ("config.yaml", "final.pt", "metrics.tsv", "loss.png", "log/train.log", ".done"):
        assert os.path.isfile(os.path.join(straight, name)), name
    final = os.path.join(straight, "final.pt")
    assert list_backbones(final) == ["model"]
    assert load_backbone(final)(torch.randn(2, 50, 40)).shape == (2, 32)
    with open(os.path.join(straight, "metrics.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    # 16 utterances / batch 4 = 4 steps per epoch; margin 0 until epoch 0.5 (step 2), full from epoch 1.
    # Row n shows the margin of the step just taken, n - 1.
    assert [float(r["margin"]) for r in rows] == pytest.approx([0, 0, 0, 0.1, 0.2, 0.2, 0.2, 0.2])
    assert {"loss", "accuracy", "lr"} <= set(rows[0])
    mtime = os.path.getmtime(final)
    assert Trainer(ClassifierObjective(feats_dir), tiny_config(), feats_dir, straight, device="cpu").run() is None
    assert os.path.getmtime(final) == mtime


def test_resume_refuses_changed_labels(tmp_path):
    data = make_feats_data_dir(str(tmp_path / "data"), n_spk=3, n_utt=4, min_frames=30, max_frames=60,
                               feat_dim=40)
    exp = str(tmp_path / "exp")
    Trainer(ClassifierObjective(data), tiny_config(), data, exp, device="cpu").run(max_steps=1)
    with open(os.path.join(data, "utt2spk"), "w") as f:  # speakers 1 and 2 merged into one cluster
        f.writelines(f"spk{s:03d}-utt{u:03d} c{min(s, 1)}\n" for s in range(3) for u in range(4))
    with pytest.raises(ConfigError, match="2 speakers differ from the 3 classes of the checkpoint"):
        Trainer(ClassifierObjective(data), tiny_config(), data, exp, device="cpu").run()


def test_killed_process_resumes_exactly(feats_dir, straight, tiny_yaml, tmp_path):
    exp = str(tmp_path / "exp")
    command = [sys.executable, "-m", "pyspk.bin.train", "--config", tiny_yaml, "--device", "cpu",
               feats_dir, exp, "train.ckpt_every_steps=1"]
    kill_training_at_checkpoint(command, exp)
    # Re-running the command (in-process, to spare an interpreter start) resumes.
    config = load_yaml(os.path.join(exp, "config.yaml"))
    assert Trainer(ClassifierObjective(feats_dir), config, feats_dir, exp, device="cpu").run() == 8
    assert_same_tensors(os.path.join(straight, "final.pt"), os.path.join(exp, "final.pt"))
    assert_same_tensors(ckpt.find_latest(os.path.join(straight, "checkpoints")),
                        ckpt.find_latest(os.path.join(exp, "checkpoints")))


# Runs the trainer under torchrun, then dumps this rank's parameters for the test to compare.
WORKER = """
import os, sys, torch
from pyspk.config import load_yaml
from pyspk.supervised.classifier import ClassifierObjective
from pyspk.train.trainer import Trainer
config_path, data, exp = sys.argv[1:]
objective = ClassifierObjective(data)
Trainer(objective, load_yaml(config_path), data, exp, device="cpu").run()
torch.save(dict(objective.net.named_parameters()), os.path.join(exp, "..", f"rank{os.environ['RANK']}.pt"))
"""


def test_two_gloo_processes_stay_in_sync(feats_dir, tiny_yaml, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    exp = tmp_path / "exp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
               tiny_yaml, feats_dir, str(exp)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys()
    for name, value in ranks[0].items():
        assert torch.equal(value, ranks[1][name]), name
    # 16 utterances / (2 processes x batch 4) = 2 steps per epoch, logged by rank 0 only.
    with open(exp / "metrics.tsv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f, delimiter="\t")] == [1, 2, 3, 4]
    assert "2 process(es), 2 steps/epoch" in (exp / "log" / "train.log").read_text()
    trained = load_backbone(exp / "final.pt").state_dict()
    assert all(torch.equal(trained[k[len("backbone."):]], v) for k, v in ranks[0].items()
               if k.startswith("backbone."))


# -- command line and script ------------------------------------------------------------

def test_cli_errors(feats_dir, tiny_yaml, tmp_path, capsys):
    cases = [(["--init-backbone", "student"], "--init-backbone needs --init-model"),
             (["--init-model", str(tmp_path / "none.pt")], "none.pt: no such backbone file"),
             (["classifier.bogus=1"], "unknown key 'bogus' under classifier")]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            train_cli.main(["--config", tiny_yaml, "--device", "cpu", feats_dir, str(tmp_path / "e"),
                                   *extra])
        assert exit_info.value.code == 1
        assert message in capsys.readouterr().err


def test_script_trains_from_an_init_model(feats_dir, tiny_yaml, tmp_path):
    init = str(tmp_path / "dino.pt")
    save_backbones(init, {"teacher": build_model(TINY_MODEL)}, "teacher")
    exp = str(tmp_path / "exp")
    args = ["steps/train_classifier.sh", "--config", tiny_yaml, "--device", "cpu", "--init-model", init,
            "--overrides", "train.epochs=1 train.ckpt_every_steps=0", feats_dir, exp]
    proc = run_script(args, env={"OMP_NUM_THREADS": "1"})
    assert "trained" in proc.stdout and os.path.isfile(os.path.join(exp, "final.pt"))
    saved = load_yaml(os.path.join(exp, "config.yaml"))
    assert saved["classifier"]["init_model"] == init and saved["train"]["epochs"] == 1
    assert "already finished" in run_script(args).stdout
    proc = run_script(["steps/train_classifier.sh", "--config", tiny_yaml, str(tmp_path / "nodata"), exp],
                      check=False)
    assert proc.returncode == 1 and "no such file" in proc.stderr
    proc = run_script(["steps/train_classifier.sh", feats_dir], check=False)
    assert proc.returncode == 1 and "e.g.:" in proc.stderr
