"""Backbones: registry, shapes, CMN, backbone-file round trip and errors."""

import pytest
import torch
import yaml

from pyspk.bin import init_model
from pyspk.config import ConfigError
from pyspk.models import (
    BackboneFileError,
    build_model,
    list_backbones,
    load_backbone,
    read_backbone_file,
    save_backbones,
)

# Small sizes keep the tests fast; the structure is the same as at full size.
SMALL = {
    "ecapa": {"name": "ecapa", "feat_dim": 40, "embed_dim": 16, "channels": 32, "scale": 4, "se_channels": 8,
              "attention_channels": 8, "mfa_channels": 48},
    "resnet34": {"name": "resnet34", "feat_dim": 40, "embed_dim": 16, "base_width": 4},
    "resnet": {"name": "resnet", "feat_dim": 40, "embed_dim": 16, "blocks": [1, 2], "base_width": 4},
    "resnet_thin": {"name": "resnet_thin", "feat_dim": 40, "embed_dim": 16},
    "tdnn": {"name": "tdnn", "feat_dim": 40, "embed_dim": 16, "channels": 32, "stats_channels": 48},
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_shapes_for_variable_lengths(name):
    torch.manual_seed(0)
    model = build_model(SMALL[name]).eval()
    assert model.embed_dim == 16
    assert model.config["name"] == name
    for frames in (15, 37, 120):
        out = model(torch.randn(3, frames, 40))
        assert out.shape == (3, 16)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_training_step_updates_all_parameters(name):
    torch.manual_seed(0)
    model = build_model(SMALL[name]).train()
    model(torch.randn(4, 50, 40)).pow(2).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_full_size_defaults():
    ecapa = build_model({"name": "ecapa"})
    assert ecapa.embed_dim == 192 and ecapa.config["channels"] == 512 and ecapa.config["feat_dim"] == 80
    n_params = sum(p.numel() for p in ecapa.parameters())
    assert 6.0e6 < n_params < 6.4e6  # the paper's 6.2M for C=512
    resnet = build_model({"name": "resnet34", "embed_dim": 192})
    assert resnet.config["blocks"] == [3, 4, 6, 3] and resnet.config["base_width"] == 32
    assert resnet(torch.randn(1, 40, 80)).shape == (1, 192)
    tdnn = build_model({"name": "tdnn"})
    assert tdnn.embed_dim == 512 and tdnn.min_frames == 15


@pytest.mark.parametrize("name", ["ecapa", "resnet_thin", "tdnn"])
def test_cmn_makes_output_invariant_to_constant_offset(name):
    torch.manual_seed(0)
    model = build_model(SMALL[name]).eval()
    feats = torch.randn(2, 60, 40)
    offset = 3.0 * torch.randn(1, 1, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(feats + offset), model(feats), atol=1e-4, rtol=1e-4)
        no_cmn = build_model({**SMALL[name], "cmn": False}).eval()
        no_cmn.load_state_dict(model.state_dict())
        assert not torch.allclose(no_cmn(feats + offset), no_cmn(feats), atol=1e-3)


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    teacher = build_model(SMALL["ecapa"])
    student = build_model(SMALL["resnet_thin"])
    teacher(torch.randn(4, 30, 40))  # move BatchNorm running stats away from their initial values
    teacher.eval(), student.eval()
    path = tmp_path / "ckpt.pt"
    save_backbones(path, {"teacher": teacher, "student": student}, default="teacher",
                   extra={"step": 7, "optimizer": {"lr": torch.tensor(0.1)}})
    content = torch.load(path, map_location="cpu", weights_only=True)
    assert content["default_backbone"] == "teacher" and content["step"] == 7
    assert content["backbones"]["student"]["config"]["name"] == "resnet_thin"
    assert list_backbones(path) == ["teacher", "student"]
    feats = torch.randn(2, 50, 40)
    with torch.no_grad():
        assert torch.equal(load_backbone(path)(feats), teacher(feats))
        loaded_student = load_backbone(path, "student")
        assert not loaded_student.training
        assert torch.equal(loaded_student(feats), student(feats))


def test_saving_a_ddp_style_wrapper_stores_the_bare_model(tmp_path):
    model = build_model(SMALL["tdnn"])
    wrapper = torch.nn.Module()
    wrapper.module = model
    save_backbones(tmp_path / "m.pt", {"model": wrapper}, default="model")
    state = read_backbone_file(tmp_path / "m.pt")["backbones"]["model"]["state_dict"]
    assert set(state) == set(model.state_dict())


def test_backbone_file_errors(tmp_path):
    model = build_model(SMALL["tdnn"])
    path = tmp_path / "m.pt"
    save_backbones(path, {"model": model}, default="model")
    with pytest.raises(BackboneFileError, match="no backbone 'teacher'; available: model"):
        load_backbone(path, "teacher")
    with pytest.raises(BackboneFileError, match="no such backbone file"):
        load_backbone(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneFileError, match="cannot read"):
        load_backbone(tmp_path / "junk.pt")
    torch.save({"model": model.state_dict()}, tmp_path / "plain.pt")
    with pytest.raises(BackboneFileError, match="not a backbone file"):
        load_backbone(tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="default backbone"):
        save_backbones(path, {"model": model}, default="teacher")
    with pytest.raises(ValueError, match="reserved"):
        save_backbones(path, {"model": model}, default="model", extra={"backbones": {}})


@pytest.mark.parametrize("cfg, message", [
    ({"name": "transformer"}, "model.name must be one of"),
    ({"feat_dim": 80}, "model.name must be one of"),
    ({"name": "ecapa", "chanels": 512}, "unknown key.*chanels"),
    ({"name": "ecapa", "channels": "512x"}, r"channels must be a positive integer"),
    ({"name": "ecapa", "channels": 100, "scale": 8}, "divisible by scale"),
    ({"name": "resnet", "blocks": [3, 0]}, "list of positive integers"),
    ({"name": "tdnn", "cmn": "yes"}, "cmn must be true or false"),
])
def test_bad_configs_raise_config_error(cfg, message):
    with pytest.raises(ConfigError, match=message):
        build_model(cfg)


def test_tdnn_rejects_too_short_input():
    model = build_model(SMALL["tdnn"])
    with pytest.raises(ValueError, match="at least 15 frames"):
        model(torch.randn(1, 10, 40))
    with pytest.raises(ValueError, match="expects input"):
        model(torch.randn(1, 30, 80))


def test_init_model_writes_a_seeded_backbone_file(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"model": dict(SMALL["ecapa"]), "optim": {"lr": 0.1}}))
    init_model.main(["--config", str(config), "--seed", "3", "model.embed_dim=24", str(tmp_path / "a.pt")])
    init_model.main(["--config", str(config), "--seed", "3", "model.embed_dim=24", str(tmp_path / "b.pt")])
    a, b = load_backbone(tmp_path / "a.pt"), load_backbone(tmp_path / "b.pt")
    assert a.embed_dim == 24 and list_backbones(tmp_path / "a.pt") == ["model"]
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    config.write_text(yaml.safe_dump({"optim": {"lr": 0.1}}))
    with pytest.raises(SystemExit) as exit_info:
        init_model.main(["--config", str(config), str(tmp_path / "c.pt")])
    assert exit_info.value.code == 1
