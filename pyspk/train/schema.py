"""What a training config may hold: the tree assembled from the sections' declarations.

Each section is declared once, next to the code that reads it (pyspk.config spec nodes):
``data`` in pyspk.train.wav_data (crops in data, specaug and channel in augment, online_aug
in online_aug), ``optim`` in pyspk.train.optim, schedules in pyspk.train.schedules, ``train``
and the top level here, ``model`` from pyspk.models' defaults, and each objective's own
section in its Objective's ``declaration``, read from the registry (pyspk.train.registry).
:func:`training_schema` puts them together per objective. Before any work:

* overrides (``key.sub=value`` on the command line) may set any key this tree
  knows, present in the YAML or not (:func:`apply_schema_overrides`); an
  unknown key is refused with the close matches;
* pyspk.config.check_tree walks the whole merged config, nested values included,
  and names the first key whose value has the wrong type or range, and where it
  came from (the file or the command line).

A new key is one entry in its section's declaration; a key missing there but read by a module
is refused as unknown (tests/test_config_checks.py loads every shipped config through it).
"""

import copy
from collections.abc import Callable, Mapping
from typing import Any

from pyspk.config import (
    ANY,
    ConfigError,
    Either,
    ListOf,
    Map,
    Origin,
    Text,
    Value,
    check_tree,
    parse_override,
    resolve,
    unknown_key_message,
)
from pyspk.models import COMMON_DEFAULTS, MODELS
from pyspk.train.objective import Objective
from pyspk.train.optim import OPTIM_SECTION
from pyspk.train.registry import OBJECTIVES
from pyspk.train.wav_data import DATA_SECTION

FROM_INIT = "from_init"  # model: from_init takes the model section from the backbone a training starts from
TRAIN_SECTION = Map({"epochs": Value(int, 1), "log_every": Value(int, 1), "ckpt_every_steps": Value(int, 0),
                     "keep_checkpoints": Value(int, 0), "average_last": Value(int, 0), "amp": Value(bool),
                     "threads": Value(int, 0), "sync_batchnorm": Value(bool)})


def model_schema(model: Any) -> Any:
    """The model section's keys for its ``name`` (types as pyspk.models checks them)."""
    name = model.get("name") if isinstance(model, dict) else None
    if name not in MODELS:
        return Map({"name": Text(*sorted(MODELS))}, names=ANY)  # build_model names the bad model.name
    keys = {"name": Text(*sorted(MODELS))}
    for key, default in {**COMMON_DEFAULTS, **MODELS[name][1]}.items():
        keys[key] = (Value(bool) if isinstance(default, bool) else
                     ListOf(Value(int, 1)) if isinstance(default, list) else Value(int, 1))
    return Map(keys)


def _memo_model(model: Any) -> Any:
    return Map({"feat_dim": Value(int, 1), "archs": Map(names=model_schema)})


def _model(section: str | None) -> Any:
    if section == "memo":
        return _memo_model
    if section == "finetune":  # the backbone comes from finetune.init_model
        return ANY
    # A model starting from a backbone file may leave the backbone to it (see resolve_init_backbone).
    return lambda model: Text(FROM_INIT) if model == FROM_INIT else model_schema(model)


def _tree(objective: type[Objective] | Objective | None, section_spec: Any) -> Map:
    section = objective.section if objective is not None else None
    keys = {"objective": Text(*OBJECTIVES), "seed": Value(int, 0), "data": DATA_SECTION, "model": _model(section),
            "optim": OPTIM_SECTION, "train": TRAIN_SECTION}
    if section:
        keys[section] = section_spec
    return Map(keys)


def training_schema(config: Mapping[str, Any]) -> Map:
    """The tree of the training config ``config`` (its objective picks the section and the model's form)."""
    objective = OBJECTIVES.get(config.get("objective"))
    return _tree(objective, objective.declaration if objective is not None and objective.declaration else ANY)


def check_config(config: Mapping[str, Any], objective: Objective) -> None:
    """The trainer's check of a config it is given (by Python code too, not only pyspk.bin.train): every
    section but the objective's, which its build checks, and the rules between keys."""
    check_tree(config, _tree(objective, ANY))
    check_training_rules(config)


def check_training_rules(config: Mapping[str, Any]) -> None:
    """The rules between the keys of a training config that its tree cannot say."""
    for name in ("data", "model", "optim", "train"):
        if not isinstance(config.get(name), dict):
            raise ConfigError(f"config needs a '{name}' section")
    if "epochs" not in config["train"]:
        raise ConfigError("config needs train.epochs")
    average_last, keep = int(config["train"].get("average_last", 0)), int(config["train"].get("keep_checkpoints", 3))
    if average_last > 1 and 0 < keep < average_last:
        raise ConfigError(f"train.average_last ({average_last}) needs train.keep_checkpoints at least as large "
                          f"(or 0, all kept), got {keep}")


# -- overrides -------------------------------------------------------------------------------------

def _as_map(spec: Any, value: Any) -> Any:
    """The Map a key's spec allows (ANY for an undescribed value, None for a scalar)."""
    spec = resolve(spec, value)
    if spec is ANY or isinstance(spec, Map):
        return spec
    if isinstance(spec, Either):
        return next((s for s in spec.specs if isinstance(s, Map)), None)
    return None


def apply_schema_overrides(config: dict, overrides: list[str] | None,
                           schema: Callable[[Mapping[str, Any]], Map]) -> dict:
    """A copy of ``config`` with ``["a.b=1", ...]`` applied: any key ``schema(config)`` knows may be set.

    A key the tree knows but the YAML lacks is added (with its parent mappings, a null parent
    becoming a mapping); where the tree leaves a value undescribed (ANY) only existing keys may be
    replaced. An unknown key is a ConfigError naming its close matches. Values are parsed as YAML
    and checked afterwards by pyspk.config.check_tree.
    """
    config = copy.deepcopy(config)
    for item in overrides or []:
        keys, value = parse_override(item)
        node, spec = config, schema(config)
        for depth, key in enumerate(keys):
            where = ".".join(keys[:depth])
            if spec is ANY:
                child = ANY
                if key not in node:
                    raise ConfigError(f"override '{item}': {unknown_key_message(key, where, list(node))}")
            else:
                child = spec.child(key, node.get(key))
                if child is None:
                    raise ConfigError(f"override '{item}': {unknown_key_message(key, where, spec.known())}")
            if depth == len(keys) - 1:
                node[key] = value
                break
            below = _as_map(child, node.get(key))
            if not isinstance(node.get(key), dict):
                if node.get(key) is not None or below is None or (below is ANY and key not in node):
                    raise ConfigError(f"override '{item}': {'.'.join(keys[:depth + 1])} is "
                                      f"{node.get(key)!r}, not a mapping")
                node[key] = {}
            node, spec = node[key], below
    return config


def override_origin(path: str, overrides: list[str] | None) -> Origin:
    """``origin(dotted_key)`` for pyspk.config.check_tree: the override that set it, else the file."""
    items = [(item.split("=", 1)[0], item) for item in overrides or [] if "=" in item]

    def origin(dotted: str) -> str:
        for key, item in reversed(items):
            if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
                return f"command line: {item}, over {path}"
        return f"in {path}"
    return origin
