"""Staged fine-tuning: each stage a complete Trainer run in its own sub-directory, then the exported classifier."""

import copy
import logging
import os

from pyspk.config import ConfigError, check_section, load_yaml, save_config
from pyspk.device import DistInfo
from pyspk.models import build_model, read_backbone_entry, save_backbones
from pyspk.models.freeze import TRAIN_WHAT
from pyspk.train import checkpoint as ckpt
from pyspk.train.trainer import Trainer
from pyspk.transfer.objective import (
    BACKBONE_NAME,
    EVAL_SECTION,
    FINETUNE_SECTION,
    HEAD_DEFAULTS,
    HEAD_SECTION,
    STAGE_SECTION,
    FinetuneObjective,
    stage_result,
)

log = logging.getLogger(__name__)



def check_finetune_config(config):
    """Validate the ``finetune`` section and the one-crop data section (ConfigError)."""
    cfg = config.get("finetune")
    if not isinstance(cfg, dict):
        raise ConfigError("config needs a 'finetune' section")
    check_section(cfg, FINETUNE_SECTION, "finetune")
    if not cfg.get("init_model"):
        raise ConfigError("finetune.init_model: the backbone file to fine-tune is not set (--init-model)")
    check_section(cfg.get("head") or {}, HEAD_SECTION, "finetune.head")
    check_section(cfg.get("eval") or {}, EVAL_SECTION, "finetune.eval")
    stages = cfg.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ConfigError("finetune.stages must be a non-empty list of stages")
    names = []
    for i, stage in enumerate(stages, 1):
        if not isinstance(stage, dict):
            raise ConfigError(f"finetune.stages[{i}] must be a mapping")
        check_section(stage, STAGE_SECTION, f"finetune.stages[{i}]")
        if stage.get("train") not in TRAIN_WHAT:
            raise ConfigError(f"finetune.stages[{i}].train must be one of {', '.join(TRAIN_WHAT)}, "
                              f"got {stage.get('train')!r}")
        if not isinstance(stage.get("epochs"), int) or stage["epochs"] < 1:
            raise ConfigError(f"finetune.stages[{i}].epochs must be a positive integer")
        names.append(str(stage.get("name", stage["train"])))
    if len(set(names)) != len(names):
        raise ConfigError(f"finetune.stages need distinct names, got {names}")
    for name in ("data", "optim", "train"):
        if not isinstance(config.get(name), dict):
            raise ConfigError(f"config needs a '{name}' section")
    crops = config["data"].get("crops")
    if not isinstance(crops, dict) or len(crops) != 1:
        raise ConfigError("fine-tuning needs exactly one data.crops group, e.g. {chunk: {count: 1, frames: 200}}")


def with_crop_options(config, chunk_frames=None, augment=None):
    """``config`` with the training chunk length set and, when ``augment`` is False, augmentation off.

    ``finetune.chunk_frames`` and ``finetune.augment`` (steps/finetune.sh's --chunk-frames
    and --augment) override the data section this way for every stage.
    """
    config = copy.deepcopy(config)
    data = config["data"]
    if chunk_frames is not None:
        if chunk_frames < 1:
            raise ConfigError(f"chunk length must be a positive number of frames, got {chunk_frames}")
        for spec in data["crops"].values():
            spec["frames"] = int(chunk_frames)
    if augment is False:
        data["aug_prob"] = 0.0
        for name in ("specaug", "channel"):
            data[name] = {**(data.get(name) or {}), "prob": 0.0}
    return config


def stage_dirs(exp_dir, config):
    return [os.path.join(exp_dir, f"stage{i}_{stage.get('name', stage['train'])}")
            for i, stage in enumerate(config["finetune"]["stages"], 1)]


def build_stage_config(config, index, model_cfg, init):
    """The Trainer config of stage ``index`` (0-based): its epochs, learning rate and initialisation."""
    cfg = config["finetune"]
    stage = dict(cfg["stages"][index])
    stage.setdefault("name", stage["train"])
    optim = copy.deepcopy(config["optim"])
    for key in ("lr", "weight_decay"):
        if key in stage:
            optim[key] = stage[key]
    return {
        "seed": config.get("seed", 0),
        "data": copy.deepcopy(config["data"]),
        "model": copy.deepcopy(model_cfg),
        "optim": optim,
        "train": {**copy.deepcopy(config["train"]), "epochs": stage["epochs"]},
        "finetune": {**{k: copy.deepcopy(v) for k, v in cfg.items() if k != "stages"}, "stage": stage,
                     "init": init},
    }


def steps_done(stage_dir):
    found = ckpt.list_checkpoints(os.path.join(stage_dir, "checkpoints"))
    return found[-1][0] if found else 0


def run_finetune(config, data_dir, exp_dir, device="auto", max_steps=None):
    """Run all stages into ``exp_dir`` and export ``final.pt``; resumable.

    Stage 1 starts from ``finetune.init_model`` (backbone ``finetune.init_backbone``).
    ``max_steps`` counts optimiser steps over all stages; when it stops the run
    early the function returns False (re-run to continue). Returns True when
    ``final.pt`` is complete.
    """
    check_finetune_config(config)
    done_path = os.path.join(exp_dir, ".done")
    if os.path.isfile(done_path):
        log.info("%s exists: fine-tuning already finished, nothing to do", done_path)
        return True
    cfg = config["finetune"]
    first_init = {"file": os.path.abspath(cfg["init_model"]), "backbone": cfg.get("init_backbone"),
                  "random_init": bool(cfg.get("random_init"))}
    model_cfg = read_backbone_entry(first_init["file"], first_init["backbone"])["config"]
    dirs = stage_dirs(exp_dir, config)
    is_main = DistInfo().is_main
    if is_main:
        save_run_config(config, exp_dir, dirs)
    trained_config = with_crop_options(config, cfg.get("chunk_frames"), cfg.get("augment"))
    steps_before = 0
    for index, stage_dir in enumerate(dirs):
        init = first_init if index == 0 else {"stage_dir": os.path.abspath(dirs[index - 1])}
        remaining = None if max_steps is None else max_steps - steps_before
        if remaining is not None and remaining <= 0:
            return False
        stage_config = build_stage_config(trained_config, index, model_cfg, init)
        Trainer(FinetuneObjective(data_dir), stage_config, data_dir, stage_dir, device=device).run(remaining)
        if not os.path.isfile(os.path.join(stage_dir, ".done")):
            return False
        steps_before += steps_done(stage_dir)
    if is_main:
        export_classifier(os.path.join(exp_dir, "final.pt"), dirs[-1], config)
        with open(done_path, "w") as f:
            f.write("done\n")
        log.info("fine-tuning finished: %s", os.path.join(exp_dir, "final.pt"))
    return True


def save_run_config(config, exp_dir, dirs):
    """Write ``<exp_dir>/config.yaml``; refuse a different config once stages have checkpoints."""
    config_path = os.path.join(exp_dir, "config.yaml")
    if os.path.isfile(config_path) and load_yaml(config_path) != config and any(steps_done(d) for d in dirs):
        raise ConfigError(f"{config_path}: differs from this run's config and checkpoints exist; "
                          "use a new experiment dir or the same config to resume")
    os.makedirs(exp_dir, exist_ok=True)
    save_config(config, config_path)


def export_classifier(path, last_stage_dir, config):
    """Write the classifier file from the last stage's final checkpoint."""
    state = stage_result(last_stage_dir)
    entry = state["backbones"][BACKBONE_NAME]
    backbone = build_model(entry["config"])
    backbone.load_state_dict(entry["state_dict"])
    head = {**HEAD_DEFAULTS, **(config["finetune"].get("head") or {})}
    classifier = {"classes": list(state["objective"]["classes"]), "head": state["objective"]["head"],
                  "head_config": head}
    save_backbones(path, {BACKBONE_NAME: backbone}, BACKBONE_NAME, {"classifier": classifier, "config": config})
