"""DINO and the generic training pieces: crops, sampler, schedules, augmentation, head, EMA, loss, trainer."""

import itertools
import os
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from conftest import ROOT, run_script

from pyspk.bin import train as train_cli
from pyspk.config import ConfigError, load_config
from pyspk.data.datadir import DataDir, DataDirError
from pyspk.models import list_backbones, load_backbone
from pyspk.ssl.dino import DINOHead, DINOLoss, DINOObjective, ema_update
from pyspk.train.augment import (
    CHANNEL_DEFAULTS,
    SPECAUG_DEFAULTS,
    BatchAugmenter,
    channel_augment,
    merged_options,
    spec_augment,
)
from pyspk.train.data import CropDataset, ResumableBatchSampler, group_copies
from pyspk.train.schedules import Schedule, build_schedule
from pyspk.train.synthetic import make_feats_data_dir
from pyspk.train.trainer import Trainer

TINY = os.path.join(ROOT, "conf", "dino_tiny.yaml")
CROPS = {"global": {"count": 2, "frames": 50}, "local": {"count": 3, "frames": 20}}


pytestmark = pytest.mark.usefixtures("one_thread")


# The distillation loss alone: conf/dino_tiny.yaml also switches on the NT-Xent warm-up and RDINO's terms.
DINO_ONLY = ("dino.contrastive.weight=0", "dino.regularisers.diversity=0", "dino.regularisers.redundancy=0")


def tiny_config(*overrides):
    return load_config(TINY, ["model.feat_dim=40", *overrides])


@pytest.fixture(scope="module")
def feats_dir(tmp_path_factory):
    return make_feats_data_dir(str(tmp_path_factory.mktemp("feats")), n_spk=4, n_utt=4, min_frames=30,
                               max_frames=120, feat_dim=40, copies=("reverb", "noise"))


# -- crops and copies -------------------------------------------------------------

def test_copies_grouped_by_kaldi_suffix(feats_dir):
    ds = CropDataset(feats_dir, CROPS)
    assert len(ds) == 16 and ds.num_copies == 32
    assert ds.groups["spk000-utt000"] == ["spk000-utt000-noise", "spk000-utt000-reverb"]
    assert all("-" not in u.split("utt")[1] for u in ds.utts)  # clean utterances only


def test_utt2copies_file(tmp_path):
    d = make_feats_data_dir(str(tmp_path / "d"), n_spk=1, n_utt=3, feat_dim=8, copies=("reverb",))
    with open(os.path.join(d, "utt2copies"), "w") as f:
        f.write("spk000-utt000 spk000-utt000-reverb spk000-utt001-reverb\n")
    groups = group_copies(DataDir(d), list(DataDir(d).feats_scp()))
    assert groups["spk000-utt000"] == ["spk000-utt000-reverb", "spk000-utt001-reverb"]
    assert groups["spk000-utt001"] == [] and groups["spk000-utt002-reverb"] == []
    with open(os.path.join(d, "utt2copies"), "a") as f:
        f.write("spk000-utt002 missing-copy\n")
    with pytest.raises(DataDirError, match=r"utt2copies:2: 'missing-copy' is not in feats.scp"):
        group_copies(DataDir(d), list(DataDir(d).feats_scp()))


def test_crop_shapes_determinism_and_copy_choice(feats_dir):
    ds = CropDataset(feats_dir, CROPS, seed=3, aug_prob=1.0)
    item = ds[(5, 0)]
    assert item["crops"]["global"].shape == (2, 50, 40) and item["crops"]["local"].shape == (3, 20, 40)
    assert item["crops"]["global"].dtype == torch.float32
    again = ds[(5, 0)]
    assert all(torch.equal(item["crops"][k], again["crops"][k]) for k in CROPS)
    other_epoch = ds[(5, 1)]
    assert not torch.equal(item["crops"]["local"], other_epoch["crops"]["local"])
    # aug_prob=1: every crop is a row block of one of the copies, never of the clean utterance.
    utt = ds.utts[5]
    clean, copies = ds.load(utt), [ds.load(c) for c in ds.groups[utt]]
    for crop in item["crops"]["global"]:
        row = crop[0].numpy()
        assert not np.isclose(clean, row).all(axis=1).any()
        assert any(np.isclose(c, row).all(axis=1).any() for c in copies)


def test_short_utterance_is_repeated(tmp_path):
    d = make_feats_data_dir(str(tmp_path / "d"), n_spk=1, n_utt=1, min_frames=7, max_frames=7, feat_dim=4)
    ds = CropDataset(d, {"global": {"count": 1, "frames": 20}})
    crop = ds[(0, 0)]["crops"]["global"][0].numpy()
    mat = ds.load(ds.utts[0])
    start = int(np.flatnonzero(np.isclose(mat, crop[0]).all(axis=1))[0])
    assert np.allclose(crop, mat[(start + np.arange(20)) % 7])


def test_vad_selects_voiced_frames(tmp_path):
    d = make_feats_data_dir(str(tmp_path / "d"), n_spk=1, n_utt=1, min_frames=120, max_frames=120, feat_dim=4)
    utt = "spk000-utt000"
    vad = np.zeros(120, dtype=np.float32)
    vad[30:100] = 1
    with kaldiio.WriteHelper(f"ark,scp:{d}/vad.ark,{d}/vad.scp") as writer:
        writer(utt, vad)
    ds = CropDataset(d, {"global": {"count": 1, "frames": 10}}, use_vad=True)
    full = np.asarray(kaldiio.load_mat(DataDir(d).feats_scp()[utt]))
    assert np.allclose(ds.load(utt), full[30:100])


def test_unreadable_utterance_is_skipped(tmp_path, caplog):
    d = make_feats_data_dir(str(tmp_path / "d"), n_spk=1, n_utt=2, feat_dim=4)
    scp = os.path.join(d, "feats.scp")
    lines = Path(scp).read_text().splitlines()
    lines[0] = lines[0].split()[0] + " " + os.path.join(d, "gone.ark") + ":12"
    Path(scp).write_text("\n".join(lines) + "\n")
    ds = CropDataset(d, {"global": {"count": 1, "frames": 10}})
    item = ds[(0, 0)]
    assert item["index"] == 1
    assert "spk000-utt000" in caplog.text


# -- sampler and schedules ------------------------------------------------------------

def test_sampler_shards_and_resumes():
    shards = [ResumableBatchSampler(23, 3, seed=5, rank=r, world_size=2) for r in range(2)]
    batches = [list(s) for s in shards]
    assert [len(b) for b in batches] == [3, 3]
    flat = [i for b in batches for batch in b for i, _ in batch]
    assert len(flat) == len(set(flat)) == 18
    shards[0].set_epoch(0, start_batch=1)
    assert list(shards[0]) == batches[0][1:]
    shards[0].set_epoch(1)
    assert [i for b in shards[0] for i, _ in b] != [i for b in batches[0] for i, _ in b]
    with pytest.raises(ConfigError, match="cannot fill one batch"):
        ResumableBatchSampler(5, 3, world_size=2)


def test_cosine_schedule_with_warmup():
    s = Schedule(1.0, 0.0, total_steps=12, warmup_steps=2, warmup_start=0.0)
    assert s(0) == 0.0 and s(1) == 0.5 and s(2) == 1.0
    assert s(11) == pytest.approx(0.0) and s(100) == 0.0
    assert all(a >= b for a, b in itertools.pairwise(s.values[2:]))
    temp = build_schedule({"base": 0.07, "warmup_start": 0.04, "warmup_epochs": 1, "kind": "constant"}, 3, 9, "t")
    assert [round(temp(i), 3) for i in range(5)] == [0.04, 0.05, 0.06, 0.07, 0.07]
    assert build_schedule(0.5, 3, 9, "x")(7) == 0.5
    with pytest.raises(ConfigError):
        build_schedule({"base": 1, "bogus": 2}, 3, 9, "optim.lr")


# -- augmentation ---------------------------------------------------------------

def test_spec_augment_masks_vanish_after_mean_normalisation():
    x = torch.randn(6, 50, 40) + 8
    opts = merged_options({"prob": 1.0, "time_width": 10, "freq_width": 8}, SPECAUG_DEFAULTS, "s")
    y = spec_augment(x, torch.Generator().manual_seed(0), opts)
    changed = y != x
    assert changed.any()
    normed = y - y.mean(dim=1, keepdim=True)
    fully_masked_bins = changed.all(dim=1)
    assert torch.allclose(normed.transpose(1, 2)[fully_masked_bins], torch.tensor(0.0), atol=1e-5)


def test_channel_augment_changes_only_chosen_crops_and_is_seeded():
    x = torch.randn(20, 50, 40) + 8
    none = merged_options({"prob": 0.0}, CHANNEL_DEFAULTS, "c")
    assert torch.equal(channel_augment(x, torch.Generator().manual_seed(0), none), x)
    opts = merged_options({"prob": 1.0, "reverb_prob": 1.0, "noise_prob": 1.0}, CHANNEL_DEFAULTS, "c")
    y = channel_augment(x, torch.Generator().manual_seed(0), opts)
    assert torch.isfinite(y).all() and (y - x).abs().mean(dim=(1, 2)).min() > 0.01
    # Not a per-bin constant: mean normalisation does not undo it.
    assert not torch.allclose(y - y.mean(1, keepdim=True), x - x.mean(1, keepdim=True), atol=1e-2)
    augmenter = BatchAugmenter(None, {"prob": 0.5}, seed=1)
    batch = {"global": x.view(10, 2, 50, 40)}
    assert torch.equal(augmenter(batch, 7)["global"], augmenter(batch, 7)["global"])
    assert not torch.equal(augmenter(batch, 7)["global"], augmenter(batch, 8)["global"])


# -- head, EMA, loss ------------------------------------------------------------------

def test_head_shapes_and_normalised_last_layer():
    head = DINOHead(32, out_dim=100, hidden_dim=16, bottleneck_dim=8, nlayers=3, use_bn=True)
    assert head(torch.randn(5, 32)).shape == (5, 100)
    assert head.last_layer.weight_g is None
    # Fixed-norm prototypes: scaling the raw weights does not change the output.
    x = torch.randn(5, 32)
    head.eval()
    before = head(x)
    with torch.no_grad():
        head.last_layer.weight_v.mul_(3.0)
    assert torch.allclose(head(x), before, atol=1e-5)
    assert DINOHead(32, 100, 16, 8, norm_last_layer=False).last_layer.weight_g.requires_grad


def test_ema_update():
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = [0.9 * t.detach() + 0.1 * s.detach()
                for t, s in zip(teacher.parameters(), student.parameters(), strict=True)]
    ema_update(teacher, student, 0.9)
    assert all(torch.allclose(t, e) for t, e in zip(teacher.parameters(), expected, strict=True))


def test_loss_matches_pairwise_definition_and_centre_update():
    torch.manual_seed(0)
    batch, k, n_global, n_crops = 3, 7, 2, 5
    student, teacher = torch.randn(n_crops * batch, k), torch.randn(n_global * batch, k)
    loss_fn = DINOLoss(k, n_global, center_momentum=0.9)
    loss_fn.center.fill_(0.3)
    loss, stats = loss_fn(student, teacher, 0.1, 0.04)
    total, pairs = 0.0, 0
    for iq in range(n_global):
        p_t = torch.softmax((teacher[iq * batch:(iq + 1) * batch] - 0.3) / 0.04, -1)
        for v in range(n_crops):
            if v != iq:
                log_p_s = torch.log_softmax(student[v * batch:(v + 1) * batch] / 0.1, -1)
                total += -(p_t * log_p_s).sum(-1).mean()
                pairs += 1
    assert torch.allclose(loss, total / pairs, atol=1e-5)
    assert stats["kl"] >= -1e-5 and stats["teacher_entropy"] > 0
    loss_fn.update_center(teacher)
    assert torch.allclose(loss_fn.center, 0.9 * 0.3 + 0.1 * teacher.mean(0, keepdim=True))


def build_objective(config, steps_per_epoch=4, total=40):
    objective = DINOObjective()
    objective.build(config, steps_per_epoch, total, torch.device("cpu"))
    return objective


def loss_steps(objective, dataset, steps, lr=0.05, batch_size=8):
    model = objective.trainable()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed=0)
    losses, step = [], 0
    while step < steps:
        sampler.set_epoch(step)
        for keys in sampler:
            items = [dataset[key] for key in keys]
            batch = {"crops": {n: torch.stack([it["crops"][n] for it in items]) for n in items[0]["crops"]}}
            loss, _ = objective.compute_loss(model, batch, step)
            optimizer.zero_grad()
            loss.backward()
            objective.after_backward(step)
            optimizer.step()
            objective.after_step(step)
            losses.append(float(loss.detach()))
            step += 1
    return losses


def test_loss_falls_and_teacher_gets_no_gradients(feats_dir):
    # A fixed teacher (momentum 1, no centring, no batch-dependent BN): the student must learn to match it.
    config = tiny_config("dino.momentum=1.0", "dino.center_momentum=1.0", "dino.freeze_last_layer_fraction=0",
                         "dino.teacher_temp=0.04", "dino.head.use_bn=false", *DINO_ONLY)
    torch.manual_seed(0)
    objective = build_objective(config)
    teacher_before = [p.clone() for p in objective.teacher.parameters()]
    dataset = CropDataset(feats_dir, CROPS, seed=0)
    losses = loss_steps(objective, dataset, 16, lr=0.01)
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.3
    assert all(not p.requires_grad and p.grad is None for p in objective.teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, objective.teacher.parameters(), strict=True))


def test_last_layer_frozen_during_first_steps(feats_dir):
    config = tiny_config("dino.freeze_last_layer_fraction=0.05", *DINO_ONLY)
    objective = build_objective(config, steps_per_epoch=2)  # 40 steps: frozen for the first 2
    dataset = CropDataset(feats_dir, CROPS, seed=0)
    last = objective.student.head.last_layer.weight_v
    start = last.detach().clone()
    loss_steps(objective, dataset, 2)
    assert torch.equal(last, start)
    loss_steps(objective, dataset, 1)  # steps count from 0 again: still frozen
    objective.freeze_last_layer_steps = 0
    loss_steps(objective, dataset, 1)
    assert not torch.equal(last, start)


# -- trainer end to end ---------------------------------------------------------------

def test_trainer_outputs_and_idempotence(feats_dir, tmp_path):
    exp = str(tmp_path / "exp")
    config = tiny_config("train.epochs=1")
    Trainer(DINOObjective(), config, feats_dir, exp, device="cpu").run()
    for name in ("config.yaml", "final.pt", "metrics.tsv", "loss.png", "log/train.log", ".done"):
        assert os.path.isfile(os.path.join(exp, name)), name
    assert list_backbones(os.path.join(exp, "final.pt")) == ["teacher", "student"]
    teacher = load_backbone(os.path.join(exp, "final.pt"))
    assert teacher(torch.randn(2, 60, 40)).shape == (2, 32)
    # 16 utterances / batch 4 = 4 steps; checkpoints every 3 steps and at the epoch's end.
    assert sorted(os.listdir(os.path.join(exp, "checkpoints"))) == ["ckpt-e0-s3.pt", "ckpt-e1-s4.pt"]
    header = Path(exp, "metrics.tsv").read_text().splitlines()[0].split()
    assert {"loss", "lr", "momentum", "teacher_entropy", "kl", "emb_std"} <= set(header)
    mtime = os.path.getmtime(os.path.join(exp, "final.pt"))
    assert Trainer(DINOObjective(), config, feats_dir, exp, device="cpu").run() is None
    assert os.path.getmtime(os.path.join(exp, "final.pt")) == mtime


def test_config_errors(feats_dir, tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown key"):
        Trainer(DINOObjective(), tiny_config() | {"bogus": 1}, feats_dir, str(tmp_path / "e"))
    with pytest.raises(ConfigError, match=r"40-dim features but model\.feat_dim is 80"):
        Trainer(DINOObjective(), load_config(TINY), feats_dir, str(tmp_path / "e")).run()
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["--config", TINY, feats_dir, str(tmp_path / "e2"), "optim.nope=1"])
    assert exit_info.value.code == 1
    assert "unknown key 'nope' under optim" in capsys.readouterr().err


def test_train_dino_script_usage_and_missing_input(tmp_path):
    proc = run_script(["steps/train_dino.sh", "--config", TINY, str(tmp_path / "nodata"), str(tmp_path / "e")],
                      check=False)
    assert proc.returncode == 1 and "no such file" in proc.stderr
    proc = run_script(["steps/train_dino.sh", str(tmp_path / "nodata")], check=False)
    assert proc.returncode == 1 and "e.g.:" in proc.stderr


class NaNAtStep2(DINOObjective):
    def compute_loss(self, model, batch, step):
        loss, stats = super().compute_loss(model, batch, step)
        return (loss * float("nan") if step == 2 else loss), stats


def test_non_finite_loss_stops_without_saving(feats_dir, tmp_path):
    exp = str(tmp_path / "exp")
    config = tiny_config("train.ckpt_every_steps=1", "train.log_every=10")
    with pytest.raises(FloatingPointError, match="by step 3"):
        Trainer(NaNAtStep2(), config, feats_dir, exp, device="cpu").run()
    assert sorted(os.listdir(os.path.join(exp, "checkpoints"))) == ["ckpt-e0-s1.pt", "ckpt-e0-s2.pt"]
