"""Every shell script git tracks parses (bash -n) and is shellcheck-clean at warning level.

The scripts: all *.sh files, plus extension-less files whose first line is a bash
or sh shebang (.ci/run, ...). Project-wide shellcheck settings are in .shellcheckrc.
"""

import os
import re
import shutil
import subprocess

import pytest
from conftest import ROOT


def shell_scripts():
    """The tracked shell scripts, relative to ROOT (links, e.g. egs/*/steps, left out)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    scripts = []
    for path in listed.decode().split("\0"):
        full = os.path.join(ROOT, path)
        if not path or os.path.islink(full) or not os.path.isfile(full):
            continue
        if path.endswith(".sh"):
            scripts.append(path)
        elif "." not in os.path.basename(path):
            with open(full, "rb") as f:
                first = f.readline()
            if re.match(rb"#!\S*/(env\s+)?(bash|sh)\b", first):
                scripts.append(path)
    return sorted(scripts)


def test_the_scripts_are_found():
    scripts = shell_scripts()
    for expected in ("run.sh", "path.sh", "cmd.sh", ".ci/run", "utils/parse_options.sh",
                     "steps/make_fbank.sh", "steps/libs/common.sh", "local/make_corpus.sh",
                     "egs/voxceleb/v1/run.sh", "egs/voxceleb/v1/local/download_voxceleb.sh"):
        assert expected in scripts
    assert not any(s.startswith("egs/") and "/steps/" in s for s in scripts)  # the links to steps/ are not followed
    assert not any(s.endswith(".pl") or s.endswith(".py") for s in scripts)


def test_bash_parses_every_script():
    failures = []
    for script in shell_scripts():
        proc = subprocess.run(["bash", "-n", script], cwd=ROOT, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            failures.append(proc.stderr.strip())
    assert not failures, "bash -n failed:\n" + "\n".join(failures)


def test_shellcheck_finds_no_warnings():
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (tools/install.sh installs the Debian package as root)")
    proc = subprocess.run(["shellcheck", "-S", "warning", "-f", "gcc", *shell_scripts()],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"shellcheck -S warning found:\n{proc.stdout}{proc.stderr}"
