"""Exact resume: a run stopped or killed part-way and re-run ends bitwise equal to a straight run."""

import csv
import os
import random
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, kill_training_at_checkpoint

from pyspk.config import ConfigError, load_config
from pyspk.ssl.dino import DINOObjective
from pyspk.train import checkpoint as ckpt
from pyspk.train.synthetic import make_feats_data_dir
from pyspk.train.trainer import Trainer

TINY = os.path.join(ROOT, "conf", "dino_tiny.yaml")
# Augmentation and copies on, so their seeding is part of what must resume exactly.
OVERRIDES = ["model.feat_dim=40", "train.epochs=3", "train.ckpt_every_steps=1", "train.log_every=1",
             "train.keep_checkpoints=2", "data.aug_prob=0.7", "data.specaug.prob=0.5", "data.channel.prob=0.7"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def feats_dir(tmp_path_factory):
    return make_feats_data_dir(str(tmp_path_factory.mktemp("feats")), n_spk=4, n_utt=4, min_frames=30,
                               max_frames=120, feat_dim=40, copies=("reverb", "noise"))


@pytest.fixture(scope="module")
def straight(feats_dir, tmp_path_factory):
    exp = str(tmp_path_factory.mktemp("straight"))
    Trainer(DINOObjective(), load_config(TINY, OVERRIDES), feats_dir, exp, device="cpu").run()
    return exp


def tensors(obj, prefix=""):
    """Flatten nested dicts/lists of a checkpoint into {path: tensor-or-value}."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(tensors(v, f"{prefix}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(tensors(v, f"{prefix}/{i}"))
    else:
        out[prefix] = obj
    return out


def assert_same_state(path_a, path_b, skip=("/rng",)):
    a, b = tensors(ckpt.load_checkpoint(path_a)), tensors(ckpt.load_checkpoint(path_b))
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith(skip):
            continue
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def final_checkpoint(exp):
    return ckpt.find_latest(os.path.join(exp, "checkpoints"))


def metric_steps(exp):
    with open(os.path.join(exp, "metrics.tsv")) as f:
        return [int(r["step"]) for r in csv.DictReader(f, delimiter="\t")]


def test_stop_and_resume_in_process(feats_dir, straight, tmp_path):
    exp = str(tmp_path / "exp")
    config = load_config(TINY, OVERRIDES)
    assert Trainer(DINOObjective(), config, feats_dir, exp, device="cpu").run(max_steps=5) == 5
    assert not os.path.exists(os.path.join(exp, "final.pt"))
    Trainer(DINOObjective(), config, feats_dir, exp, device="cpu").run()
    assert os.path.basename(final_checkpoint(exp)) == "ckpt-e3-s12.pt"
    assert_same_state(final_checkpoint(straight), final_checkpoint(exp))
    assert_same_state(os.path.join(straight, "final.pt"), os.path.join(exp, "final.pt"))
    assert metric_steps(exp) == list(range(1, 13))


def test_killed_process_resumes_exactly(feats_dir, straight, tmp_path):
    exp = str(tmp_path / "exp")
    command = [sys.executable, "-m", "pyspk.bin.train", "--config", TINY, "--device", "cpu", feats_dir, exp,
               *OVERRIDES]
    kill_training_at_checkpoint(command, exp)
    # Re-running the command (in-process here, to spare a second interpreter start) resumes.
    resumed = Trainer(DINOObjective(), load_config(TINY, OVERRIDES), feats_dir, exp, device="cpu")
    assert resumed.run() == 12
    assert_same_state(os.path.join(straight, "final.pt"), os.path.join(exp, "final.pt"))
    assert_same_state(final_checkpoint(straight), final_checkpoint(exp))
    steps = metric_steps(exp)
    assert steps == sorted(set(steps)) and steps[-1] == 12


def test_resume_refuses_a_different_config(feats_dir, tmp_path):
    exp = str(tmp_path / "exp")
    Trainer(DINOObjective(), load_config(TINY, OVERRIDES), feats_dir, exp, device="cpu").run(max_steps=1)
    changed = load_config(TINY, [*OVERRIDES, "optim.lr.base=0.5"])
    with pytest.raises(ConfigError, match="differs from this run's config"):
        Trainer(DINOObjective(), changed, feats_dir, exp, device="cpu").run()


def test_rng_state_round_trip_is_weights_only(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    path = str(tmp_path / "rng.pt")
    torch.save(ckpt.capture_rng_state(), path)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ckpt.restore_rng_state(torch.load(path, weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_latest_and_pruning_ignore_temporaries(tmp_path):
    d = str(tmp_path)
    for epoch, step in [(0, 5), (1, 10), (1, 12), (2, 20)]:
        open(os.path.join(d, ckpt.checkpoint_name(epoch, step)), "w").close()
    open(os.path.join(d, ".ckpt-e3-s30.pt.abc.tmp"), "w").close()
    assert ckpt.find_latest(d).endswith("ckpt-e2-s20.pt")
    ckpt.prune_checkpoints(d, 2)
    assert sorted(os.listdir(d)) == [".ckpt-e3-s30.pt.abc.tmp", "ckpt-e1-s12.pt", "ckpt-e2-s20.pt"]
    ckpt.remove_stale_temporaries(d)
    assert sorted(os.listdir(d)) == ["ckpt-e1-s12.pt", "ckpt-e2-s20.pt"]
