"""Every `steps/X.sh --option` / `utils/X.sh --option` call in the recipes and scripts uses options X declares.

A recipe that passes an option its step does not declare dies at run time
(parse_options.sh: "invalid option"), possibly hours into a run; this finds it
statically. Options of a step are the variables it (or a library it sources
first) sets before it sources parse_options.sh; a script that parses by hand
accepts the --options its text names.
"""

import glob
import os
import re

import pytest
from conftest import ROOT

CALL = re.compile(r"\b((?:steps|utils|local)/[\w$]+\.sh)\b")
OPTION = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=", re.M)
SOURCED_LIB = re.compile(r'^\. "\$\(dirname "\$0"\)/(libs/[\w]+\.sh)"', re.M)
SSL_METHODS = ("dino", "contrastive", "memo")
UNIVERSAL = {"help", "config"}  # parse_options.sh: --help prints the usage, --config reads a config file


def callers():
    """The shell files that call steps: recipes, steps, utils, local scripts."""
    patterns = ["run.sh", "steps/*.sh", "steps/libs/*.sh", "utils/*.sh", "local/*.sh",
                "egs/*/v1/run.sh", "egs/*/v1/local/*.sh", "egs/*/run.sh"]
    files = set()
    for pattern in patterns:
        files.update(os.path.realpath(p) for p in glob.glob(os.path.join(ROOT, pattern)))
    return sorted(files)


def logical_lines(path):
    """(line number, text) with backslash continuations joined."""
    with open(path) as f:
        raw = f.read().split("\n")
    lines, start, buffer = [], 0, ""
    for number, line in enumerate(raw, 1):
        if not buffer:
            start = number
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        lines.append((start, buffer + line))
        buffer = ""
    return lines


def expanded_text(script, step_dir=None):
    """The script's text with the libraries it sources (steps/libs/*.sh, relative to the step's $0) in place."""
    step_dir = step_dir or os.path.dirname(script)
    with open(script) as f:
        text = f.read()
    return SOURCED_LIB.sub(lambda m: expanded_text(os.path.join(step_dir, m.group(1)), step_dir), text)


def declared_options(script):
    text = expanded_text(script)
    if "parse_options.sh" not in text:
        return set(OPTION.findall(text))
    head = text[:text.index("parse_options.sh")]
    return {name.replace("_", "-") for name in ASSIGNMENT.findall(head)}


def calls(path):
    """(line, called script path in the repository, [options]) of every step call in ``path``."""
    recipe_dir = os.path.dirname(path)
    for number, line in logical_lines(path):
        code = line.split(" #", 1)[0]
        for match in CALL.finditer(code):
            rest = code[match.end():]
            rest = re.split(r"[;|&]|\)\s*$", rest, maxsplit=1)[0]
            options = OPTION.findall(rest)
            names = [match.group(1)]
            if "$ssl" in names[0]:
                names = [names[0].replace("$ssl", method) for method in SSL_METHODS]
            elif "$" in names[0]:
                continue
            for name in names:
                base = recipe_dir if name.startswith("local/") else ROOT
                script = os.path.join(base, name)
                if name.startswith("local/") and not os.path.exists(script):
                    continue  # a local script of another recipe named in a comment or message
                yield number, script, options


def test_the_scan_finds_calls_and_declarations():
    pipeline = os.path.join(ROOT, "steps", "sv_pipeline.sh")
    found = {(os.path.relpath(script, ROOT), tuple(opts)) for _, script, opts in calls(pipeline)}
    assert any(script == "steps/train.sh" and "overrides" in opts for script, opts in found)
    assert {"nj", "cmd", "device", "backbone"} <= declared_options(os.path.join(ROOT, "steps", "extract_embeddings.sh"))
    assert {"overrides", "nj-gpus"} <= declared_options(os.path.join(ROOT, "steps", "train.sh"))
    assert "system" not in declared_options(os.path.join(ROOT, "steps", "compute_metrics.sh"))


@pytest.mark.parametrize("path", callers(), ids=lambda p: os.path.relpath(p, ROOT))
def test_step_calls_use_declared_options(path):
    problems = []
    for number, script, options in calls(path):
        if not os.path.isfile(script):
            problems.append(f"{os.path.relpath(path, ROOT)}:{number}: no such script {os.path.relpath(script, ROOT)}")
            continue
        unknown = set(options) - declared_options(script) - UNIVERSAL
        if unknown:
            problems.append(f"{os.path.relpath(path, ROOT)}:{number}: {os.path.relpath(script, ROOT)} does not "
                            f"declare --{', --'.join(sorted(unknown))}")
    assert not problems, "\n".join(problems)
