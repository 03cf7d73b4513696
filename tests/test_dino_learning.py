"""Mechanisms that make DINO learn: run-length schedules, clipping, regularisers, collapse monitor,
contrastive warm-up, starting from another model, checkpoint averaging. No test looks at an EER."""

import math
import os

import pytest
import torch
from conftest import ROOT

from pyspk.bin import average_checkpoints
from pyspk.config import ConfigError, load_config
from pyspk.models import build_model, load_backbone, read_backbone_file, save_backbones
from pyspk.ssl.dino import CollapseMonitor, DINOObjective, cross_crop_cosine_loss, diversity_loss, redundancy_loss
from pyspk.train.checkpoint import average_backbones
from pyspk.train.optim import clip_gradients
from pyspk.train.schedules import build_ema_momentum, build_schedule, ema_lag

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = os.path.join(ROOT, "conf", "dino_tiny.yaml")
MODEL = {"name": "resnet_thin", "feat_dim": 40, "embed_dim": 32, "blocks": [1, 1], "base_width": 4}


def tiny_config(**dino):
    config = load_config(TINY, ["model.feat_dim=40"])
    config["dino"].update(dino)
    return config


def build_objective(config, steps_per_epoch=4, total=40):
    objective = DINOObjective()
    objective.build(config, steps_per_epoch, total, torch.device("cpu"))
    return objective


def crops_batch(batch=6, n_global=2, n_local=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"crops": {"global": torch.randn(batch, n_global, 60, 40, generator=g),
                      "local": torch.randn(batch, n_local, 40, 40, generator=g)}}


# -- schedules that scale with the run ------------------------------------------------

@pytest.mark.parametrize("total", [40, 4000])
def test_warmup_and_freeze_as_fraction_of_the_run(total):
    lr = build_schedule({"base": 1.0, "final": 0.0, "warmup_fraction": 0.25}, 3, total, "lr")
    warmup = total // 4
    assert lr(0) == 0.0 and lr(warmup) == pytest.approx(1.0) and lr(total - 1) == pytest.approx(0.0)
    assert lr(warmup - 1) < 1.0
    objective = build_objective(tiny_config(freeze_last_layer_fraction=0.05), total=total)
    assert objective.freeze_last_layer_steps == round(0.05 * total)


def test_first_and_last_step_of_teacher_schedules():
    objective = build_objective(tiny_config(teacher_temp=0.04, momentum={"base": 0.996, "final": 1.0}))
    assert objective.teacher_temp(0) == objective.teacher_temp(39) == 0.04
    assert objective.momentum(0) == pytest.approx(0.996) and objective.momentum(39) == pytest.approx(1.0)


def test_ema_lag_of_constant_and_reference_momentum():
    lag, init_share = ema_lag([0.99] * 20000)
    assert lag == pytest.approx(99.0, rel=1e-6) and init_share < 1e-80  # m / (1 - m) steps
    assert ema_lag([0.0] * 10) == (0.0, 0.0)  # the teacher is the last student
    reference = build_schedule({"base": 0.996, "final": 1.0}, 1000, 125000, "m")  # DINO: 100 epochs
    lag, init_share = ema_lag(reference.values)
    assert 0.08 < lag / 125000 < 0.13 and init_share < 1e-50
    short = build_schedule({"base": 0.996, "final": 1.0}, 100, 500, "m")  # the same over 500 steps
    lag, init_share = ema_lag(short.values)
    assert lag / 500 > 0.6 and init_share == pytest.approx(math.exp(-0.004 * 499 / 2), rel=0.01)


@pytest.mark.parametrize("total", [500, 50000])
def test_momentum_from_lag_fraction_keeps_the_share_of_the_run(total):
    momentum = build_ema_momentum({"lag_fraction": 0.1}, 100, total, "dino.momentum")
    assert momentum(0) == momentum(total - 1) == pytest.approx(0.1 * total / (0.1 * total + 1))
    lag, init_share = ema_lag(momentum.values)
    assert lag / total == pytest.approx(0.1, abs=0.002) and init_share < 1e-4
    assert build_objective(tiny_config(momentum={"lag_fraction": 0.1}), total=total).momentum(0) == momentum(0)


def test_momentum_too_slow_for_the_run_is_logged(caplog):
    with caplog.at_level("INFO"):
        build_ema_momentum({"base": 0.996, "final": 1.0}, 100, 500, "dino.momentum")
    assert "lags its student by 322 of 500 steps" in caplog.text
    assert "37 % of its random initial weights" in caplog.text and "lag_fraction" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        build_ema_momentum({"lag_fraction": 0.1}, 100, 500, "dino.momentum")
    assert not caplog.text


@pytest.mark.parametrize("bad", [{"lag_fraction": 0}, {"lag_fraction": 1.5}, {"lag_fraction": "x"},
                                 {"lag_fraction": 0.1, "base": 0.99}])
def test_bad_lag_fraction_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=r"dino\.momentum"):
        build_ema_momentum(bad, 100, 500, "dino.momentum")


# -- clipping -------------------------------------------------------------------------

def test_per_parameter_and_global_clipping():
    def params():
        a, b = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(3))
        a.grad, b.grad = torch.full((4,), 5.0), torch.tensor([0.3, 0.0, 0.4])  # norms 10 and 0.5
        return a, b

    a, b = params()
    total = clip_gradients([a, b], 1.0, "per_param")
    assert float(total) == pytest.approx(math.hypot(10.0, 0.5), rel=1e-5)
    assert float(a.grad.norm()) == pytest.approx(1.0, rel=1e-4) and float(b.grad.norm()) == pytest.approx(0.5)
    a, b = params()
    clip_gradients([a, b], 1.0, "global")
    assert float(torch.cat([a.grad, b.grad]).norm()) == pytest.approx(1.0, rel=1e-4)
    assert float(b.grad.norm()) < 0.05  # one scale for all: the small gradient shrinks too
    a, b = params()
    clip_gradients([a, b], 0.0, "per_param")  # norm only
    assert float(a.grad.norm()) == pytest.approx(10.0)


# -- regularisers ---------------------------------------------------------------------

def test_diversity_term_spreads_narrow_dimensions_only():
    narrow = (0.1 * torch.randn(64, 8, dtype=torch.float64)).requires_grad_()
    loss = diversity_loss(narrow)
    loss.backward()
    assert loss.item() > 0.5
    stepped = narrow - 1.0 * narrow.grad
    assert (stepped.std(0) > narrow.std(0)).all()  # descending the term widens every dimension
    wide = (3.0 * torch.randn(64, 8, dtype=torch.float64)).requires_grad_()
    diversity_loss(wide).backward()
    assert diversity_loss(wide).item() == 0.0 and torch.count_nonzero(wide.grad) == 0


def test_redundancy_term_penalises_correlated_dimensions_and_gradchecks():
    x = torch.randn(200, 4, dtype=torch.float64)
    duplicated = torch.cat([x[:, :2], x[:, :2]], 1)
    assert redundancy_loss(duplicated).item() > 10 * redundancy_loss(x).item()
    decorrelated = torch.linalg.qr(x - x.mean(0))[0]  # orthonormal centred columns: no covariance
    assert redundancy_loss(decorrelated).item() == pytest.approx(0.0, abs=1e-12)
    small = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(redundancy_loss, (small,))


def test_cosine_term_is_zero_for_equal_crops_and_gradchecks():
    utterances = torch.randn(5, 6, dtype=torch.float64)
    teacher, student = utterances.repeat(2, 1), utterances.repeat(4, 1)  # every crop of an utterance alike
    assert cross_crop_cosine_loss(student, teacher, 2).item() == pytest.approx(0.0, abs=1e-12)
    student = torch.randn(4 * 5, 6, dtype=torch.float64, requires_grad=True)
    assert cross_crop_cosine_loss(student, teacher, 2).item() > 0.5
    assert torch.autograd.gradcheck(lambda s: cross_crop_cosine_loss(s, teacher, 2), (student,))


def test_regularisers_and_warmup_add_to_the_loss_and_reach_the_backbone():
    torch.manual_seed(0)
    config = tiny_config(regularisers={"diversity": 1.0, "redundancy": 0.04, "cosine": 1.0},
                         contrastive={"weight": 1.0, "stop": {"window_steps": 100, "max_epochs": 0.5}})
    objective = build_objective(config)
    model = objective.trainable()
    loss, stats = objective.compute_loss(model, crops_batch(), 0)
    assert stats["regulariser"] > 0 and stats["contrastive"] > 0
    parts = ("teacher_entropy", "kl", "regulariser", "contrastive")
    assert loss.item() == pytest.approx(sum(float(stats[name]) for name in parts), rel=1e-4)
    assert {"student_entropy", "emb_std"} <= set(stats)
    loss.backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)
    objective.after_step(0)
    # Half an epoch = 2 steps: the warm-up stops; from then on the term is gone and the state is checkpointed.
    for step in range(1, 4):
        _, stats = objective.compute_loss(model, crops_batch(seed=step), step)
        objective.after_step(step)
    assert objective.stop.stopped_step is not None and stats["contrastive"] == 0
    assert objective.state_dict()["contrastive_stop"]["stopped_step"] == objective.stop.stopped_step


def test_warmup_through_a_projection_head():
    torch.manual_seed(0)
    head = {"hidden_dim": 16, "out_dim": 8}
    config = tiny_config(contrastive={"weight": 1.0, "head": head})
    objective = build_objective(config)
    model = objective.trainable()
    loss, stats = objective.compute_loss(model, crops_batch(), 0)
    assert stats["contrastive"] > 0
    loss.backward()
    assert all(p.grad is not None for p in model.head.projection.parameters())
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)
    objective.after_backward(0)  # the DINO prototypes are frozen at first, through the wrapper
    assert all(p.grad is None for p in model.head.last_layer.parameters())
    objective.after_step(0)
    restored = build_objective(config)
    restored.load_state_dict(objective.state_dict())
    assert torch.equal(restored.student.head.projection.mlp[0].weight, model.head.projection.mlp[0].weight)
    with pytest.raises(ConfigError, match=r"dino\.contrastive\.head"):
        build_objective(tiny_config(contrastive={"weight": 1.0, "head": {"width": 8}}))


def test_switches_off_by_default():
    config = tiny_config()
    for key in ("regularisers", "contrastive"):  # on in conf/dino_tiny.yaml, off when a config omits them
        del config["dino"][key]
    objective = build_objective(config)
    _, stats = objective.compute_loss(objective.trainable(), crops_batch(), 0)
    assert stats["regulariser"] == 0 and stats["contrastive"] == 0


def test_unknown_regulariser_is_a_config_error():
    with pytest.raises(ConfigError, match=r"dino\.regularisers"):
        build_objective(tiny_config(regularisers={"variance": 1.0}))


# -- collapse monitor -----------------------------------------------------------------

def test_collapse_monitor_fires_on_uniform_targets_only():
    monitor = CollapseMonitor(256, entropy_share=0.9, patience_steps=5, check_every=1)
    uniform, spread = torch.tensor(math.log(256)), torch.tensor(0.5)
    warnings = [monitor.update(step, uniform, spread) for step in range(12)]
    assert [i for i, w in enumerate(warnings) if w] == [4, 9]  # after 5 and 10 collapsed steps
    assert "dino.teacher_temp" in warnings[4]
    assert monitor.update(12, torch.tensor(2.0), spread) is None  # sharp targets end the run
    assert all(monitor.update(13 + s, torch.tensor(2.0), spread) is None for s in range(10))
    shrunk = CollapseMonitor(256, patience_steps=3, check_every=1)
    assert [shrunk.update(s, torch.tensor(1.0), torch.tensor(0.01)) for s in range(3)][-1]


def test_collapse_monitor_warns_in_the_log_of_a_forced_collapse(caplog):
    # A constant input makes every crop identical: the centred teacher output is uniform.
    config = tiny_config(collapse={"entropy_share": 0.97, "patience_steps": 2, "check_every": 1})
    objective = build_objective(config)
    batch = {"crops": {"global": torch.ones(4, 2, 60, 40), "local": torch.ones(4, 2, 40, 40)}}
    with caplog.at_level("WARNING"):
        for step in range(3):
            objective.loss_fn.center.copy_(objective.teacher(  # centre = the teacher's output: no signal left
                [batch["crops"]["global"].flatten(0, 1)])[1].mean(0, keepdim=True))
            objective.compute_loss(objective.trainable(), batch, step)
    assert "possible collapse" in caplog.text


# -- starting from another model ------------------------------------------------------

def test_init_model_starts_student_and_teacher(tmp_path):
    torch.manual_seed(3)
    source = build_model(MODEL)
    path = str(tmp_path / "contrastive.pt")
    save_backbones(path, {"model": source}, "model")
    objective = build_objective(tiny_config(init_model=path))
    for net in (objective.student, objective.teacher):
        for a, b in zip(net.backbone.state_dict().values(), source.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    other = str(tmp_path / "other.pt")
    save_backbones(other, {"model": build_model({**MODEL, "embed_dim": 16})}, "model")
    with pytest.raises(ConfigError, match="init_model"):
        build_objective(tiny_config(init_model=other))


# -- checkpoint averaging -------------------------------------------------------------

def test_average_of_checkpoints_is_the_mean_of_the_weights(tmp_path):
    ckpt_dir = tmp_path / "exp" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    models = []
    for i, step in enumerate((10, 20, 30)):
        torch.manual_seed(i)
        models.append(build_model(MODEL))
        save_backbones(str(ckpt_dir / f"ckpt-e{i}-s{step}.pt"), {"teacher": models[-1], "student": models[-1]},
                       "teacher", {"step": step})
    out = str(tmp_path / "avg.pt")
    average_checkpoints.main(["--num", "2", str(tmp_path / "exp"), out])
    averaged = read_backbone_file(out)
    assert averaged["averaged_from"] == ["ckpt-e1-s20.pt", "ckpt-e2-s30.pt"]
    state = averaged["backbones"]["teacher"]["state_dict"]
    for key, value in models[1].state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(state[key], (value + models[2].state_dict()[key]) / 2)
    assert load_backbone(out)(torch.randn(1, 50, 40)).shape == (1, 32)
    with pytest.raises(SystemExit, match="3 checkpoint"):
        average_checkpoints.main(["--num", "4", str(tmp_path / "exp"), str(tmp_path / "x.pt")])


def test_averaging_refuses_different_backbones(tmp_path):
    a, b = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    save_backbones(a, {"m": build_model(MODEL)}, "m")
    save_backbones(b, {"m": build_model({**MODEL, "embed_dim": 16})}, "m")
    with pytest.raises(ValueError, match="other backbones"):
        average_backbones([a, b])
