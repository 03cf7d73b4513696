"""YAML configs with command-line overrides, WeSpeaker style.

``--config conf/x.yaml`` is read with safe_load semantics (a key given twice is an error; a number
written with an exponent, ``1e-3`` or ``1.0e12``, is a number, where YAML 1.1 reads it as text);
overrides ``section.key=value`` (value parsed the same way) replace existing keys only, so a
typo fails instead of being silently ignored. A training config is loaded with
pyspk.train.objectives.load_training_config instead: its overrides may set any
key the objective's tree (pyspk.train.schema) knows, and every value is
type-checked with its key named. The merged config is saved into the
experiment dir.
"""

import copy
import difflib
import re
from collections.abc import Iterable
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


def check_keys(section: dict, allowed: Iterable[str], name: str) -> None:
    """Fail on keys of a config section that the code does not know."""
    unknown = set(section) - set(allowed)
    if unknown:
        raise ConfigError(f"unknown key(s) in '{name}': {', '.join(sorted(unknown))}; "
                          f"allowed: {', '.join(sorted(allowed))}")


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


def check_values(section: dict, schema: dict[str, "Value"], name: str) -> None:
    """Fail, naming the key, on a value of ``section`` that does not fit ``schema`` ({key: Value}); absent keys pass."""
    for key, spec in schema.items():
        if key in section:
            problem = spec.problem(section[key])
            if problem is not None:
                raise ConfigError(f"{name}.{key} {problem}, got {section[key]!r}")
