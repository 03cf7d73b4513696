"""Each recipe's --help lists its stages and what each writes, generated from its header comment (issue 28).

The header comment (the lines after the shebang up to the first line of code) is printed by --help, so the
two cannot drift; a recipe's run.sh adds steps/sv_pipeline.sh's stages 2-9 and result names from its header.
"""

import glob
import os
import re

import pytest
from conftest import ROOT, run_script

RECIPES = ["run.sh", *sorted(os.path.relpath(p, ROOT) for p in
                             glob.glob(os.path.join(ROOT, "egs", "*", "v1", "run.sh")))]
STAGE = re.compile(r"^#\s+(\d+(-\d+)?)\s+\S")


def header(path):
    """The header comment's lines, '# ' stripped."""
    lines = []
    with open(path) as f:
        next(f)  # the shebang
        for line in f:
            if not line.startswith("#"):
                break
            lines.append(re.sub(r"^# ?", "", line.rstrip("\n")))
    return lines


def stage_lines(path):
    with open(path) as f:
        return [re.sub(r"^#\s+", "", line.rstrip("\n")) for line in f if STAGE.match(line)]


def help_of(script):
    """``<script> --help`` as a user runs it: a recipe's run.sh from its dir, the pipeline from a recipe dir."""
    if script.startswith("steps/"):
        proc = run_script([script, "--help"], cwd=ROOT, check=False)
    else:
        cwd = os.path.join(ROOT, os.path.dirname(script))
        proc = run_script([f"./{os.path.basename(script)}", "--help"], cwd=cwd, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("script", [*RECIPES, "steps/sv_pipeline.sh"])
def test_help_prints_the_header_with_its_stages(script):
    text = help_of(script)
    lines = header(os.path.join(ROOT, script))
    assert any(line.startswith("Stages") for line in lines), f"{script}: its header lists no stages"
    for line in lines:
        assert line in text, f"{script} --help lacks its header line {line!r}"
    assert "Usage: " in text and "--stage N" in text


@pytest.mark.parametrize("script", RECIPES)
def test_recipe_help_lists_the_pipeline_stages_and_what_they_write(script):
    text = help_of(script)
    pipeline = stage_lines(os.path.join(ROOT, "steps", "sv_pipeline.sh"))
    assert [line.split()[0] for line in pipeline] == [str(s) for s in range(2, 10)]
    for line in pipeline:
        assert line in text, f"{script} --help lacks the pipeline's stage line {line!r}"
    for written in ("-> <exp>/<config name>/final.pt", "results pl_<ssl>[_<tag>]_r<r>_{cosine,plda}",
                    "<model>_<back-end>[_<test-set>][_<list>]"):
        assert written in text
