"""MeMo: head routing, dynamic stop of the contrastive term, kill + resume, extraction; DDP for both new trainers."""

import os
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from conftest import ROOT, kill_training_at_checkpoint, run_script

from pyspk.config import ConfigError, load_config
from pyspk.models import list_backbones, load_backbone
from pyspk.ssl.memo import MeMoObjective, distillation_pairs
from pyspk.ssl.ntxent import ContrastiveStop
from pyspk.train import checkpoint as ckpt
from pyspk.train.loop import Trainer
from pyspk.train.synthetic import make_feats_data_dir

DEMO = os.path.join(ROOT, "conf", "memo_demo.yaml")
CONTRASTIVE_DEMO = os.path.join(ROOT, "conf", "contrastive_demo.yaml")
# The demo config shrunk to a seconds-long run: two tiny architectures on 40-dim features.
TINY = ["model={feat_dim: 40, archs: {resnet: {name: resnet_thin, embed_dim: 16, blocks: [1, 1], base_width: 4}, "
        "ecapa: {name: ecapa, embed_dim: 16, channels: 16, mfa_channels: 48, se_channels: 8, attention_channels: 8}}}",
        "memo.head={out_dim: 64, hidden_dim: 32, bottleneck_dim: 16, nlayers: 2, use_bn: false, norm_last_layer: true}",
        "data.batch_size=4", "data.num_workers=0", "data.crops.global.frames=40", "data.crops.local.count=1",
        "data.crops.local.frames=30", "train.epochs=2", "train.log_every=1", "train.ckpt_every_steps=1",
        "train.keep_checkpoints=2", "memo.freeze_last_layer_epochs=0",
        # The contrastive term stops after step 2: window 1 sets the best, window 2 cannot beat it by 10.
        "memo.contrastive.stop={window_steps: 1, patience: 1, min_delta: 10.0, max_epochs: null}"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def feats_dir(tmp_path_factory):
    return make_feats_data_dir(str(tmp_path_factory.mktemp("feats")), n_spk=4, n_utt=4, min_frames=30,
                               max_frames=100, feat_dim=40, copies=("reverb",))


def tiny_config(*overrides):
    return load_config(DEMO, [*TINY, *overrides])


def build(config, steps_per_epoch=4):
    torch.manual_seed(0)
    objective = MeMoObjective()
    objective.build(config, steps_per_epoch, 2 * steps_per_epoch, torch.device("cpu"))
    return objective


def random_batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"crops": {"global": torch.randn(4, 2, 40, 40, generator=gen),
                      "local": torch.randn(4, 1, 30, 40, generator=gen)}}


def test_pairs():
    assert distillation_pairs(["a", "b"]) == [("self", "a", "a"), ("self", "b", "b"),
                                              ("cross", "a", "b"), ("cross", "b", "a")]


@pytest.mark.parametrize("net,mode", [("student", "self"), ("student", "cross"), ("teacher", "self"),
                                      ("teacher", "cross")])
def test_each_head_only_serves_its_own_mode(net, mode):
    """Poison one head of the ecapa architecture: exactly the pairs routed through it go NaN."""
    objective = build(tiny_config())
    head = getattr(objective, net).heads[mode]["ecapa"]
    with torch.no_grad():
        head.last_layer.weight_v.fill_(float("nan"))
    _, stats = objective.compute_loss(objective.trainable(), random_batch(), 0)
    expected = {("student", "self"): "self_ecapa", ("teacher", "self"): "self_ecapa",
                ("student", "cross"): "cross_resnet_to_ecapa", ("teacher", "cross"): "cross_ecapa_to_resnet"}
    poisoned = {name for name in ("self_resnet", "self_ecapa", "cross_resnet_to_ecapa", "cross_ecapa_to_resnet")
                if torch.isnan(stats[name])}
    assert poisoned == {expected[(net, mode)]}
    assert torch.isfinite(stats["contrastive"])  # embedding level: no head involved


def test_mode_weights_reach_only_their_heads():
    objective = build(tiny_config("memo.cross_weight=0", "memo.contrastive.weight=0"))
    loss, _ = objective.compute_loss(objective.trainable(), random_batch(), 0)
    loss.backward()
    for arch in ("resnet", "ecapa"):
        for mode, used in (("self", True), ("cross", False)):
            grads = [p.grad for p in objective.student.heads[mode][arch].parameters()]
            assert all(g is not None for g in grads)
            assert any(g.abs().sum() > 0 for g in grads) == used, (arch, mode)
    assert all(p.grad is None for p in objective.teacher.parameters())


def test_stop_rule_and_state_round_trip():
    stop = ContrastiveStop(window_steps=2, patience=2, min_delta=0.1)
    values = [5.0, 5.0, 4.0, 4.0, 3.95, 3.95, 3.9, 3.9, 9.0, 9.0]
    reasons = [stop.update(step, v) for step, v in enumerate(values)]
    # Windows: 5.0 (best), 4.0 (best), 3.95 (bad 1), 3.9 (bad 2): stopped after 8 steps.
    assert [i for i, r in enumerate(reasons) if r] == [7] and "no improvement" in reasons[7]
    assert stop.stopped_step == 8 and stop.active(7) and not stop.active(8)
    assert stop.update(8, 9.0) is None and stop.stopped_step == 8
    again = ContrastiveStop(window_steps=2, patience=2, min_delta=0.1)
    again.load_state_dict(stop.state_dict())
    assert again.state_dict() == stop.state_dict() and not again.active(9)
    capped = ContrastiveStop(window_steps=100, patience=0, max_steps=3)
    assert [bool(capped.update(s, 1.0)) for s in range(4)] == [False, False, True, False]
    assert capped.stopped_step == 3
    assert not ContrastiveStop(enabled=False).active(0)


def test_contrastive_term_is_off_after_its_stop():
    objective = build(tiny_config())
    batch = random_batch()
    objective.stop.stopped_step = 1
    for step, on in ((0, True), (1, False), (5, False)):
        loss, stats = objective.compute_loss(objective.trainable(), batch, step)
        distill = (stats["self_resnet"] + stats["self_ecapa"]) / 2 \
            + (stats["cross_resnet_to_ecapa"] + stats["cross_ecapa_to_resnet"]) / 2
        assert bool(stats["contrastive_on"]) == on
        if on:
            assert stats["contrastive"] > 0
            assert loss.item() == pytest.approx((distill + stats["contrastive"]).item(), rel=1e-5)
        else:
            assert stats["contrastive"] == 0 and loss.item() == pytest.approx(distill.item(), rel=1e-5)
        objective.after_step(step)
    assert objective.stop.stopped_step == 1


def test_config_errors():
    with pytest.raises(ConfigError, match="at least 2 architectures"):
        build(tiny_config("model={feat_dim: 40, archs: {r: {name: resnet_thin}}}"))
    with pytest.raises(ConfigError, match="letters, digits"):
        build(tiny_config("model={feat_dim: 40, archs: {a-b: {name: resnet_thin}, c: {name: tdnn}}}"))
    with pytest.raises(ConfigError, match="unknown key"):
        build(tiny_config("memo.contrastive.stop={window: 3}"))


# -- trainer: straight, killed + resumed, extraction with either teacher ----------------------

@pytest.fixture(scope="module")
def straight(feats_dir, tmp_path_factory):
    exp = str(tmp_path_factory.mktemp("straight"))
    Trainer(MeMoObjective(), tiny_config(), feats_dir, exp, device="cpu").run()
    return exp


def latest_state(exp):
    return ckpt.load_checkpoint(ckpt.find_latest(os.path.join(exp, "checkpoints")))


def assert_same_backbones(path_a, path_b):
    a, b = (ckpt.load_checkpoint(p)["backbones"] for p in (path_a, path_b))
    assert a.keys() == b.keys()
    for name in a:
        for key, value in a[name]["state_dict"].items():
            assert torch.equal(value, b[name]["state_dict"][key]), f"{name}.{key}"


def test_killed_run_resumes_with_its_stop_state(feats_dir, straight, tmp_path):
    exp = str(tmp_path / "exp")
    command = [sys.executable, "-m", "pyspk.bin.train", "--config", DEMO, "--device", "cpu", feats_dir, exp,
               *TINY]
    # Kill once a checkpoint past the stop (step 2) exists: the stop must come back from it.
    kill_training_at_checkpoint(command, exp, min_step=3)
    resumed = MeMoObjective()
    assert Trainer(resumed, tiny_config(), feats_dir, exp, device="cpu").run() == 8
    assert resumed.stop.stopped_step == 2
    state, reference = latest_state(exp), latest_state(straight)
    assert state["objective"]["contrastive_stop"] == reference["objective"]["contrastive_stop"]
    assert state["objective"]["contrastive_stop"]["stopped_step"] == 2
    for key, value in reference["objective"]["losses"].items():
        assert torch.equal(value, state["objective"]["losses"][key]), key
    assert_same_backbones(os.path.join(straight, "final.pt"), os.path.join(exp, "final.pt"))
    log = Path(straight, "log", "train.log").read_text()
    assert "contrastive loss stopped at step 2" in log
    with open(os.path.join(exp, "metrics.tsv")) as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    on = [float(r[rows[0].index("contrastive_on")]) for r in rows[1:]]
    assert on == [1.0, 1.0] + [0.0] * 6


def test_either_teacher_extracts(feats_dir, straight, tmp_path):
    final = os.path.join(straight, "final.pt")
    assert list_backbones(final) == ["teacher_resnet", "teacher_ecapa", "student_resnet", "student_ecapa"]
    assert load_backbone(final).config["name"] == "resnet_thin"  # default: the first architecture's teacher
    listed = subprocess.run([sys.executable, "-m", "pyspk.bin.extract_embeddings", "list", final], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    assert listed == ["teacher_resnet", "teacher_ecapa", "student_resnet", "student_ecapa"]
    # The extraction script with the other (non-default) teacher.
    out = str(tmp_path / "ecapa")
    run_script(["steps/extract_embeddings.sh", "--nj", "1", "--device", "cpu", "--backbone", "teacher_ecapa",
                final, feats_dir, out])
    embeddings = dict(kaldiio.load_scp(os.path.join(out, "xvector.scp")))
    assert len(embeddings) == 32 and all(np.asarray(e).shape == (16,) for e in embeddings.values())
    assert load_backbone(final, "teacher_ecapa").config["name"] == "ecapa"


def test_script_usage(tmp_path):
    proc = run_script(["steps/train_memo.sh", "--config", DEMO, str(tmp_path / "nodata"), str(tmp_path / "e")],
                      check=False)
    assert proc.returncode == 1 and "no such file" in proc.stderr
    proc = run_script(["steps/train_memo.sh", str(tmp_path / "nodata")], check=False)
    assert proc.returncode == 1 and "e.g.:" in proc.stderr


# -- DDP: both new trainers under two gloo processes ------------------------------------------

# Runs one trainer under torchrun, then dumps this rank's modules for the test to compare.
WORKER = """
import os, sys, torch
from pyspk.config import load_config
from pyspk.ssl.contrastive import ContrastiveObjective
from pyspk.ssl.memo import MeMoObjective
from pyspk.train.loop import Trainer
which, config_path, data, exp, *overrides = sys.argv[1:]
objective = {"contrastive": ContrastiveObjective, "memo": MeMoObjective}[which]()
Trainer(objective, load_config(config_path, overrides), data, exp, device="cpu").run()
state = {"trainable": dict(objective.trainable().named_parameters())}
if which == "memo":
    state.update(teacher=objective.teacher.state_dict(), losses=objective.losses.state_dict(),
                 stop=objective.stop.state_dict())
torch.save(state, os.path.join(exp, "..", f"{which}-rank{os.environ['RANK']}.pt"))
"""

CONTRASTIVE_TINY = ["model={name: resnet_thin, feat_dim: 40, embed_dim: 16, blocks: [1, 1], base_width: 4}",
                    "data.batch_size=2", "data.num_workers=0", "data.crops.global.frames=40",
                    "data.crops.local.count=1", "data.crops.local.frames=30", "contrastive.head.hidden_dim=32",
                    "contrastive.head.out_dim=16", "train.epochs=1", "train.ckpt_every_steps=0"]


@pytest.mark.parametrize("which", ["contrastive", "memo"])
def test_trainer_stays_in_sync_under_two_gloo_processes(feats_dir, tmp_path, which):
    config, *overrides = {"contrastive": [CONTRASTIVE_DEMO, *CONTRASTIVE_TINY],
                          "memo": [DEMO, *TINY, "data.batch_size=2", "train.ckpt_every_steps=0"]}[which]
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
               which, config, feats_dir, str(tmp_path / "exp"), *overrides]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"{which}-rank{r}.pt", weights_only=True) for r in range(2)]
    for part in ranks[0]:
        if part == "stop":
            assert ranks[0]["stop"] == ranks[1]["stop"]
            continue
        for name, value in ranks[0][part].items():
            assert torch.equal(value, ranks[1][part][name]), f"{part} {name}"
    assert (tmp_path / "exp" / "final.pt").is_file()
    if which == "memo":
        # 16 utterances / (2 x 2) = 4 steps per epoch; both processes stopped the contrastive term at step 2.
        assert ranks[1]["stop"]["stopped_step"] == 2
        assert "contrastive loss stopped at step 2" in (tmp_path / "exp" / "log" / "train.log").read_text()
