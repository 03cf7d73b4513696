"""steps/libs/common.sh: the helpers the steps source (launching with a log, failed jobs, checks)."""

import subprocess

import pytest
from conftest import ROOT


def run_bash(tmp_path, body):
    """Runs <body> in a "set -euo pipefail" script named x.sh that sourced path.sh and common.sh."""
    script = tmp_path / "x.sh"
    script.write_text(f"#!/usr/bin/env bash\nset -euo pipefail\n. {ROOT}/path.sh\n"
                      f". {ROOT}/steps/libs/common.sh\n{body}\n")
    script.chmod(0o755)
    return subprocess.run([str(script)], cwd=tmp_path, capture_output=True, text=True, check=False)


def test_run_or_die_shows_the_end_of_the_log(tmp_path):
    proc = run_bash(tmp_path, 'run_or_die run.pl log/a.log "the thing" bash -c "echo ran; exit 3"\necho after')
    assert proc.returncode == 1 and "after" not in proc.stdout
    assert "x.sh: the thing failed; the end of log/a.log:" in proc.stderr and "ran" in proc.stderr
    proc = run_bash(tmp_path, 'run_or_die run.pl log/b.log thing echo fine\necho after')
    assert proc.returncode == 0 and proc.stdout == "after\n" and proc.stderr == ""
    assert "fine" in (tmp_path / "log" / "b.log").read_text()


def test_run_or_die_gives_other_nodes_their_own_log(tmp_path):
    proc = run_bash(tmp_path, "launch_node_rank=2\nrun_or_die run.pl log/train.log training false")
    assert proc.returncode == 1 and "training failed; the end of log/train.node2.log:" in proc.stderr
    assert (tmp_path / "log" / "train.node2.log").exists() and not (tmp_path / "log" / "train.log").exists()


def test_run_jobs_or_die_names_the_failed_jobs(tmp_path):
    proc = run_bash(tmp_path, 'run_jobs_or_die run.pl 3 log/x.JOB.log counting '
                              'bash -c "echo job JOB; [ JOB = 1 ]"\necho after')
    assert proc.returncode == 1 and "after" not in proc.stdout
    assert "x.sh: counting jobs 2 3 of 3 failed (logs: log/x.*.log)" in proc.stderr
    assert "x.sh: counting job 2 failed; the end of log/x.2.log:" in proc.stderr
    assert "job 2" in proc.stderr and "job 1" not in proc.stderr  # only the first failed log's end
    proc = run_bash(tmp_path, 'run_jobs_or_die run.pl 2 log/y.JOB.log counting echo JOB\necho after')
    assert proc.returncode == 0 and proc.stdout == "after\n"


def test_show_failed_jobs_without_a_log(tmp_path):
    proc = run_bash(tmp_path, "mkdir -p log; echo '# Ended (code 0)' > log/z.1.log\n"
                              "show_failed_jobs 2 log/z.JOB.log synthesis")
    assert proc.returncode == 0
    assert proc.stderr.endswith("x.sh: synthesis job 2 failed without writing its log log/z.2.log\n")


@pytest.mark.parametrize("body,message", [
    ("touch a; require_files a b", "x.sh: no such file b"),
    ("nj=0; check_positive_ints nj", "x.sh: --nj must be a positive integer, got '0'"),
    ("batch_size=2x; check_positive_ints batch_size", "--batch-size must be a positive integer, got '2x'"),
    ("max_fail_fraction=1.5; check_fractions max_fail_fraction", "--max-fail-fraction must be in [0, 1], got '1.5'"),
])
def test_checks_fail_naming_what(tmp_path, body, message):
    proc = run_bash(tmp_path, body + "\necho after")
    assert proc.returncode == 1 and message in proc.stderr and "after" not in proc.stdout


def test_checks_pass(tmp_path):
    proc = run_bash(tmp_path, "touch a; require_files a; nj=3; check_positive_ints nj\n"
                              "f=0.05; g=1; h=0; check_fractions f g h; echo ok")
    assert proc.returncode == 0 and proc.stdout == "ok\n"


def test_log_names_the_calling_place(tmp_path):
    proc = run_bash(tmp_path, "stage() { log hello; }\nstage")
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("(x.sh:5:stage) hello")
