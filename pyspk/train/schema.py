"""What a training config may hold: every key the trainer and the objectives read, with its type.

One tree per objective (:func:`training_schema`), built from the key lists and
defaults the modules themselves keep (pyspk.train.loop, data, augment,
online_aug, schedules, pyspk.models, the objectives' sections). It serves two
checks that run before any work:

* overrides (``key.sub=value`` on the command line) may set any key this tree
  knows, present in the YAML or not (:func:`apply_schema_overrides`); an
  unknown key is refused with the close matches;
* :func:`check_schema` walks the whole merged config, nested values included,
  and names the first key whose value has the wrong type or range, and where it
  came from (the file or the command line).

The modules' own checks (pyspk.config.check_keys / check_values in build) stay:
this tree is the early, data-free pass. A key missing here but read by a module
is refused as unknown: tests/test_config_checks.py loads every shipped config
through it.
"""

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

from pyspk.config import ConfigError, Value, parse_override, unknown_key_message

# -- spec nodes ----------------------------------------------------------------------------------


class Text:
    """A string; with ``choices`` one of them."""

    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return "must be a string" if not self.choices else f"must be one of {', '.join(self.choices)}"
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}"
        return None


class ListOf:
    """A list whose items fit ``item`` (a Value or Text)."""

    def __init__(self, item: Any, length: int | None = None) -> None:
        self.item, self.length = item, length

    def problem(self, value: Any) -> str | None:
        what = f"a list of {self.length} " if self.length else "a list of "
        kind = {int: "integers", float: "numbers", bool: "booleans"}.get(getattr(self.item, "kind", None), "strings")
        if not isinstance(value, list) or (self.length and len(value) != self.length):
            return f"must be {what}{kind}"
        for item in value:
            problem = self.item.problem(item)
            if problem is not None:
                return f"must be {what}{kind} ({item!r} {problem})"
        return None


class Map:
    """A mapping: ``keys`` {name: spec} and/or ``names`` (a spec for any name, e.g. the crop groups).

    A spec may be a callable ``f(value) -> spec`` where the key's allowed contents depend on its
    value (the model section on ``model.name``).
    """

    def __init__(self, keys: Mapping[str, Any] | None = None, names: Any = None) -> None:
        self.keys, self.names = dict(keys or {}), names

    def child(self, key: Any, value: Any) -> Any:
        """The spec of ``key`` (holding ``value``, maybe None), or None when the key is unknown."""
        spec = self.keys.get(key, self.names)
        return resolve(spec, value)

    def known(self) -> list[str]:
        return list(self.keys)


class Either:
    """One of several specs (a schedule: a number or a mapping); ``None`` among them allows null."""

    def __init__(self, *specs: Any) -> None:
        self.specs = specs


ANY = object()  # any value: a key the tree does not describe further
FROM_INIT = "from_init"  # model: from_init takes the model section from the backbone a training starts from


def nullable(spec: Any) -> Either:
    return Either(None, spec)


def resolve(spec: Any, value: Any) -> Any:
    if callable(spec) and not isinstance(spec, (Text, ListOf, Map, Either, Value)):
        return spec(value)
    return spec


def describe(spec: Any) -> str:
    """What a value of ``spec`` is, in words ("an integer", "a number or a mapping" ...)."""
    if isinstance(spec, Either):
        return " or ".join(describe(s) for s in spec.specs)
    if isinstance(spec, Value):
        return {int: "an integer", float: "a number", bool: "true or false"}[spec.kind]
    if isinstance(spec, Text):
        return f"one of {', '.join(spec.choices)}" if spec.choices else "a string"
    if isinstance(spec, ListOf):
        return (spec.problem(None) or "").replace("must be ", "")
    return {type(None): "null", Map: "a mapping"}.get(type(spec), "any value")


_DEFAULT_SPECS = ((bool, lambda: Value(bool)), (int, lambda: Value(int)), (float, lambda: Value(float)),
                  (str, Text))


def _from_default(value: Any) -> Any:
    """The spec of a key from its default value (a module's *_DEFAULTS dict); ANY for a None default."""
    for kind, make in _DEFAULT_SPECS:  # bool first: a bool is an int too
        if isinstance(value, kind):
            return make()
    if isinstance(value, (list, tuple)):
        return ListOf(Text()) if value and all(isinstance(v, str) for v in value) else ListOf(Value(float))
    if isinstance(value, dict):
        return nullable(defaults_map(value))
    return ANY


def defaults_map(defaults: Mapping[str, Any], **explicit: Any) -> Map:
    """A Map of a module's defaults dict, each key typed as its default; ``explicit`` specs win."""
    return Map({key: explicit.get(key, _from_default(value)) for key, value in defaults.items()})


def keys_map(keys: tuple[str, ...] | list[str], **explicit: Any) -> Map:
    """A Map of a module's key list: typed where ``explicit`` says, any value otherwise."""
    return Map({key: explicit.get(key, ANY) for key in keys})


# -- the training config tree ----------------------------------------------------------------------

def _schedule(low: float | None = None) -> Either:
    from pyspk.train.schedules import KINDS, SCHEDULE_KEYS
    number = Value(float, low)
    return Either(number, keys_map(SCHEDULE_KEYS, base=number, final=nullable(number),
                                   warmup_epochs=nullable(Value(float, 0)),
                                   warmup_fraction=nullable(Value(float, 0, 1)), warmup_start=nullable(number),
                                   kind=Text(*KINDS)))


def _ema_momentum() -> Callable[[Any], Any]:
    """null (DINO's 0.996 -> 1), ``{lag_fraction: f}`` or a schedule (pyspk.train.schedules)."""
    lag = Map({"lag_fraction": Value(float, 0, 1, low_open=True)})
    schedule = _schedule(0)
    return lambda value: lag if isinstance(value, dict) and "lag_fraction" in value else Either(None, *schedule.specs)


def model_schema(model: Any) -> Any:
    """The model section's keys for its ``name`` (types as pyspk.models checks them)."""
    from pyspk.models import COMMON_DEFAULTS, MODELS
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


def _model(objective: str) -> Any:
    if objective == "memo":
        return _memo_model
    if objective == "finetune":  # the backbone comes from finetune.init_model
        return ANY
    # A model starting from a backbone file may leave the backbone to it (see resolve_init_backbone).
    return lambda model: Text(FROM_INIT) if model == FROM_INIT else model_schema(model)


def _data() -> Map:
    from pyspk.train.augment import CHANNEL_DEFAULTS, SPECAUG_DEFAULTS
    from pyspk.train.data import CROP_KEYS, DATA_KEYS
    from pyspk.train.loop import VALUE_SCHEMAS
    from pyspk.train.online_aug import ONLINE_AUG_DEFAULTS, ONLINE_AUG_SCHEMA
    from pyspk.train.wav_data import SOURCES, WAV_KEYS, WAV_SCHEMA
    online = defaults_map(ONLINE_AUG_DEFAULTS, **{k: nullable(v) for k, v in ONLINE_AUG_SCHEMA.items()},
                          rir_dir=nullable(Text()), musan_dir=nullable(Text()),
                          types=Map({t: Value(float, 0) for t in ONLINE_AUG_DEFAULTS["types"]}))
    crop = keys_map(CROP_KEYS, count=Value(int, 1), frames=Value(int, 1), aug_prob=Value(float, 0, 1))
    return keys_map(DATA_KEYS + WAV_KEYS, **VALUE_SCHEMAS["data"], **WAV_SCHEMA,
                    crops=Map(names=crop), aug_suffixes=ListOf(Text()),
                    specaug=nullable(defaults_map(SPECAUG_DEFAULTS, prob=Value(float, 0, 1))),
                    channel=nullable(defaults_map(CHANNEL_DEFAULTS, prob=Value(float, 0, 1))),
                    non_overlapping=Value(bool), source=Text(*SOURCES), fbank_conf=nullable(Text()),
                    online_aug=nullable(online))


def _dino_like(keys: tuple[str, ...], section: str, **explicit: Any) -> Map:
    from pyspk.ssl.dino import COLLAPSE_DEFAULTS, HEAD_DEFAULTS, REGULARISER_DEFAULTS
    from pyspk.ssl.ntxent import CONTRASTIVE_KEYS, PROJECTION_DEFAULTS, STOP_DEFAULTS
    contrastive = keys_map(CONTRASTIVE_KEYS + (("head",) if section == "dino" else ()),
                           weight=Value(float, 0), temperature=Value(float, 0, low_open=True),
                           gather_negatives=Value(bool),
                           stop=nullable(defaults_map(STOP_DEFAULTS, window_steps=Value(int, 1),
                                                      patience=Value(int, 0), min_delta=Value(float),
                                                      max_epochs=nullable(Value(float, 0)))),
                           head=nullable(defaults_map(PROJECTION_DEFAULTS)))
    return keys_map(keys, head=nullable(defaults_map(HEAD_DEFAULTS)), student_temp=Value(float, 0, low_open=True),
                    teacher_temp=_schedule(0), center_momentum=Value(float, 0, 1), momentum=_ema_momentum(),
                    freeze_last_layer_epochs=Value(float, 0),
                    freeze_last_layer_fraction=nullable(Value(float, 0, 1)),
                    regularisers=nullable(defaults_map(REGULARISER_DEFAULTS)), contrastive=nullable(contrastive),
                    collapse=nullable(defaults_map(COLLAPSE_DEFAULTS)), init_model=nullable(Text()),
                    self_weight=Value(float, 0), cross_weight=Value(float, 0), **explicit)


def _section(objective: str) -> Any:
    """The objective's own section; ANY for an objective this tree does not describe."""
    if objective in ("dino", "memo"):
        from pyspk.ssl.dino import DINO_KEYS
        from pyspk.ssl.memo import MEMO_KEYS
        return _dino_like(DINO_KEYS if objective == "dino" else MEMO_KEYS, objective)
    if objective == "contrastive":
        from pyspk.ssl.contrastive import CHANNEL_INVARIANT_KEYS, CONTRASTIVE_KEYS
        from pyspk.ssl.ntxent import PROJECTION_DEFAULTS
        from pyspk.train.augment import CHANNEL_DEFAULTS
        return keys_map(CONTRASTIVE_KEYS, head=nullable(defaults_map(PROJECTION_DEFAULTS)),
                        temperature=Value(float, 0, low_open=True), gather_negatives=Value(bool),
                        channel_invariant=nullable(keys_map(CHANNEL_INVARIANT_KEYS, weight=Value(float, 0),
                                                            channel=nullable(defaults_map(CHANNEL_DEFAULTS)))))
    if objective == "classifier":
        from pyspk.supervised.aam import WARMUP_KEYS
        from pyspk.supervised.classifier import CLASSIFIER_KEYS, CLASSIFIER_VALUES, INTER_TOPK_KEYS
        from pyspk.supervised.two_step import TWO_STEP_KEYS
        return keys_map(CLASSIFIER_KEYS, **CLASSIFIER_VALUES, margin=Value(float, 0, math.pi / 2),
                        margin_warmup=nullable(keys_map(WARMUP_KEYS, start_epoch=Value(float, 0),
                                                        end_epoch=Value(float, 0))),
                        init_model=nullable(Text()), init_backbone=nullable(Text()),
                        inter_topk=nullable(keys_map(INTER_TOPK_KEYS, k=Value(int, 0),
                                                     margin=Value(float, 0, math.pi / 2))),
                        two_step=nullable(keys_map(TWO_STEP_KEYS, freeze_epochs=Value(float, 0, low_open=True),
                                                   lr_scale=Value(float, 0, low_open=True), train=Text())))
    if objective == "finetune":
        from pyspk.transfer.objective import HEAD_DEFAULTS
        from pyspk.transfer.stages import EVAL_DEFAULTS, FINETUNE_KEYS
        return keys_map(FINETUNE_KEYS, init_model=nullable(Text()), init_backbone=nullable(Text()),
                        label_file=Text(), random_init=nullable(Value(bool)), balance_classes=Value(bool),
                        chunk_frames=nullable(Value(int, 1)), augment=nullable(Value(bool)),
                        head=nullable(defaults_map(HEAD_DEFAULTS, dropout=Value(float, 0, 1))),
                        eval=nullable(defaults_map(EVAL_DEFAULTS)))
    return ANY


def training_schema(config: Mapping[str, Any]) -> Map:
    """The tree of the training config ``config`` (its objective picks the section and the model's form)."""
    from pyspk.train.loop import CLIP_MODES, OPTIM_KEYS, TRAIN_KEYS, VALUE_SCHEMAS
    from pyspk.train.objectives import OBJECTIVES
    objective = config.get("objective")
    keys = {
        "objective": Text(*OBJECTIVES), "seed": Value(int, 0), "data": _data(), "model": _model(objective),
        "optim": keys_map(OPTIM_KEYS, **VALUE_SCHEMAS["optim"], name=Text("sgd", "adamw"), lr=_schedule(0),
                          weight_decay=_schedule(0), betas=ListOf(Value(float, 0, 1), length=2),
                          clip_mode=Text(*CLIP_MODES)),
        "train": keys_map(TRAIN_KEYS, **VALUE_SCHEMAS["train"]),
    }
    if objective in OBJECTIVES:
        keys[OBJECTIVES[objective].section] = _section(objective)
    return Map(keys)


# -- the checks ------------------------------------------------------------------------------------

def check_schema(config: Mapping[str, Any], schema: Map, origin: Callable[[str], str] = lambda key: "") -> None:
    """ConfigError naming the first key of ``config`` that ``schema`` does not know or whose value does not fit.

    ``origin(dotted_key)`` says where the value came from (appended in brackets when not empty).
    """
    _check_node(config, schema, "", origin)


def _fail(dotted: str, message: str, origin: Callable[[str], str]) -> None:
    where = origin(dotted)
    raise ConfigError(f"{message}{f' ({where})' if where else ''}")


def _check_node(value: Any, spec: Any, dotted: str, origin: Callable[[str], str]) -> None:
    spec = resolve(spec, value)
    if spec is ANY:
        return
    if isinstance(spec, Either):
        _check_either(value, spec, dotted, origin)
        return
    if isinstance(spec, Map):
        if not isinstance(value, dict):
            _fail(dotted, f"{dotted or 'the config'} must be a mapping, got {value!r}", origin)
        for key, item in value.items():
            child = spec.child(key, item)
            path = f"{dotted}.{key}" if dotted else str(key)
            if child is None:
                _fail(path, unknown_key_message(key, dotted, spec.known()), origin)
            _check_node(item, child, path, origin)
        return
    problem = _problem(spec, value)
    if problem is not None:
        _fail(dotted, f"{dotted} {problem}, got {value!r}", origin)


def _check_either(value: Any, spec: Either, dotted: str, origin: Callable[[str], str]) -> None:
    if value is None and None in spec.specs:
        return
    maps = [s for s in spec.specs if isinstance(s, Map)]
    if isinstance(value, dict) and maps:
        _check_node(value, maps[0], dotted, origin)
        return
    scalars = [s for s in spec.specs if s is not None and not isinstance(s, Map)]
    if any(_problem(option, value) is None for option in scalars):
        return
    if len(scalars) == 1 and not isinstance(value, dict) and value is not None:
        problem = _problem(scalars[0], value)  # e.g. "must be >= 0", more telling than the list of forms
    else:
        problem = f"must be {describe(spec)}"
    _fail(dotted, f"{dotted} {problem}, got {value!r}", origin)


def _problem(spec: Any, value: Any) -> str | None:
    if value is None and not (isinstance(spec, Either) and None in spec.specs):
        return f"must be {describe(spec)}"
    return spec.problem(value)



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
    and checked afterwards by :func:`check_schema`.
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


def override_origin(path: str, overrides: list[str] | None) -> Callable[[str], str]:
    """``origin(dotted_key)`` for :func:`check_schema`: the override that set it, else the file."""
    items = [(item.split("=", 1)[0], item) for item in overrides or [] if "=" in item]

    def origin(dotted: str) -> str:
        for key, item in reversed(items):
            if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
                return f"command line: {item}, over {path}"
        return f"in {path}"
    return origin
