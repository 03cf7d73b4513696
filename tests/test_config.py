"""Config files: a key given twice is an error naming the line; every shipped training config names its objective;
numbers written with an exponent are numbers."""

import glob
import os

import pytest
from conftest import ROOT

from pyspk.config import ConfigError, apply_overrides, load_yaml
from pyspk.train.objectives import load_training_config
from pyspk.train.registry import OBJECTIVES

SHIPPED = sorted(glob.glob(os.path.join(ROOT, "conf", "*.yaml"))
                 + glob.glob(os.path.join(ROOT, "egs", "**", "conf", "*.yaml"), recursive=True))


def test_key_given_twice_is_an_error_with_its_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 1\noptim:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=rf"{path}:4: invalid YAML: key 'lr' is given twice"):
        load_yaml(str(path))
    path.write_text("a: {b: 1}\nc: [{b: 1}, {b: 2}]\n")  # the same key in different mappings is fine
    assert load_yaml(str(path)) == {"a": {"b": 1}, "c": [{"b": 1}, {"b": 2}]}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: os.path.relpath(p, ROOT))
def test_shipped_configs_load_and_training_configs_name_their_objective(path):
    config = load_yaml(path)
    methods = [name for name in OBJECTIVES if name in config]
    if methods:  # a training config: its method section and its objective agree
        assert config.get("objective") == methods[0], path


def test_numbers_as_people_write_them(tmp_path):
    """YAML 1.1 (PyYAML) reads 1e-3 and 1.0e12 as text; a config file and an override read them as numbers."""
    path = tmp_path / "c.yaml"
    path.write_text("a: 1e-3\nb: 1.0e12\nc: -2E+5\nd: 5\ne: '1e-3'\nf: [1e3, .5]\ng: 1.0e-4\nh: 1_000\n")
    config = load_yaml(str(path))
    assert config == {"a": 0.001, "b": 1e12, "c": -2e5, "d": 5, "e": "1e-3", "f": [1000.0, 0.5], "g": 1e-4,
                      "h": 1000}
    assert [type(config[k]) for k in "abcdeh"] == [float, float, float, int, str, int]
    assert apply_overrides({"x": {"y": 0.1}}, ["x.y=1e-3"]) == {"x": {"y": 0.001}}
    overrides = ["optim.lr.base=1.0e12", "optim.weight_decay=5e-5", "dino.student_temp=1E-1"]
    config = load_training_config(os.path.join(ROOT, "conf", "dino_tiny.yaml"), overrides)
    assert (config["optim"]["lr"]["base"], config["optim"]["weight_decay"], config["dino"]["student_temp"]) == \
        (1e12, 5e-5, 0.1)
    with pytest.raises(ConfigError, match=r"optim\.clip_grad must be a number, got 'lots'"):
        load_training_config(os.path.join(ROOT, "conf", "dino_tiny.yaml"), ["optim.clip_grad=lots"])
