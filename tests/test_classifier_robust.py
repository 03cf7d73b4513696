"""Training on noisy pseudo-labels: sub-centre AAM, inter-top-k margin, class-balanced batches, two-step training."""

import csv
import glob
import math
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, kill_training_at_checkpoint
from test_classifier import TINY_MODEL, assert_same_tensors, tiny_config
from test_classifier import feats_dir as classifier_feats_dir

from pyspk.config import ConfigError, load_yaml, save_config
from pyspk.models import build_model, list_backbones, load_backbone, save_backbones
from pyspk.supervised.aam import AAMSoftmax
from pyspk.supervised.classifier import ClassifierObjective
from pyspk.supervised.two_step import TwoStep
from pyspk.train import checkpoint as ckpt
from pyspk.train.data import ClassBalancedBatchSampler, ResumableBatchSampler
from pyspk.train.schedules import build_schedule
from pyspk.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
feats_dir = classifier_feats_dir  # the same 4 x 4 utterances (fixture)

ROBUST = {"subcenters": 3, "inter_topk": {"k": 2, "margin": 0.1}, "balanced_classes": True,
          "two_step": {"freeze_epochs": 1, "lr_scale": 0.1}}


def plain_aam_logits(head, embeddings, labels, margin):
    """AAM-softmax logits as the head computed them before sub-centres and inter-top-k existed."""
    cosine = F.linear(F.normalize(embeddings.float(), dim=-1), F.normalize(head.weight.float(), dim=-1))
    target = cosine.gather(1, labels[:, None])
    sine = (1.0 - target * target).clamp_min(0.0).sqrt()
    with_margin = target * math.cos(margin) - sine * math.sin(margin)
    target_logit = torch.where(target > math.cos(math.pi - margin), with_margin, target - margin * math.sin(margin))
    logits = head.scale * cosine.scatter(1, labels[:, None], target_logit)
    return F.cross_entropy(logits, labels), logits


def batch(seed=0, n=6, dim=8, classes=5):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=generator), torch.randint(classes, (n,), generator=generator)


# -- sub-centres and the inter-top-k margin -------------------------------------------------

def test_one_subcenter_and_no_inter_topk_is_plain_aam_bit_for_bit():
    embeddings, labels = batch()
    torch.manual_seed(3)
    head = AAMSoftmax(8, 5, margin=0.2, scale=30.0, subcenters=1, inter_topk=(0, 0.0))
    torch.manual_seed(3)
    assert torch.equal(AAMSoftmax(8, 5, margin=0.2, scale=30.0).weight, head.weight)  # same draws as before
    assert head.weight.shape == (5, 8)  # the state_dict of older checkpoints still loads
    loss, logits, _ = head(embeddings, labels)
    want_loss, want_logits = plain_aam_logits(head, embeddings, labels, 0.2)
    assert torch.equal(logits, want_logits) and torch.equal(loss, want_loss)
    # k given but margin 0, or margin given but k 0: still plain AAM.
    for topk in ((3, 0.0), (0, 0.1)):
        other = AAMSoftmax(8, 5, 0.2, 30.0, inter_topk=topk)
        other.load_state_dict(head.state_dict())
        assert torch.equal(other(embeddings, labels)[1], want_logits)


def test_subcenters_take_the_best_of_each_class():
    embeddings, labels = batch(1)
    head = AAMSoftmax(8, 5, margin=0.2, scale=30.0, subcenters=3)
    assert head.weight.shape == (15, 8) and head.num_classes == 5
    weight = F.normalize(head.weight.detach(), dim=-1).view(5, 3, 8)
    per_subcenter = torch.einsum("bd,ckd->bck", F.normalize(embeddings, dim=-1), weight)
    loss, logits, cosines = head(embeddings, labels)
    assert torch.allclose(cosines, per_subcenter.amax(2), atol=1e-6)
    # The same as a one-centre head whose class vectors are each row's winning sub-centres.
    winner = per_subcenter.argmax(2)
    for i in range(len(labels)):
        single = AAMSoftmax(8, 5, margin=0.2, scale=30.0)
        single.weight.data = head.weight.detach().view(5, 3, 8)[torch.arange(5), winner[i]].clone()
        _, want, _ = single(embeddings[i:i + 1], labels[i:i + 1])
        assert torch.allclose(logits[i:i + 1], want, atol=1e-5)
    # Only the winning sub-centres receive gradient.
    loss.backward()
    touched = head.weight.grad.view(5, 3, 8).abs().sum(2) > 0
    winners = {(c, int(winner[i, c])) for i in range(len(labels)) for c in range(5)}
    assert touched.any() and {tuple(pair) for pair in torch.nonzero(touched).tolist()} <= winners


def test_inter_topk_raises_the_hardest_negatives_by_the_margin():
    embeddings, labels = batch(2, n=8, classes=6)
    k, extra, margin, scale = 2, 0.1, 0.2, 30.0
    head = AAMSoftmax(8, 6, margin=margin, scale=scale, inter_topk=(k, extra))
    # Row 0 almost on class 4's vector: its cosine above cos(extra) takes the continuation.
    labels[0] = 0
    embeddings[0] = head.weight.detach()[4] + 1e-3
    for now in (margin, margin / 2, 0.0):  # the inter-top-k margin follows the margin's warm-up
        _, logits, cosines = head(embeddings, labels, now)
        _, plain = plain_aam_logits(head, embeddings, labels, now)
        m = extra * now / margin
        for i, y in enumerate(labels.tolist()):
            negatives = [c for c in range(6) if c != y]
            hardest = sorted(negatives, key=lambda c: -cosines[i, c].item())[:k]
            for c in range(6):
                cos = cosines[i, c].item()
                if c in hardest and m > 0:
                    theta = math.acos(min(cos, 1.0))
                    want = math.cos(theta - m) if theta >= m else cos + 1.0 - math.cos(m)
                    assert logits[i, c].item() == pytest.approx(scale * want, abs=1e-4)
                    assert logits[i, c] > plain[i, c]
                else:
                    assert logits[i, c].item() == pytest.approx(plain[i, c].item(), abs=1e-6)
    assert cosines[0, 4] > math.cos(extra)


def test_head_option_errors(feats_dir):
    cases = [({"subcenters": 0}, "classifier.subcenters must be >= 1"),
             ({"inter_topk": {"k": 4, "margin": 0.06}}, r"classifier.inter_topk: k must be in \[0, 3\]"),
             ({"inter_topk": {"k": 2, "m": 0.06}}, r"unknown key\(s\) in 'classifier.inter_topk': m"),
             ({"inter_topk": 5}, "classifier.inter_topk must be a mapping"),
             ({"balanced_classes": "yes"}, "classifier.balanced_classes must be true or false"),
             ({"two_step": {"lr_scale": 0.1}}, "classifier.two_step needs freeze_epochs"),
             ({"two_step": {"freeze_epochs": 2}}, r"freeze_epochs \(2\) must be below train.epochs \(2\)"),
             ({"two_step": {"freeze_epochs": 1, "train": "all"}}, "two_step.train must be one of head, last"),
             ({"two_step": {"freeze_epochs": 1, "last_layers": ["pool_norm"]}},
              "classifier.two_step.last_layers: 'pool_norm' names no parameter")]
    for values, message in cases:
        objective = ClassifierObjective(feats_dir)
        with pytest.raises(ConfigError, match=message):
            config = tiny_config(classifier=values)
            objective.sampling_labels(config)
            objective.build(config, 4, 8, torch.device("cpu"))


# -- the class-balanced sampler ------------------------------------------------------------

def test_balanced_sampler_draws_classes_uniformly_and_resumes():
    labels = np.repeat([0, 1, 2, 3], [300, 60, 30, 10])  # 75 %, 15 %, 7.5 %, 2.5 %
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]
    sampler = ClassBalancedBatchSampler(labels, batch_size=16, seed=5)
    assert sampler.num_batches == ResumableBatchSampler(len(labels), 16).num_batches == 25
    drawn = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        drawn.extend(i for b in sampler for i, _ in b)
    counts = np.bincount(labels[drawn], minlength=4) / len(drawn)
    assert counts == pytest.approx([0.25] * 4, abs=0.03)
    # The rare class's utterances are all used (drawn with replacement, uniformly within the class).
    assert set(np.flatnonzero(labels == 3)) <= set(drawn)
    # Deterministic under (seed, epoch); a mid-epoch start continues the same stream.
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start_batch=7)
    assert list(sampler) == full[7:]
    fresh = ClassBalancedBatchSampler(labels, 16, seed=5)
    fresh.set_epoch(2)
    assert list(fresh) == full
    sampler.set_epoch(3)
    assert list(sampler) != full
    # Every draw has its own randomness key, so an utterance drawn twice gets other crops.
    keys = [key for b in full for key in b]
    assert len({k for _, k in keys}) == len(keys) and len({i for i, _ in keys}) < len(keys)
    assert {k for _, k in keys} == set(range(2 * 400, 3 * 400))  # epoch 2 of 25 x 16 draws
    # Two ranks split one epoch's draws between them.
    ranks = [ClassBalancedBatchSampler(labels, 8, seed=5, rank=r, world_size=2) for r in range(2)]
    both = ClassBalancedBatchSampler(labels, 8, seed=5, rank=0, world_size=1)
    together = both.epoch_items()
    assert ranks[0].epoch_items() == together[0::2] and ranks[1].epoch_items() == together[1::2]
    rank_keys = [key for r in ranks for b in r for key in b]
    assert sorted(rank_keys, key=lambda key: key[1]) == [key for b in both for key in b][:len(rank_keys)]


# -- two-step training in the trainer ---------------------------------------------------------

@pytest.fixture(scope="module")
def init_model(tmp_path_factory):
    torch.manual_seed(11)
    path = str(tmp_path_factory.mktemp("init") / "ssl.pt")
    save_backbones(path, {"teacher": build_model(TINY_MODEL)}, "teacher")
    return path


def robust_config(init_model):
    """The tiny config with everything on, from a fixed initial model; every checkpoint kept."""
    return tiny_config(classifier={**ROBUST, "init_model": init_model}, train={"keep_checkpoints": 10})


def backbone_tensors(path):
    """Parameters and buffers of the trained backbone in a checkpoint or backbone file."""
    return ckpt.load_checkpoint(path)["backbones"]


@pytest.fixture(scope="module")
def robust_run(feats_dir, init_model, tmp_path_factory):
    exp = str(tmp_path_factory.mktemp("robust"))
    Trainer(ClassifierObjective(feats_dir), robust_config(init_model), feats_dir, exp, device="cpu").run()
    return exp


def test_step_one_trains_only_the_embedding_layer_and_the_head(feats_dir, init_model, robust_run):
    initial = backbone_tensors(init_model)["teacher"]["state_dict"]
    checkpoints = dict(ckpt.list_checkpoints(os.path.join(robust_run, "checkpoints")))
    # 16 utterances / batch 4: 4 steps per epoch, step one is epoch 1 (steps 1-4). Checkpoints every 3 steps:
    # the one of step 3 lies inside step one, the last (8) at the end of step two.
    after_one = ckpt.load_checkpoint(checkpoints[3])
    after_two = ckpt.load_checkpoint(checkpoints[8])
    one = after_one["backbones"]["model"]["state_dict"]
    two = after_two["backbones"]["model"]["state_dict"]
    changed = {name for name, value in initial.items() if not torch.equal(one[name], value)}
    # ResNet's last layer is 'embedding' (a linear layer); the frozen trunk's BatchNorm statistics stay too.
    assert changed == {"embedding.weight", "embedding.bias"}
    assert any(name.endswith("running_mean") for name in initial)
    floats = {name for name, value in initial.items() if value.is_floating_point()}
    assert {name for name in floats if torch.equal(two[name], one[name])} == set()  # step two trains all
    assert not torch.equal(after_one["objective"]["head"]["weight"], after_two["objective"]["head"]["weight"])
    # Step two's learning rate is optim.lr's schedule x lr_scale.
    with open(os.path.join(robust_run, "metrics.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    schedule = build_schedule(robust_config(init_model)["optim"]["lr"], 4, 8, "optim.lr")
    assert [float(r["lr"]) for r in rows] == pytest.approx([schedule(s) * (1 if s < 4 else 0.1) for s in range(8)])
    # The exported backbone is a plain backbone; sub-centres live in the head only.
    final = os.path.join(robust_run, "final.pt")
    assert list_backbones(final) == ["model"]
    assert load_backbone(final)(torch.randn(2, 50, 40)).shape == (2, 32)
    assert after_two["objective"]["head"]["weight"].shape == (4 * 3, 32)


def test_ecapa_step_one_trains_embedding_and_its_batchnorm():
    ecapa = build_model({"name": "ecapa", "feat_dim": 24, "embed_dim": 16, "channels": 32,
                         "attention_channels": 8, "mfa_channels": 48})
    two_step = TwoStep(ecapa, {"freeze_epochs": 1}, 10, 3)
    frozen = {id(p) for p in two_step.frozen_parameters}
    trained = [n for n, p in ecapa.named_parameters() if id(p) not in frozen]
    assert trained and all(n.split(".")[0] in ("embedding", "embed_norm") for n in trained)
    assert "embed_norm" not in two_step.frozen_modules and "blocks" in two_step.frozen_modules
    assert two_step.lr_factor(9) == 1.0 and two_step.lr_factor(10) == 0.1
    # Modules swapped in place after the set-up (as SyncBatchNorm conversion does) are frozen too.
    ecapa.pool_norm = torch.nn.BatchNorm1d(ecapa.pool_norm.num_features)
    ecapa.train()
    two_step.set_modes(9)
    assert not ecapa.pool_norm.training and not ecapa.blocks.training and ecapa.embed_norm.training
    two_step.set_modes(10)
    assert ecapa.pool_norm.training and ecapa.blocks.training
    head_only = TwoStep(ecapa, {"freeze_epochs": 1, "train": "head"}, 10, 3)
    assert len(head_only.frozen_parameters) == len(list(ecapa.parameters()))
    assert head_only.frozen_modules == [""]


def test_killed_two_step_run_resumes_exactly_in_both_steps(feats_dir, init_model, robust_run, tmp_path):
    config_path = str(tmp_path / "robust.yaml")
    save_config(robust_config(init_model), config_path)
    exp = str(tmp_path / "exp")
    command = [sys.executable, "-m", "pyspk.bin.train", "--config", config_path, "--device", "cpu",
               feats_dir, exp, "train.ckpt_every_steps=1"]
    kill_training_at_checkpoint(command, exp, min_step=2)
    config = load_yaml(os.path.join(exp, "config.yaml"))
    # Stopped again inside step two (step 6), then run to the end: the same as the straight run.
    assert Trainer(ClassifierObjective(feats_dir), config, feats_dir, exp, device="cpu").run(max_steps=6) == 6
    assert Trainer(ClassifierObjective(feats_dir), config, feats_dir, exp, device="cpu").run() == 8
    assert_same_tensors(os.path.join(robust_run, "final.pt"), os.path.join(exp, "final.pt"))
    assert_same_tensors(ckpt.find_latest(os.path.join(robust_run, "checkpoints")),
                        ckpt.find_latest(os.path.join(exp, "checkpoints")))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "conf", "classifier*robust*.yaml"))
                                        + glob.glob(os.path.join(ROOT, "egs", "*", "v1", "conf",
                                                                 "classifier*robust*.yaml"))),
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_robust_configs_switch_everything_on_and_build(path, feats_dir):
    config = load_yaml(path)
    section = config["classifier"]
    assert section["subcenters"] > 1 and section["balanced_classes"] and section["two_step"]
    assert section["two_step"]["freeze_epochs"] < config["train"]["epochs"]
    config["model"] = dict(TINY_MODEL)
    objective = ClassifierObjective(feats_dir)
    assert objective.sampling_labels(config) is not None
    objective.build(config, 4, 4 * config["train"]["epochs"], torch.device("cpu"))
