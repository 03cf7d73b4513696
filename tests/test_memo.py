"""MeMo: head routing, dynamic stop of the contrastive term, kill + resume, extraction; DDP for both new trainers."""

import math
import os
import shutil
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
from pyspk.ssl.memo import MeMoObjective, distillation_pairs, rounds_start
from pyspk.ssl.ntxent import ContrastiveStop
from pyspk.train import checkpoint as ckpt
from pyspk.train.synthetic import make_feats_data_dir
from pyspk.train.trainer import Trainer

DEMO = os.path.join(ROOT, "conf", "memo_demo.yaml")
CONTRASTIVE_DEMO = os.path.join(ROOT, "conf", "contrastive_demo.yaml")
# The demo config shrunk to a seconds-long run: two tiny architectures on 40-dim features.
TINY = ["model={feat_dim: 40, archs: {resnet: {name: resnet_thin, embed_dim: 16, blocks: [1, 1], base_width: 4}, "
        "ecapa: {name: ecapa, embed_dim: 16, channels: 16, mfa_channels: 48, se_channels: 8, attention_channels: 8}}}",
        "memo.head={out_dim: 64, hidden_dim: 32, bottleneck_dim: 16, nlayers: 2, use_bn: false, norm_last_layer: true}",
        "data.batch_size=4", "data.num_workers=0", "data.crops.global.frames=40", "data.crops.local.count=1",
        "data.crops.local.frames=30", "train.epochs=2", "train.log_every=1", "train.ckpt_every_steps=1",
        "train.keep_checkpoints=2", "memo.freeze_last_layer_fraction=0",
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
            + (stats["cross_resnet_to_ecapa"] + stats["cross_ecapa_to_resnet"]) / 2 + stats["regulariser"]
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
from pyspk.train.trainer import Trainer
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


# -- what makes the heads learn: collapse monitor per head, schedules, rounds start (issue 29) ---------

HEADS = [("self", "resnet"), ("self", "ecapa"), ("cross", "resnet"), ("cross", "ecapa")]


@pytest.mark.parametrize("mode,arch", HEADS)
def test_monitor_fires_on_a_forced_uniform_head_and_names_it(mode, arch, caplog):
    """A teacher head whose logits are all zero gives uniform targets (entropy ln K): its monitor alone warns."""
    objective = build(tiny_config("memo.head={out_dim: 64, hidden_dim: 32, bottleneck_dim: 16, nlayers: 2, "
                                  "use_bn: true, norm_last_layer: true}",
                                  "memo.collapse={entropy_share: 0.999, min_emb_std: 0.0, patience_steps: 3, "
                                  "check_every: 1}"))
    assert set(objective.monitors) == {f"{m}_{a}" for m, a in HEADS}
    head = objective.teacher.heads[mode][arch]
    with torch.no_grad():
        head.last_layer.weight_v.zero_()  # F.normalize of a zero row is zero: every logit 0
    caplog.set_level("WARNING", logger="pyspk.ssl.memo")
    for step in range(3):
        _, stats = objective.compute_loss(objective.trainable(), random_batch(step), step)
        assert stats[f"entropy_{mode}_{arch}"].item() == pytest.approx(math.log(64), rel=1e-5)
    warnings = [r.getMessage() for r in caplog.records if "possible collapse" in r.getMessage()]
    assert len(warnings) == 1 and f"of the {mode}_{arch} head" in warnings[0] and "memo.teacher_temp" in warnings[0]
    assert {name for name, m in objective.monitors.items() if m.warnings} == {f"{mode}_{arch}"}


def test_schedules_at_the_first_and_last_step():
    steps_per_epoch, total = 4, 8
    objective = build(tiny_config("memo.teacher_temp=0.04", "memo.momentum={lag_fraction: 0.25}",
                                  "memo.freeze_last_layer_fraction=0.25"), steps_per_epoch)
    lag = 0.25 * total
    for step in (0, total - 1):
        assert objective.teacher_temp(step) == pytest.approx(0.04)
        assert objective.momentum(step) == pytest.approx(lag / (lag + 1))
        assert objective.schedule_values(step) == {"teacher_temp": objective.teacher_temp(step),
                                                   "momentum": objective.momentum(step)}
    assert objective.freeze_last_layer_steps == 2  # the fraction wins over freeze_last_layer_epochs
    last_layers = [h.last_layer.weight_v for mode in ("self", "cross") for h in objective.student.heads[mode].values()]

    def grads_after_backward(step):
        objective.student.zero_grad(set_to_none=True)
        loss, _ = objective.compute_loss(objective.trainable(), random_batch(), step)
        loss.backward()
        objective.after_backward(step)
        return [p.grad for p in last_layers]

    assert all(g is None for g in grads_after_backward(0))  # first step: every head's last layer frozen
    assert all(g is None for g in grads_after_backward(1))
    assert all(g is not None for g in grads_after_backward(2))  # first step after the freeze
    assert all(g is not None for g in grads_after_backward(total - 1))  # last step


def test_regularisers_reach_each_architecture():
    objective = build(tiny_config("memo.regularisers={diversity: 1.0, redundancy: 0.04, cosine: 0.0}",
                                  "memo.self_weight=0", "memo.cross_weight=0", "memo.contrastive.weight=0"))
    loss, stats = objective.compute_loss(objective.trainable(), random_batch(), 0)
    assert stats["regulariser"] > 0 and loss.item() == pytest.approx(stats["regulariser"].item(), rel=1e-5)
    loss.backward()
    for arch in ("resnet", "ecapa"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0
                   for p in objective.student.backbones[arch].parameters()), arch
    with pytest.raises(ConfigError, match="unknown key"):
        build(tiny_config("memo.regularisers={variance: 1.0}"))


def test_rounds_start_is_checked():
    memo = load_config(DEMO)
    assert rounds_start(memo, "fused") == "teacher_resnet"  # the default (first) teacher's weights
    assert rounds_start(memo, "resnet") == "teacher_resnet"
    assert rounds_start(memo, "ecapa") == "teacher_ecapa"
    with pytest.raises(ConfigError, match="must be fused or one of the MeMo config's architectures"):
        rounds_start(memo, "tdnn")


@pytest.mark.parametrize("options,message", [
    (["--memo-start", "fused"], None),
    (["--memo-start", "resnet"], None),
    (["--memo-start", "tdnn"], "must be fused or one of the MeMo config's architectures (resnet, ecapa)"),
    # The thin-ResNet classifier cannot start from the ECAPA teacher: said before any work.
    (["--memo-start", "ecapa"], "model.name: 'resnet_thin' in conf/classifier_demo.yaml, 'ecapa' in the teacher_ecapa"),
    (["--memo-start", "a b"], "--memo-start must be fused or an architecture name"),
])
def test_pipeline_checks_the_memo_start_before_any_work(options, message, tmp_path):
    results = tmp_path / "results.txt"
    proc = subprocess.run(["steps/sv_pipeline.sh", "--check-only", "true", "--ssl", "memo", "--ssl-config",
                           "conf/memo_demo.yaml", "--classifier-config", "conf/classifier_demo.yaml",
                           "--results", str(results), *options],
                          check=False, cwd=ROOT, capture_output=True, text=True)
    if message is None:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert not results.exists()


def test_fused_embeddings_give_the_fused_cosine(tmp_path):
    """Concatenated mean-removed length-normalised embeddings: their cosine is the mean of the systems' cosines."""
    from pyspk.backend.embeddings import read_vector_scp, write_vector_scp
    from pyspk.bin.fuse_embeddings import fuse_embeddings, main

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 4)) + 3.0, rng.normal(size=(6, 8))
    fused = fuse_embeddings([a, b])
    assert np.allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-6)

    def cos(m):
        m = m - m.mean(0)
        m = m / np.linalg.norm(m, axis=1, keepdims=True)
        return m @ m.T

    assert np.allclose(fused @ fused.T, (cos(a) + cos(b)) / 2, atol=1e-5)
    keys = [f"u{i}" for i in range(6)]
    for name, m, order in (("a", a, keys), ("b", b, keys[::-1])):
        (tmp_path / name).mkdir()
        rows = m if order is keys else m[::-1]
        write_vector_scp(tmp_path / name / "xvector.ark", tmp_path / name / "xvector.scp", order, rows)
    main([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "out")])
    out_keys, out = read_vector_scp(tmp_path / "out" / "xvector.scp")
    assert out_keys == keys and np.allclose(out, fused, atol=1e-6)


def test_untrained_network_of_a_memo_config_is_its_first_architecture(tmp_path):
    """Stage 5's untrained baseline (pyspk.bin.init_model) from a MeMo config: its default teacher's architecture."""
    from pyspk.bin import init_model

    out = str(tmp_path / "untrained.pt")
    init_model.main(["--config", DEMO, "--seed", "0", out])
    assert load_backbone(out).config["name"] == "resnet_thin"


def test_upper_bound_starts_from_the_memo_start_teacher(tmp_path):
    """Stage 8 with --memo-start ecapa: the upper bound starts from teacher_ecapa, as the rounds (the
    classifier config was checked against that teacher), not from the file's default teacher."""
    from conftest import make_wav_data_dir

    from pyspk.config import save_config
    from pyspk.train.objectives import load_training_config

    root = tmp_path / "recipe"
    (root / "conf").mkdir(parents=True)
    for name in ("path.sh", "cmd.sh", "steps", "utils"):
        os.symlink(os.path.join(ROOT, name), root / name)
    for name in ("fbank.conf", "vad.conf", "classifier_tiny.yaml"):
        os.symlink(os.path.join(ROOT, "conf", name), root / "conf" / name)
    save_config(load_training_config(DEMO, [*TINY, "model.feat_dim=80", "train.epochs=1"]),
                str(root / "conf" / "memo_tiny.yaml"))
    for part, n_spk, seed in (("train", 4, 0), ("test", 2, 1)):
        shutil.copytree(make_wav_data_dir(str(tmp_path / part), n_spk=n_spk, n_utt=3, seed=seed, max_sec=1.5),
                        root / "data" / part)
    utts = sorted(line.split()[0] for line in (root / "data" / "test" / "utt2spk").read_text().splitlines())
    (root / "data" / "test" / "trials").write_text(f"{utts[0]} {utts[1]} target\n{utts[0]} {utts[3]} nontarget\n")
    pipeline = ["steps/sv_pipeline.sh", "--nj", "1", "--device", "cpu", "--augment", "false", "--ssl", "memo",
                "--ssl-config", "conf/memo_tiny.yaml", "--classifier-config", "conf/classifier_tiny.yaml",
                "--classifier-overrides", "model=from_init train.epochs=1", "--memo-start", "ecapa",
                "--calibrate", "false"]  # the two made-up dirs share utterance names, which calibration refuses
    run_script([*pipeline, "--stage", "2", "--stop-stage", "2"], cwd=root)
    run_script([sys.executable, "-m", "pyspk.bin.train", "--config", "conf/memo_tiny.yaml", "data/train",
                "exp/memo_tiny"], cwd=root)
    run_script([*pipeline, "--stage", "8", "--stop-stage", "8"], cwd=root)
    bound = load_config(str(root / "exp" / "supervised_upper_bound" / "config.yaml"))
    assert bound["classifier"]["init_backbone"] == "teacher_ecapa" and bound["model"]["name"] == "ecapa"
