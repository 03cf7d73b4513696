"""Crop sampling options: non-overlapping crops, a chance of augmented copies per crop group."""

import os

import kaldiio
import numpy as np
import pytest
import torch

from pyspk.config import ConfigError
from pyspk.train.data import CropDataset, loader_workers

CLEAN, COPY = 0.0, 1.0


def write_data_dir(root, lengths):
    """Utterances whose frame t holds t in column 0, and 0 (clean) or 1 (the -reverb copy) in column 1."""
    root.mkdir()
    with kaldiio.WriteHelper(f"ark,scp:{root}/feats.ark,{root}/feats.scp") as writer:
        for i, length in enumerate(lengths):
            for suffix, marker in (("", CLEAN), ("-reverb", COPY)):
                mat = np.zeros((length, 4), dtype=np.float32)
                mat[:, 0] = np.arange(length)
                mat[:, 1] = marker
                writer(f"utt{i}{suffix}", mat)
    (root / "utt2spk").write_text("".join(f"utt{i}{s} spk\n" for i in range(len(lengths)) for s in ("", "-reverb")))
    return str(root)


CROPS = {"global": {"count": 2, "frames": 30}, "local": {"count": 4, "frames": 10}}


def test_non_overlapping_crops_never_share_a_frame(tmp_path):
    data = write_data_dir(tmp_path / "d", [200, 90])  # utt1: 100 frames of crops do not fit in 90
    dataset = CropDataset(data, CROPS, seed=3, non_overlapping=True)
    starts_seen = set()
    for epoch in range(30):
        crops = dataset[(0, epoch)]["crops"]
        frames = [row[:, 0].long().tolist() for name in ("global", "local") for row in crops[name]]
        assert [len(f) for f in frames] == [30, 30, 10, 10, 10, 10]
        assert all(f == list(range(f[0], f[0] + len(f))) for f in frames)  # contiguous, no wrap-around
        flat = [t for f in frames for t in f]
        assert len(flat) == len(set(flat)), f"epoch {epoch}: overlapping crops"
        starts_seen.add(frames[0][0])
        short = dataset[(1, epoch)]["crops"]  # too short: independent crops of the right shape
        assert short["global"].shape == (2, 30, 4) and short["local"].shape == (4, 10, 4)
    assert len(starts_seen) > 10  # placed at random, not packed at the start


def test_aug_prob_per_crop_group(tmp_path):
    data = write_data_dir(tmp_path / "d", [120])
    crops = {"global": {"count": 2, "frames": 30, "aug_prob": 0.0}, "local": {"count": 4, "frames": 10}}
    dataset = CropDataset(data, crops, seed=1, aug_prob=1.0)
    for epoch in range(10):
        out = dataset[(0, epoch)]["crops"]
        assert torch.all(out["global"][:, :, 1] == CLEAN) and torch.all(out["local"][:, :, 1] == COPY)
    with pytest.raises(ConfigError, match=r"data.crops.local.aug_prob must be in \[0, 1\]"):
        CropDataset(data, {"local": {"count": 1, "frames": 10, "aug_prob": 1.5}})


def test_default_crops_follow_the_original_stream(tmp_path):
    """Without the new options each item is drawn exactly as before: per group, copies then starts."""
    data = write_data_dir(tmp_path / "d", [150])
    dataset = CropDataset(data, CROPS, seed=5, aug_prob=0.5)
    for epoch in range(5):
        rng = np.random.default_rng([5, epoch, 0])
        out = dataset[(0, epoch)]["crops"]
        for name, count, frames in (("global", 2, 30), ("local", 4, 10)):
            use_copy = rng.random(count) < 0.5
            picks = np.where(use_copy, rng.integers(1, 2, size=count), 0)
            for k, pick in enumerate(picks):
                start = int(rng.integers(0, 150 - frames + 1))
                assert out[name][k, 0, 0] == start and out[name][k, 0, 1] == (COPY if pick else CLEAN)


def test_loader_workers_are_capped_to_the_process_share_of_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert loader_workers(8) == 2 and loader_workers(8, world_size=2) == 1 and loader_workers(8, world_size=4) == 1
    assert loader_workers(1) == 1 and loader_workers(0, world_size=2) == 0
