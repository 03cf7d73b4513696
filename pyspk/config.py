"""YAML configs with command-line overrides, WeSpeaker style, and the one config validator.

``--config conf/x.yaml`` is read with safe_load semantics (a key given twice is an error; a number
written with an exponent, ``1e-3`` or ``1.0e12``, is a number, where YAML 1.1 reads it as text);
overrides ``section.key=value`` (value parsed the same way) replace existing keys only, so a typo
fails instead of being silently ignored. A training config is loaded with
pyspk.train.objectives.load_training_config instead: its overrides may set any key the
objective's tree (pyspk.train.schema) knows, and every value is type-checked with its key named.
The merged config is saved into the experiment dir.

What a config may hold is *declared* once per section, next to the code that reads it, with
the spec nodes below (:class:`Value`, :class:`Text`, :class:`ListOf`, :class:`Map`,
:class:`Either`); :func:`check_tree` checks a whole config against the tree assembled from
those declarations (pyspk.train.schema), and :func:`check_section` checks one section against
its own declaration when a builder is called on its own (tests, notebooks). No other code
checks keys or types.
"""

import copy
import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yaml

from pyspk.fileutil import atomic_open


class ConfigError(ValueError):
    pass


class ConfigLoader(yaml.SafeLoader):
    """safe_load that reads ``1e-3`` as a number and refuses a key given twice in one mapping.

    PyYAML follows YAML 1.1, whose float needs a dot and a signed exponent (``1.0e-3``): ``1e-3``
    and ``1.0e12`` stay text there, and a config that says ``lr: 1e-3`` would be refused. The
    resolver below is YAML 1.2's float (plus 1.1's forms), so a number people write is a number;
    plain YAML also keeps the last of two equal keys silently.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """``text`` read as :class:`ConfigLoader` reads a config file (yaml.YAMLError when it is not YAML)."""
    return yaml.load(text, Loader=ConfigLoader)


def load_yaml(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            # A SafeLoader subclass: what yaml.safe_load constructs, plus exponents and the duplicate-key check.
            config = yaml.load(f, Loader=ConfigLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.constructor.ConstructorError as e:
        raise ConfigError(describe_yaml_error(path, e)) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return config


def describe_yaml_error(path: str, error: yaml.YAMLError) -> str:
    """"unsafe YAML tag at <file>:<line>" for a tag safe_load refuses (e.g. !!python/object), else the parser's text."""
    mark = getattr(error, "problem_mark", None)
    line = f":{mark.line + 1}" if mark is not None else ""
    if isinstance(error, yaml.constructor.ConstructorError) and "tag" in str(error.problem):
        return f"unsafe YAML tag at {path}{line}: {error.problem}"
    return f"{path}{line}: invalid YAML: {error.problem or error}"


def unknown_key_message(key: Any, where: str, known: Iterable[Any]) -> str:
    """"unknown key 'x' under <where> (did you mean ...?); known: ..." (the close matches first)."""
    known = sorted(map(str, known))
    close = difflib.get_close_matches(str(key), known, n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return f"unknown key '{key}' under {where or '<top>'}{hint}; known: {', '.join(known)}"


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> ``(["a", "b"], value parsed as YAML)``; ConfigError naming the override."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key.sub=value")
    dotted, raw = item.split("=", 1)
    try:
        return dotted.split("."), parse_yaml(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{item}': value is not valid YAML: {e}") from None


def apply_overrides(config: dict, overrides: list[str] | None) -> dict:
    """Return a copy of ``config`` with ``["a.b=1", ...]`` applied (existing keys only)."""
    config = copy.deepcopy(config)
    for item in overrides or []:
        keys, value = parse_override(item)
        node = config
        for depth, key in enumerate(keys):
            where = ".".join(keys[:depth])
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': unknown key '{key}' under {where} (not a mapping)")
            if key not in node:
                raise ConfigError(f"override '{item}': {unknown_key_message(key, where, node)}")
            if depth == len(keys) - 1:
                node[key] = value
            else:
                node = node[key]
    return config


def load_config(path: str, overrides: list[str] | None = None) -> dict:
    return apply_overrides(load_yaml(path), overrides)


def save_config(config: dict, path: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)


# -- declarations: what a config section may hold --------------------------------------------------

class Value:
    """The type and range one config key must have: kind int, float or bool; bounds inclusive unless open."""

    def __init__(self, kind: type, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> None:
        self.kind, self.low, self.high, self.low_open = kind, low, high, low_open

    def problem(self, value: Any) -> str | None:
        """Why ``value`` does not fit, or None."""
        if self.kind is bool:
            return None if isinstance(value, bool) else "must be true or false"
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else int):
            return f"must be {'a number' if self.kind is float else 'an integer'}"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {'>' if self.low_open else '>='} {self.low}"
        if self.high is not None and value > self.high:
            return f"must be <= {self.high}"
        return None


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


ANY = object()  # any value: a key the declaration does not describe further


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


def keys_map(keys: Iterable[str]) -> Map:
    """A Map of a key list whose values are any (checked where they are read, e.g. a backbone config)."""
    return Map(dict.fromkeys(keys, ANY))


# -- the validator -----------------------------------------------------------------------------------

Origin = Callable[[str], str]


def check_tree(config: Any, spec: Any, dotted: str = "", origin: Origin = lambda key: "") -> None:
    """ConfigError naming the first key of ``config`` that ``spec`` does not know or whose value does not fit.

    Nested values are checked too. ``origin(dotted_key)`` says where the value came from (appended
    in brackets when not empty).
    """
    spec = resolve(spec, config)
    if spec is ANY:
        return
    if isinstance(spec, Either):
        _check_either(config, spec, dotted, origin)
        return
    if isinstance(spec, Map):
        if not isinstance(config, dict):
            _fail(dotted, f"{dotted or 'the config'} must be a mapping, got {config!r}", origin)
        for key, item in config.items():
            child = spec.child(key, item)
            path = f"{dotted}.{key}" if dotted else str(key)
            if child is None:
                _fail(path, unknown_key_message(key, dotted, spec.known()), origin)
            check_tree(item, child, path, origin)
        return
    problem = _problem(spec, config)
    if problem is not None:
        _fail(dotted, f"{dotted} {problem}, got {config!r}", origin)


def check_section(section: Mapping[str, Any], spec: Map, name: str) -> None:
    """The keys of ``section`` and their scalar values against its declaration ``spec``, for a builder
    called on its own (a training config was checked whole by :func:`check_tree` before any work).

    All unknown keys are named at once; nested sections are checked where they are read.
    """
    unknown = [key for key in section if spec.child(key, section[key]) is None]
    if unknown:
        raise ConfigError(f"unknown key(s) in '{name}': {', '.join(sorted(map(str, unknown)))}; "
                          f"allowed: {', '.join(sorted(spec.known()))}")
    for key, value in section.items():
        child = spec.child(key, value)
        if not (child is ANY or isinstance(child, Map)
                or (isinstance(child, Either) and any(isinstance(s, Map) for s in child.specs))):
            check_tree(value, child, f"{name}.{key}")


def _fail(dotted: str, message: str, origin: Origin) -> None:
    where = origin(dotted)
    raise ConfigError(f"{message}{f' ({where})' if where else ''}")


def _check_either(value: Any, spec: Either, dotted: str, origin: Origin) -> None:
    if value is None and None in spec.specs:
        return
    maps = [s for s in spec.specs if isinstance(s, Map)]
    if isinstance(value, dict) and maps:
        check_tree(value, maps[0], dotted, origin)
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
