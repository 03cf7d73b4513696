"""Contrastive SSL: NT-Xent against a hand computation, projection head, channel-invariant term, trainer, resume."""

import math
import os
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_script

from pyspk.bin import train as train_cli
from pyspk.config import ConfigError, load_config
from pyspk.models import list_backbones, load_backbone
from pyspk.ssl.contrastive import ContrastiveObjective
from pyspk.ssl.ntxent import ProjectionHead, nt_xent
from pyspk.train import checkpoint as ckpt
from pyspk.train.data import CropDataset, ResumableBatchSampler
from pyspk.train.synthetic import make_feats_data_dir
from pyspk.train.trainer import Trainer

DEMO = os.path.join(ROOT, "conf", "contrastive_demo.yaml")
# The demo config shrunk to a seconds-long run on 40-dim features.
TINY = ["model={name: resnet_thin, feat_dim: 40, embed_dim: 16, blocks: [1, 1], base_width: 4}",
        "data.batch_size=4", "data.num_workers=0", "data.crops.global.frames=40", "data.crops.local.count=1",
        "data.crops.local.frames=30", "contrastive.head.hidden_dim=32", "contrastive.head.out_dim=16",
        "train.epochs=2", "train.log_every=1", "train.ckpt_every_steps=3", "train.keep_checkpoints=2"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def feats_dir(tmp_path_factory):
    return make_feats_data_dir(str(tmp_path_factory.mktemp("feats")), n_spk=4, n_utt=4, min_frames=30,
                               max_frames=100, feat_dim=40, copies=("reverb",))


def tiny_config(*overrides):
    return load_config(DEMO, [*TINY, *overrides])


def test_nt_xent_matches_hand_computation():
    # 2 utterances x 2 views, crop-major rows: [u0v0, u1v0, u0v1, u1v1].
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [1.0, 1.0]])
    t = 0.5
    unit = z / z.norm(dim=1, keepdim=True)
    sim = unit @ unit.t() / t
    positive_of = {0: 2, 1: 3, 2: 0, 3: 1}
    expected = 0.0
    for i in range(4):
        others = [k for k in range(4) if k != i]
        expected += -(sim[i, positive_of[i]] - math.log(sum(math.exp(sim[i, k]) for k in others)))
    expected /= 4
    loss, accuracy = nt_xent(z, n_views=2, temperature=t)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # Accuracy: how often a row's most similar other row is its positive.
    nearest = [max((k for k in range(4) if k != i), key=lambda k: sim[i, k].item()) for i in range(4)]
    assert accuracy.item() == pytest.approx(sum(nearest[i] == positive_of[i] for i in range(4)) / 4)


def test_nt_xent_with_several_positives():
    torch.manual_seed(0)
    batch, views, t = 3, 3, 0.2
    z = torch.randn(views * batch, 5)
    unit = torch.nn.functional.normalize(z, dim=1)
    sim = unit @ unit.t() / t
    total = 0.0
    for i in range(views * batch):
        others = [k for k in range(views * batch) if k != i]
        positives = [k for k in others if k % batch == i % batch]
        log_denominator = torch.logsumexp(sim[i, others], 0)
        total += -sum(sim[i, p] - log_denominator for p in positives) / len(positives)
    loss, _ = nt_xent(z, n_views=views, temperature=t)
    assert loss.item() == pytest.approx(total.item() / (views * batch), rel=1e-5)
    # Scale invariance: cosine similarity.
    assert nt_xent(3.0 * z, views, t)[0].item() == pytest.approx(loss.item(), rel=1e-5)


def test_projection_head_shapes():
    head = ProjectionHead(16, hidden_dim=32, out_dim=8, nlayers=3, use_bn=True)
    assert head(torch.randn(5, 16)).shape == (5, 8)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules()) == 2


def build(config):
    objective = ContrastiveObjective()
    objective.build(config, 4, 8, torch.device("cpu"))
    return objective


def random_batch(config, seed=0):
    gen = torch.Generator().manual_seed(seed)
    crops = config["data"]["crops"]
    return {"crops": {name: torch.randn(config["data"]["batch_size"], c["count"], c["frames"], 40, generator=gen)
                      for name, c in crops.items()}}


def test_channel_invariant_term_is_optional_and_seeded():
    torch.manual_seed(0)
    on = build(tiny_config("contrastive.channel_invariant.weight=2.0"))
    batch = random_batch(tiny_config())
    loss, stats = on.compute_loss(on.trainable(), batch, 0)
    assert stats["channel_inv"] > 0
    assert loss.item() == pytest.approx((stats["nt_xent"] + 2.0 * stats["channel_inv"]).item(), rel=1e-5)
    first = batch["crops"]["global"][:, 0]
    assert torch.equal(on.perturb(first, 3), on.perturb(first, 3))
    assert not torch.equal(on.perturb(first, 3), on.perturb(first, 4))
    assert not torch.equal(on.perturb(first, 3), first)
    torch.manual_seed(0)
    off = build(tiny_config("contrastive.channel_invariant.weight=0"))
    loss, stats = off.compute_loss(off.trainable(), batch, 0)
    assert stats["channel_inv"] == 0 and loss.item() == pytest.approx(stats["nt_xent"].item())


def test_loss_falls(feats_dir):
    config = tiny_config("contrastive.channel_invariant.weight=0")
    torch.manual_seed(0)
    objective = build(config)
    model = objective.trainable()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    dataset = CropDataset(feats_dir, config["data"]["crops"], seed=0)
    sampler = ResumableBatchSampler(len(dataset), 8, seed=0)
    losses = []
    for epoch in range(5):
        sampler.set_epoch(epoch)
        for keys in sampler:
            items = [dataset[key] for key in keys]
            batch = {"crops": {n: torch.stack([it["crops"][n] for it in items]) for n in items[0]["crops"]}}
            loss, _ = objective.compute_loss(model, batch, epoch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.2


def test_trainer_resume_and_outputs(feats_dir, tmp_path):
    config = tiny_config("contrastive.channel_invariant.weight=1.0")  # its seeded channels must resume too
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    Trainer(ContrastiveObjective(), config, feats_dir, straight, device="cpu").run()
    assert Trainer(ContrastiveObjective(), config, feats_dir, resumed, device="cpu").run(max_steps=3) == 3
    Trainer(ContrastiveObjective(), config, feats_dir, resumed, device="cpu").run()
    for exp in (straight, resumed):
        assert os.path.isfile(os.path.join(exp, ".done"))
    assert list_backbones(os.path.join(straight, "final.pt")) == ["encoder"]
    a, b = (load_backbone(os.path.join(e, "final.pt")) for e in (straight, resumed))
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    heads = [ckpt.load_checkpoint(ckpt.find_latest(os.path.join(e, "checkpoints")))["objective"]["head"]
             for e in (straight, resumed)]
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    header = Path(straight, "metrics.tsv").read_text().splitlines()[0].split()
    assert {"loss", "nt_xent", "channel_inv", "pos_acc", "emb_std"} <= set(header)


def test_config_errors_and_script_usage(feats_dir, tmp_path, capsys):
    with pytest.raises(ConfigError, match="at least 2 crops"):
        build(tiny_config("data.crops={global: {count: 1, frames: 40}}"))
    with pytest.raises(ConfigError, match="unknown key"):
        build(tiny_config("contrastive.head.bogus=1"))
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["--config", DEMO, feats_dir, str(tmp_path / "e"), *TINY, "contrastive.temperature=0"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "contrastive.temperature must be > 0, got 0 (command line: contrastive.temperature=0" in err
    proc = run_script(["steps/train_contrastive.sh", "--config", DEMO, str(tmp_path / "nodata"), str(tmp_path / "e")],
                      check=False)
    assert proc.returncode == 1 and "no such file" in proc.stderr
    proc = run_script(["steps/train_contrastive.sh", str(tmp_path / "nodata")], check=False)
    assert proc.returncode == 1 and "e.g.:" in proc.stderr
