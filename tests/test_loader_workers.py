"""The training input does not depend on the number of loader workers (issue 36): the data order and every random
draw of a crop are functions of (seed, epoch, item) alone, and the augmentation on the device of (seed, step, rank,
crop group); a worker draws nothing of its own. One worker against several: the same batches, the same weights."""

import os

import numpy as np
import pytest
import torch
from conftest import ROOT, make_wav_data_dir

from pyspk.config import load_config
from pyspk.models import read_backbone_file
from pyspk.ssl.dino import DINOObjective
from pyspk.train import data as train_data
from pyspk.train.data import build_loader
from pyspk.train.online_aug import build_frontend
from pyspk.train.synthetic import make_feats_data_dir
from pyspk.train.trainer import Trainer
from pyspk.train.wav_data import build_training_source

TINY = os.path.join(ROOT, "conf", "dino_tiny.yaml")
FBANK_CONF = os.path.join(ROOT, "conf", "fbank.conf")
SEED = 3

# 3 workers on a 2-core machine on purpose: torch's advice against it is no news here.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:This DataLoader will create")]


@pytest.fixture(autouse=True)
def uncapped_workers(monkeypatch):
    """As many loader workers as asked, on a machine of fewer cores too."""
    monkeypatch.setattr(train_data, "loader_workers", lambda asked, world_size=1: asked)


@pytest.fixture(scope="module")
def feats_dir(tmp_path_factory):
    return make_feats_data_dir(str(tmp_path_factory.mktemp("feats")), n_spk=4, n_utt=4, min_frames=30,
                               max_frames=120, feat_dim=40, copies=("reverb", "noise"))


def epoch_batches(dataset, data_cfg, workers, class_labels=None):
    """Every batch of epochs 0 and 1 (the second from its second batch on, as a resumed run reads it)."""
    loader, sampler = build_loader(dataset, {**data_cfg, "num_workers": workers}, SEED, class_labels=class_labels)
    out = []
    for epoch, start in ((0, 0), (1, 1)):
        sampler.set_epoch(epoch, start)
        out += list(loader)
    return out


def assert_same_batches(expected, got, what):
    assert len(expected) == len(got), what
    for step, (a, b) in enumerate(zip(expected, got, strict=True)):
        assert a.keys() == b.keys() and a["crops"].keys() == b["crops"].keys(), what
        assert torch.equal(a["index"], b["index"]), (what, step)
        for name in a["crops"]:
            assert torch.equal(a["crops"][name], b["crops"][name]), (what, step, name)


@pytest.mark.parametrize("non_overlapping,balanced", [(False, False), (True, False), (False, True)],
                         ids=["crops", "disjoint crops", "class-balanced"])
def test_feature_batches_do_not_depend_on_the_workers(feats_dir, non_overlapping, balanced):
    data_cfg = {**load_config(TINY, ["data.aug_prob=0.7"])["data"], "non_overlapping": non_overlapping}
    dataset = build_training_source(feats_dir, data_cfg, SEED)
    labels = np.arange(len(dataset)) % 3 if balanced else None
    one = epoch_batches(dataset, data_cfg, 0, labels)
    for workers in (1, 3):
        assert_same_batches(one, epoch_batches(dataset, data_cfg, workers, labels), f"{workers} workers")


def test_raw_audio_batches_and_online_augmentation_do_not_depend_on_the_workers(tmp_path):
    data_dir = make_wav_data_dir(str(tmp_path), n_spk=2, n_utt=4)
    data_cfg = load_config(TINY, ["data.source=wav", f"data.fbank_conf={FBANK_CONF}", "data.online_aug={prob: 0.7}",
                                  "data.batch_size=2"])["data"]
    dataset = build_training_source(data_dir, data_cfg, SEED)
    frontend = build_frontend(data_cfg, dataset, SEED, 0, torch.device("cpu"))
    features = {}
    for workers in (0, 2):
        batches = epoch_batches(dataset, data_cfg, workers)
        features[workers] = [{"index": b["index"], "crops": frontend(b["crops"], step)}
                             for step, b in enumerate(batches)]
        if workers:
            assert_same_batches(features[0], features[workers], f"{workers} workers")


def test_a_training_ends_with_the_same_weights_whatever_the_workers(feats_dir, tmp_path):
    states = []
    for workers in (0, 2):
        config = load_config(TINY, ["model.feat_dim=40", "train.ckpt_every_steps=0", "data.aug_prob=0.7",
                                    f"data.num_workers={workers}"])
        exp = str(tmp_path / f"workers{workers}")
        Trainer(DINOObjective(), config, feats_dir, exp, device="cpu").run()
        states.append(read_backbone_file(os.path.join(exp, "final.pt"))["backbones"])
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        a, b = states[0][name]["state_dict"], states[1][name]["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
