"""Every result line a README quotes is in a RESULTS.md, with its figures.

A README table quotes result lines in a column headed "results line" (the line's system name in
backticks) beside its EER and minDCF columns; each such row must match a line
``system=<name> EER=<e>% minDCF(p=0.01)=<a> minDCF(p=0.05)=<b>`` of some RESULTS.md, to the
precision the table shows. A figure changed in one place and not the other fails here.
"""

import glob
import os
import re

from conftest import ROOT

RESULT_LINE = re.compile(
    r"system=(\S+) EER=([\d.]+)% minDCF\(p=0\.01\)=([\d.]+) minDCF\(p=0\.05\)=([\d.]+)")
FIGURE_COLUMNS = ("EER", "minDCF(0.01)", "minDCF(0.05)")


def recipe_files(name):
    """``name`` at the top level and in every recipe directory (egs/<corpus>/<version>)."""
    return sorted(glob.glob(os.path.join(ROOT, name)) + glob.glob(os.path.join(ROOT, "egs", "*", "*", name)))


def result_lines(text):
    """{system name: [(EER %, minDCF 0.01, minDCF 0.05), ...]} of the result lines in ``text``."""
    lines = {}
    for name, *figures in RESULT_LINE.findall(text):
        lines.setdefault(name, []).append(tuple(float(f) for f in figures))
    return lines


def _cells(row):
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def quoted_rows(text):
    """(line number, system name, [figure cells]) of every table row quoting a result line."""
    rows = []
    header = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = cells
            continue
        if set(line) <= set("|-: "):
            continue
        names = [i for i, h in enumerate(header) if h.lower().startswith("results line")]
        if not names:
            continue
        columns = [next((i for i, h in enumerate(header) if h.startswith(c)), None) for c in FIGURE_COLUMNS]
        if None in columns:
            raise AssertionError(f"line {number}: a results-line table needs the columns {FIGURE_COLUMNS}")
        match = re.search(r"`([^`]+)`", cells[names[0]])
        if match:
            rows.append((number, match.group(1), [cells[i] for i in columns]))
    return rows


def _agrees(cell, value):
    """The table cell (``**22.50%**``, ``0.997``) is ``value`` rounded to the cell's digits."""
    text = cell.replace("*", "").rstrip("%").strip()
    decimals = len(text.split(".")[1]) if "." in text else 0
    return abs(value - float(text)) <= 0.5 * 10 ** -decimals + 1e-9  # a tie may round either way


def unmatched_rows(readme_text, lines):
    """Rows of ``readme_text`` quoting a result line that no line of ``lines`` carries."""
    missing = []
    for number, name, cells in quoted_rows(readme_text):
        if not any(all(_agrees(c, v) for c, v in zip(cells, figures, strict=True)) for figures in lines.get(name, [])):
            missing.append(f"line {number}: {name} {' '.join(cells)}")
    return missing


def test_every_result_line_quoted_in_a_readme_is_in_a_results_file():
    lines = {}
    for path in recipe_files("RESULTS.md"):
        with open(path, encoding="utf-8") as f:
            found = result_lines(f.read())
        for name, figures in found.items():
            lines.setdefault(name, []).extend(figures)
    assert lines, "no RESULTS.md with result lines"
    quoted = 0
    problems = []
    for path in recipe_files("README.md"):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        quoted += len(quoted_rows(text))
        problems += [f"{os.path.relpath(path, ROOT)} {p}" for p in unmatched_rows(text, lines)]
    assert quoted >= 10, "the README's summary tables quote no result lines"
    assert not problems, "quoted result lines found in no RESULTS.md:\n" + "\n".join(problems)


def test_the_check_finds_a_figure_that_differs():
    readme = ("| system | results line | EER | minDCF(0.01) | minDCF(0.05) |\n"
              "| --- | --- | --- | --- | --- |\n"
              "| DINO | `dino_cosine` | **1.83%** | 0.414 | 0.220 |\n"
              "| rounds | `pl_dino_r2_plda` | 1.45% | 0.189 | 0.110 |\n")
    lines = result_lines(
        "system=dino_cosine EER=1.833% minDCF(p=0.01)=0.4140 minDCF(p=0.05)=0.2200 trials=t\n"
        "system=pl_dino_r2_plda EER=1.45% minDCF(p=0.01)=0.1888 minDCF(p=0.05)=0.1088 trials=t\n")
    assert unmatched_rows(readme, lines) == ["line 4: pl_dino_r2_plda 1.45% 0.189 0.110"]
    fixed = readme.replace("0.110", "0.109")
    assert unmatched_rows(fixed, lines) == []
    assert unmatched_rows(fixed.replace("`dino_cosine`", "`dino_demo_cosine`"), lines) == [
        "line 3: dino_demo_cosine **1.83%** 0.414 0.220"]
