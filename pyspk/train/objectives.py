"""A training config from file to trained model: loaded, checked, started from its backbone, trained.

The objectives themselves are listed in pyspk.train.registry. A config is loaded with
:func:`load_training_config` (overrides, keys and types checked against the schema, once, before
any work), takes the backbone it starts from with :func:`resolve_init_backbone` and is checked
without data by :func:`check_training_config` (the rules between keys: crops, schedules, the
model); :func:`train` runs it.
"""

import copy

from pyspk.config import ConfigError, check_tree, load_yaml
from pyspk.models import full_config, read_backbone_entry
from pyspk.ssl.dino import multi_crop_counts
from pyspk.ssl.memo import arch_configs
from pyspk.train.data import group_aug_probs, parse_crops
from pyspk.train.objective import Objective
from pyspk.train.online_aug import online_aug_options
from pyspk.train.registry import OBJECTIVES
from pyspk.train.schedules import build_schedule
from pyspk.train.schema import (
    FROM_INIT,
    apply_schema_overrides,
    check_training_rules,
    override_origin,
    training_schema,
)
from pyspk.train.trainer import Trainer
from pyspk.transfer.objective import FinetuneObjective
from pyspk.transfer.stages import check_finetune_config, run_finetune


def objective_of(config: dict, config_path: str) -> type[Objective]:
    """The Objective class that ``config['objective']`` names (ConfigError naming the file otherwise)."""
    name = config.get("objective")
    if name not in OBJECTIVES:
        raise ConfigError(f"{config_path}: 'objective' must be one of {', '.join(OBJECTIVES)}, got {name!r}")
    return OBJECTIVES[name]


# The objectives whose network starts from <section>.init_model, and so may take its model section from it.
INIT_SECTIONS = ("dino", "classifier")


def load_training_config(path: str, overrides: list[str] | None = None) -> dict:
    """The training config ``path`` with ``overrides`` applied, checked before any work.

    Overrides may set any key the objective's tree knows (pyspk.train.schema), in the YAML or
    not; every value, nested ones included, is type-checked with its key and origin named.
    """
    config = load_yaml(path)
    objective_of(config, path)
    config = apply_schema_overrides(config, overrides, training_schema)
    objective_of(config, path)
    check_tree(config, training_schema(config), origin=override_origin(path, overrides))
    return config


def check_training_config(config: dict, config_path: str) -> None:
    """The data-free checks of a training config loaded by :func:`load_training_config` (keys and types
    checked) after :func:`resolve_init_backbone`: the rules between keys, the model, the crops, the online
    augmentation and the schedules. The objective's build checks the rest."""
    objective = objective_of(config, config_path)
    if objective is FinetuneObjective:
        cfg = config.get("finetune")
        if isinstance(cfg, dict) and not cfg.get("init_model"):  # --check-only without --init-model
            cfg = {**cfg, "init_model": "(--init-model)"}
        check_finetune_config({**config, "finetune": cfg})
    else:
        check_training_rules(config)
        default_backbone_configs(config)  # the model section, checked as build_model checks it
    data = config["data"]
    parse_crops(data.get("crops"))
    group_aug_probs(data["crops"], float(data.get("aug_prob", 0.5)))
    online_aug_options(data.get("online_aug"))
    for key in ("lr", "weight_decay"):
        build_schedule(config["optim"].get(key, 0.0), 1, 1, f"optim.{key}")
    if objective.section in ("dino", "memo"):
        multi_crop_counts(data["crops"], objective.section)


def default_backbone_configs(config: dict) -> dict[str, dict]:
    """``{backbone name: full model config}`` a training of ``config`` exports, its default first."""
    objective = config.get("objective")
    if objective == "memo":
        archs = {name: full_config(cfg) for name, cfg in arch_configs(config["model"]).items()}
        return {f"{role}_{name}": cfg for role in ("teacher", "student") for name, cfg in archs.items()}
    if not isinstance(config.get("model"), dict):
        raise ConfigError("config needs a 'model' section")
    model = full_config(config["model"])
    names = {"dino": ("teacher", "student"), "contrastive": ("encoder",)}.get(objective, ("model",))
    return {name: model for name in names}


def init_backbone_of(config: dict, config_path: str) -> tuple[str, dict] | None:
    """``(description, backbone config)`` of the backbone file the objective's section starts from, if any."""
    section = objective_of(config, config_path).section
    cfg = config.get(section)
    if section not in INIT_SECTIONS or not isinstance(cfg, dict) or not cfg.get("init_model"):
        return None
    path, name = cfg["init_model"], cfg.get("init_backbone") if section == "classifier" else None
    entry = read_backbone_entry(path, name)
    return f"{path} (backbone {name})" if name else path, entry["config"]


def resolve_init_backbone(config: dict, config_path: str, backbone: tuple[str, dict] | None) -> None:
    """Take the model section from the backbone a training starts from (``backbone``: its description and
    config, e.g. from :func:`init_backbone_of`).

    The rule: a model section that is absent or ``model: from_init`` is the backbone's config; a model
    section that is given keeps what it says, and each key it gives must equal the backbone's (keys it
    leaves out are the backbone's, not the model's defaults). A conflict is a ConfigError naming both
    values. Without a backbone to start from the model section must be given.
    """
    model = config.get("model")
    if backbone is None:
        section = objective_of(config, config_path).section
        if model == FROM_INIT or (model is None and section in INIT_SECTIONS):
            raise ConfigError(f"{config_path}: model: {model or '(none)'} takes the backbone from "
                              f"{section}.init_model, which is not set (--init-model)")
        return
    source, backbone_config = backbone
    if isinstance(model, dict):
        differ = [f"model.{key}: {model[key]!r} in {config_path}, {backbone_config.get(key, '(absent)')!r} "
                  f"in {source}" for key in model if model[key] != backbone_config.get(key)]
        if differ:
            raise ConfigError(f"the model section differs from the backbone it starts from: {'; '.join(differ)}. "
                              f"Leave those keys out (or write model: {FROM_INIT}) to take the backbone it starts "
                              "from as it is, or start from a model of this architecture")
    elif model is not None and model != FROM_INIT:
        raise ConfigError(f"{config_path}: model must be a mapping or {FROM_INIT}, got {model!r}")
    config["model"] = copy.deepcopy(backbone_config)


def set_init_model(config: dict, config_path: str, init_model: str | None, init_backbone: str | None) -> None:
    """Write --init-model/--init-backbone into the objective's section (``<section>.init_model``)."""
    if init_backbone and not init_model:
        raise ConfigError("--init-backbone needs --init-model")
    if not init_model:
        return
    section = objective_of(config, config_path).section
    if not isinstance(config.get(section), dict):
        raise ConfigError(f"{config_path}: needs a '{section}' section")
    config[section]["init_model"] = init_model
    if init_backbone:
        config[section]["init_backbone"] = init_backbone


def train(config: dict, config_path: str, data_dir: str, exp_dir: str, device: str = "auto",
          max_steps: int | None = None) -> None:
    """Train the config's objective on ``data_dir`` into ``exp_dir`` (resuming from its checkpoints)."""
    objective = objective_of(config, config_path)
    if objective is FinetuneObjective:
        run_finetune(config, data_dir, exp_dir, device=device, max_steps=max_steps)
    else:
        Trainer(objective(data_dir), config, data_dir, exp_dir, device=device).run(max_steps)
