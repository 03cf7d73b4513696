"""The package's structure (issue 36): one declaration per config section, checked by one validator; no import
circle; no module over 500 lines."""

import ast
import os

from conftest import ROOT

import pyspk.config
from pyspk.config import Map
from pyspk.train.registry import OBJECTIVES
from pyspk.train.schema import TRAIN_SECTION, training_schema
from pyspk.train.wav_data import DATA_SECTION

PACKAGE = os.path.join(ROOT, "pyspk")
VALIDATOR = "pyspk.config"
MAX_LINES = 500


def package_modules():
    """``{module name: (path, parsed tree)}`` of every module of pyspk/."""
    out = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
                with open(path, encoding="utf-8") as f:
                    out[module] = (path, ast.parse(f.read(), path))
    return out


def test_every_section_is_declared_once_and_the_schema_reads_the_declarations():
    for name, objective in OBJECTIVES.items():
        assert objective.section == name and isinstance(objective.declaration, Map), name
        tree = training_schema({"objective": name})
        assert set(tree.known()) == {"objective", "seed", "data", "model", "optim", "train", name}
        assert tree.child(name, {}) is objective.declaration, name  # the registry's, not a copy
        assert tree.child("data", {}) is DATA_SECTION and tree.child("train", {}) is TRAIN_SECTION


def test_keys_and_types_are_checked_by_the_one_validator_alone():
    """pyspk.config.check_tree / check_section are the only checks of config keys and types: the two checks
    of before (check_keys, check_values) are gone, and no other module words an unknown-key message."""
    assert not hasattr(pyspk.config, "check_keys") and not hasattr(pyspk.config, "check_values")
    for module, (path, tree) in package_modules().items():
        if module == VALIDATOR:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                called = getattr(node.func, "id", getattr(node.func, "attr", None))
                assert called not in ("check_keys", "check_values"), f"{path}:{node.lineno}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not node.value.startswith("unknown key"), f"{path}:{node.lineno}: a second unknown-key check"


def imported_modules(module, tree, modules):
    """The pyspk modules ``module`` imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from pyspk.models import ecapa": module pyspk.models.ecapa; "... import build_model": pyspk.models
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            continue
        out.update(name for name in names if name in modules and name != module)
    return out


def test_no_import_circle():
    modules = package_modules()
    graph = {module: imported_modules(module, tree, modules) for module, (_, tree) in modules.items()}
    done, path = set(), []

    def visit(module):
        if module in path:
            circle = [*path[path.index(module):], module]
            raise AssertionError(f"import circle: {' -> '.join(circle)}")
        if module in done:
            return
        path.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_no_module_over_500_lines():
    for path, _ in package_modules().values():
        with open(path, encoding="utf-8") as f:
            lines = sum(1 for _ in f)
        assert lines <= MAX_LINES, f"{path}: {lines} lines (at most {MAX_LINES}); split it by responsibility"
