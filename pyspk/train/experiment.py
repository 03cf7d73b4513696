"""The experiment dir's rules: a finished training, a changed config, a resumable run.

Layout::

    config.yaml               merged config (a resumed run must use the same)
    checkpoints/ckpt-e<epoch>-s<step>.pt   backbone-file layout + trainer state
    log/train.log, metrics.tsv, loss.png, final.pt, .done
"""

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from pyspk.config import ConfigError, load_yaml
from pyspk.fileutil import PathLike
from pyspk.models import full_config
from pyspk.train import checkpoint as ckpt


def training_differences(saved: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """:func:`config_differences` of two training configs, each model section with its defaults filled
    in (a section that left keys to the defaults, or to the backbone it started from, trains the same)."""
    def comparable(cfg):
        model = cfg.get("model")
        if isinstance(model, dict) and "name" in model:
            with contextlib.suppress(ConfigError):
                return {**cfg, "model": full_config(model)}
        return cfg
    return config_differences(comparable(saved), comparable(config))


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``["key.sub: <old> -> <new>", ...]``: the keys whose values differ between two configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in new:
                out.append(f"{path}: {old[key]!r} -> (absent)")
            elif key not in old:
                out.append(f"{path}: (absent) -> {new[key]!r}")
            else:
                out += config_differences(old[key], new[key], path)
        return out
    return [] if old == new else [f"{prefix or 'config'}: {old!r} -> {new!r}"]


def check_finished_experiment(config: Mapping[str, Any], exp_dir: PathLike) -> bool:
    """True when ``exp_dir`` holds a finished training of this very config; ConfigError naming what
    differs when it was trained with another one (changed --config or overrides); False when it is
    not finished."""
    if not os.path.isfile(os.path.join(exp_dir, ".done")):
        return False
    saved_path = os.path.join(exp_dir, "config.yaml")
    if os.path.isfile(saved_path):
        differ = training_differences(load_yaml(saved_path), config)
        if differ:
            raise ConfigError(finished_message(exp_dir, differ))
    return True


def finished_message(exp_dir: PathLike, differ: list[str]) -> str:
    """Why a finished training is not re-run with a changed config, and what to do instead."""
    shown = "; ".join(differ[:6]) + (f"; and {len(differ) - 6} more" if len(differ) > 6 else "")
    return (f"{exp_dir} is a finished training of another config (was -> now: {shown}); nothing was changed. "
            f"Train this config into a new experiment dir, or retrain {exp_dir} in place with "
            f"steps/train.sh --retrain true (or remove it first)")


def check_resumable(config: Mapping[str, Any], exp_dir: PathLike) -> None:
    """ConfigError when ``exp_dir`` holds checkpoints of a training started with another config."""
    config_path = os.path.join(exp_dir, "config.yaml")
    if (os.path.isfile(config_path) and ckpt.find_latest(os.path.join(exp_dir, "checkpoints"))
            and training_differences(load_yaml(config_path), config)):
        raise ConfigError(f"{config_path}: differs from this run's config and checkpoints exist; "
                          "use a new experiment dir or the same config to resume")
