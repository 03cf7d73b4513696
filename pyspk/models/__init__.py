"""Speaker-embedding backbones: a registry selected by name, and backbone files.

``build_model(cfg)`` with ``cfg = {"name": "ecapa"|"resnet34"|"resnet_thin"|
"resnet"|"tdnn", "feat_dim": 80, "embed_dim": 192, ...}`` returns a module
mapping ``(batch, frames, feat_dim)`` fbank to ``(batch, embed_dim)``; it
keeps its full config (defaults filled in) in ``model.config``. Per-crop mean
normalisation (``cmn``, default true) is part of every model's forward.

A backbone file is a ``torch.save``'d dict, loadable with ``weights_only=True``::

    {"backbones": {name: {"config": cfg, "state_dict": state_dict}},
     "default_backbone": name, ...other keys a trainer stores}

``extract_embeddings`` (pyspk.models.extract) turns features into chunk-averaged
utterance embeddings.
"""

import copy
import io
import os

import torch

from pyspk.config import ConfigError, check_section, keys_map
from pyspk.fileutil import atomic_path
from pyspk.models import ecapa, resnet, tdnn
from pyspk.models.extract import extract_embeddings
from pyspk.models.frontend import Backbone, mean_normalise

COMMON_DEFAULTS = {"feat_dim": 80, "cmn": True}

PathLike = str | os.PathLike
MapLocation = str | torch.device

# name -> (class, model-specific defaults, consistency check)
MODELS = {
    "ecapa": (ecapa.ECAPATDNN, ecapa.DEFAULTS, ecapa.check),
    "resnet34": (resnet.ResNet, resnet.RESNET34_DEFAULTS, resnet.check),
    "resnet": (resnet.ResNet, resnet.RESNET34_DEFAULTS, resnet.check),
    "resnet_thin": (resnet.ResNet, resnet.THIN_DEFAULTS, resnet.check),
    "tdnn": (tdnn.XVectorTDNN, tdnn.DEFAULTS, tdnn.check),
}


class BackboneFileError(ValueError):
    """A backbone file that is missing, unreadable or lacks the asked-for backbone."""


def _check_value(name, key, value, default):
    """Type-check one config value against the type of its default."""
    where = f"model ({name}).{key}"

    def positive_int(v):
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    if isinstance(default, bool):
        ok = isinstance(value, bool)
        want = "true or false"
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(positive_int(v) for v in value)
        want = "a list of positive integers"
    else:
        ok = positive_int(value)
        want = "a positive integer"
    if not ok:
        raise ConfigError(f"{where} must be {want}, got {value!r}")


def full_config(cfg: dict) -> dict:
    """``cfg`` with the model's defaults filled in, validated (ConfigError on any problem)."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"model config must be a mapping, got {type(cfg).__name__}")
    name = cfg.get("name")
    if name not in MODELS:
        raise ConfigError(f"model.name must be one of {', '.join(sorted(MODELS))}; got {name!r}")
    _, defaults, check = MODELS[name]
    allowed = {**COMMON_DEFAULTS, **defaults}
    check_section(cfg, keys_map(["name", *allowed]), f"model ({name})")
    full = {"name": name, **copy.deepcopy(allowed), **copy.deepcopy(cfg)}
    for key, default in allowed.items():
        _check_value(name, key, full[key], default)
    problem = check(full)
    if problem:
        raise ConfigError(f"model ({name}): {problem}")
    return full


def build_model(cfg: dict) -> Backbone:
    """Build a randomly initialised backbone from its config dict."""
    full = full_config(cfg)
    cls = MODELS[full["name"]][0]
    model = cls(**{key: value for key, value in full.items() if key != "name"})
    model.config = full
    return model


def _unwrap(model):
    """The bare model inside a DistributedDataParallel (or similar) wrapper."""
    return getattr(model, "module", model)


def backbone_entry(model: torch.nn.Module) -> dict:
    """``{"config": ..., "state_dict": ...}`` for one model built by ``build_model``."""
    model = _unwrap(model)
    if getattr(model, "config", None) is None:
        raise ValueError(f"{type(model).__name__} has no .config; build it with pyspk.models.build_model")
    return {"config": copy.deepcopy(model.config), "state_dict": model.state_dict()}


def backbone_file_content(backbones: dict[str, torch.nn.Module], default: str) -> dict:
    """The backbone-file dict of ``backbones`` (name -> model) with ``default`` as the default one."""
    if default not in backbones:
        raise ValueError(f"default backbone '{default}' is not among {', '.join(backbones)}")
    return {"backbones": {name: backbone_entry(model) for name, model in backbones.items()},
            "default_backbone": default}


def save_backbones(path: PathLike, backbones: dict[str, torch.nn.Module], default: str,
                   extra: dict | None = None) -> None:
    """Atomically write a backbone file holding ``backbones`` (name -> model) plus ``extra`` keys."""
    extra = dict(extra or {})
    clash = {"backbones", "default_backbone"} & set(extra)
    if clash:
        raise ValueError(f"extra keys {sorted(clash)} are reserved for the backbone file layout")
    write_backbone_file(path, {**backbone_file_content(backbones, default), **extra})


def write_backbone_file(path: PathLike, content: dict) -> None:
    """Atomically write a backbone-file dict (``save_backbones``'s layout, e.g. an average of checkpoints)."""
    # Serialised in memory first: torch.save on a full disk fails with an opaque
    # RuntimeError, a plain write with OSError ENOSPC that callers can report.
    buffer = io.BytesIO()
    torch.save(content, buffer)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(buffer.getbuffer())


def read_backbone_file(path: PathLike, map_location: MapLocation = "cpu") -> dict:
    """The whole backbone-file dict, with clear errors for a missing or foreign file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BackboneFileError(f"{path}: no such backbone file")
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise BackboneFileError(f"{path}: cannot read backbone file: {e}") from None
    if not isinstance(content, dict) or not isinstance(content.get("backbones"), dict) \
            or "default_backbone" not in content:
        raise BackboneFileError(f"{path}: not a backbone file (needs 'backbones' and 'default_backbone')")
    return content


def list_backbones(path: PathLike) -> list[str]:
    """Names of the backbones stored in ``path``, in stored order."""
    return list(read_backbone_file(path)["backbones"])


def read_backbone_entry(path: PathLike, name: str | None = None, map_location: MapLocation = "cpu") -> dict:
    """``{"config", "state_dict"}`` of backbone ``name`` (default: the file's default_backbone) in ``path``."""
    content = read_backbone_file(path, map_location)
    backbones = content["backbones"]
    name = content["default_backbone"] if name is None else name
    if name not in backbones:
        raise BackboneFileError(f"{path}: no backbone '{name}'; available: {', '.join(backbones)}")
    return backbones[name]


def load_backbone(path: PathLike, name: str | None = None, map_location: MapLocation = "cpu") -> Backbone:
    """Rebuild backbone ``name`` (default: the file's default_backbone); returned in eval mode."""
    entry = read_backbone_entry(path, name, map_location)
    try:
        model = build_model(entry["config"])
        model.load_state_dict(entry["state_dict"])
    except (ConfigError, KeyError, RuntimeError) as e:
        which = f"backbone '{name}'" if name else "the default backbone"
        raise BackboneFileError(f"{path}: {which} cannot be rebuilt: {e}") from None
    return model.to(map_location).eval()


def init_from_file(backbone: Backbone, path: PathLike, name: str | None = None) -> None:
    """Copy the weights of backbone ``name`` of file ``path`` into ``backbone``, which must have the same config.

    ConfigError lists the config keys that differ; BackboneFileError a file that cannot be read.
    """
    source = load_backbone(path, name)
    if source.config != backbone.config:
        differ = sorted(k for k in set(source.config) | set(backbone.config)
                        if source.config.get(k) != backbone.config.get(k))
        details = ", ".join(f"{k}: {source.config.get(k)!r} in the file, {backbone.config.get(k)!r} in the config"
                            for k in differ)
        raise ConfigError(f"{path}: its backbone differs from the config's model section ({details}); "
                          "make the model section match it")
    backbone.load_state_dict(source.state_dict())


__all__ = [
    "MODELS", "Backbone", "BackboneFileError", "backbone_entry", "backbone_file_content", "build_model",
    "extract_embeddings", "full_config", "init_from_file", "list_backbones", "load_backbone", "mean_normalise",
    "read_backbone_entry", "read_backbone_file", "save_backbones", "write_backbone_file",
]
