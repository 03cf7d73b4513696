"""utils/parse_options.sh (Kaldi option parsing) and utils/run.pl (Kaldi local job launcher)."""

import glob
import os

import pytest
from conftest import ROOT, run_script

SCRIPT = """#!/usr/bin/env bash
set -euo pipefail
nj=4
use_gpu=false
name="a b"
help_message="Usage: $0 [options] <arg>
e.g.: $0 --nj 2 foo"
. {root}/utils/parse_options.sh
printf 'nj=%s use_gpu=%s name=%s args=%s\\n' "$nj" "$use_gpu" "$name" "$*"
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "x.sh"
    path.write_text(SCRIPT.format(root=ROOT))
    path.chmod(0o755)
    return str(path)


def test_options_set_declared_variables(script):
    proc = run_script([script, "--nj", "2", "--use-gpu", "true", "--name", "x $HOME ;'\"", "pos1", "--pos2"])
    assert proc.stdout == "nj=2 use_gpu=true name=x $HOME ;'\" args=pos1 --pos2\n"
    assert run_script([script]).stdout == "nj=4 use_gpu=false name=a b args=\n"


@pytest.mark.parametrize("args,message", [
    (["--bogus", "1"], "invalid option --bogus"),
    (["--foo.bar", "1"], "invalid option --foo.bar"),
    (["--use-gpu", "yes"], 'expected "true" or "false": --use-gpu yes'),
    (["--nj=3"], "must be of the form --name value"),
    (["--nj"], "option --nj needs a value"),
    (["--config", "/nonexistent.conf"], "missing config '/nonexistent.conf'"),
])
def test_bad_options_fail(script, args, message):
    proc = run_script([script, *args], check=False)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "nj=" not in proc.stdout


def test_config_file_then_command_line(script, tmp_path):
    conf = tmp_path / "x.conf"
    conf.write_text("nj=7\nname=fromconf\n")
    assert run_script([script, "--config", str(conf), "a"]).stdout == "nj=7 use_gpu=false name=fromconf args=a\n"
    proc = run_script([script, "--config", str(conf), "--nj", "9", "a"])
    assert proc.stdout == "nj=9 use_gpu=false name=fromconf args=a\n"


def yaml_config_script(tmp_path, declare_config=True):
    path = tmp_path / "y.sh"
    declaration = "config=conf/default.yaml\n" if declare_config else ""
    path.write_text(f"#!/usr/bin/env bash\nset -euo pipefail\nnj=1\n{declaration}"
                    f". {ROOT}/utils/parse_options.sh\necho \"config=${{config:-}} nj=$nj args=$*\"\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_config_is_an_ordinary_option(tmp_path, suffix):
    """--config <file.yaml|.yml> sets the declared variable config, in command-line order, never sourced."""
    script = yaml_config_script(tmp_path)
    sourced = tmp_path / "sourced"
    yaml = tmp_path / f"c{suffix}"
    yaml.write_text(f"touch {sourced}\n")  # a YAML string; a shell command if sourced
    assert run_script([script, "--config", str(yaml), "--nj", "3", "a"]).stdout == f"config={yaml} nj=3 args=a\n"
    assert not sourced.exists()
    other = tmp_path / f"d{suffix}"
    assert run_script([script, "--config", str(yaml), "--config", str(other)]).stdout == f"config={other} nj=1 args=\n"
    # Not checked for existence here: the step that reads it says which file is missing.
    assert run_script([script, "--config", "nonexistent.yaml"]).stdout == "config=nonexistent.yaml nj=1 args=\n"


def test_yaml_config_needs_a_declared_config(tmp_path):
    script = yaml_config_script(tmp_path, declare_config=False)
    proc = run_script([script, "--config", str(tmp_path / "c.yaml")], check=False)
    assert proc.returncode == 1 and "invalid option --config" in proc.stderr


def test_kaldi_config_sets_config_too(tmp_path):
    """A non-YAML --config is sourced first (the command line wins) and names itself in config."""
    script = yaml_config_script(tmp_path, declare_config=False)
    conf = tmp_path / "x.conf"
    conf.write_text("nj=7\n")
    assert run_script([script, "--nj", "2", "--config", str(conf)]).stdout == f"config={conf} nj=2 args=\n"
    assert run_script([script, "--config", str(conf)]).stdout == f"config={conf} nj=7 args=\n"


def test_help_exits_zero(script):
    proc = run_script([script, "--help"])
    assert "Usage:" in proc.stderr and "e.g.:" in proc.stderr
    assert proc.stdout == ""


def read(path):
    with open(path) as f:
        return f.read()


def test_run_pl_job_substitution_and_logs(tmp_path):
    log = f"{tmp_path}/log/echo.JOB.log"
    run_script(["utils/run.pl", "JOB=1:3", log, "echo", "job", "JOB", "of", "3"])
    for job in (1, 2, 3):
        text = read(f"{tmp_path}/log/echo.{job}.log")
        assert text.startswith(f"# echo job {job} of 3\n# Started at")
        assert f"\njob {job} of 3\n" in text
        assert "# Ended (code 0) at" in text.splitlines()[-1]
    run_script(["utils/run.pl", f"{tmp_path}/single.log", "true"])
    assert "# Ended (code 0)" in read(f"{tmp_path}/single.log")


def test_run_pl_failure_names_log(tmp_path):
    proc = run_script(["utils/run.pl", "JOB=1:3", f"{tmp_path}/f.JOB.log", "bash", "-c", "[ JOB != 2 ]"], check=False)
    assert proc.returncode == 1
    assert f"1 / 3 failed, log is in {tmp_path}/f.2.log" in proc.stderr
    assert "# Ended (code 1)" in read(f"{tmp_path}/f.2.log")
    assert "# Ended (code 0)" in read(f"{tmp_path}/f.3.log")
    proc = run_script(["utils/run.pl", f"{tmp_path}/one.log", "exit", "3"], check=False)
    assert proc.returncode == 1 and f"job failed, log is in {tmp_path}/one.log" in proc.stderr
    assert "# Ended (code 3)" in read(f"{tmp_path}/one.log")


@pytest.mark.parametrize("max_jobs", [1, 2])
def test_run_pl_max_jobs_run(tmp_path, max_jobs):
    events = f"{tmp_path}/events"
    cmd = f"echo start >> {events}; sleep 0.2; echo end >> {events}"
    run_script(["utils/run.pl", "--max-jobs-run", str(max_jobs), "JOB=1:4", f"{tmp_path}/log/j.JOB.log",
                "bash", "-c", cmd])
    running, most = 0, 0
    for event in read(events).split():
        running += 1 if event == "start" else -1
        most = max(most, running)
    assert read(events).split().count("end") == 4
    assert most <= max_jobs


def test_run_pl_kaldi_quoting_and_grid_options(tmp_path):
    log = f"{tmp_path}/p.log"
    # an escaped pipe is a pipe in the job; an argument with spaces stays one argument
    run_script(["utils/run.pl", "--mem", "4G", "--gpu", "1", log, "echo", "a  b", "it's", "|", "tr", "a-z", "A-Z"])
    assert "\nA  B IT'S\n" in read(log)
    # other arguments reach the job literally; operators redirect and chain
    run_script(["utils/run.pl", log, "printf", "%s|", "$HOME", "[1,2]", "f(x)", "*", "x;y", ">", f"{tmp_path}/out",
                "&&", "echo", "done"])
    assert read(f"{tmp_path}/out") == "$HOME|[1,2]|f(x)|*|x;y|"
    assert "\ndone\n" in read(log)
    proc = run_script(["utils/run.pl", "JOB=1:2", f"{tmp_path}/nojob.log", "true"], check=False)
    assert proc.returncode != 0 and "does not contain 'JOB'" in proc.stderr
    assert not glob.glob(f"{tmp_path}/nojob*")
    assert run_script(["utils/run.pl", "JOB=3:1", f"{tmp_path}/x.JOB.log", "true"], check=False).returncode != 0
    assert run_script(["utils/run.pl"], check=False).returncode != 0
    assert not os.path.exists(f"{tmp_path}/x.3.log")
