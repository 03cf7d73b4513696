"""Config files: a key given twice is an error naming the line; every shipped training config names its objective."""

import glob
import os

import pytest
from conftest import ROOT

from pyspk.config import ConfigError, load_yaml
from pyspk.train.objectives import OBJECTIVES

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
