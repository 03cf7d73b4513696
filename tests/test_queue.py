"""utils/queue.pl (Grid Engine) against a stand-in qsub that runs the array's tasks here, one by one."""

import os

from conftest import ROOT, run_script

# Records its arguments, runs each task of "-t 1:N" as SGE would (SGE_TASK_ID, -o with $TASK_ID), prints
# the job id as "qsub -terse" does. qstat -j then finds no such job: all tasks have finished.
FAKE_QSUB = r"""#!/usr/bin/env bash
echo "$*" > "$(dirname "$0")/qsub.args"
script=${@: -1}
while [ $# -gt 1 ]; do
  case $1 in -t) range=$2; shift;; -o) out=$2; shift;; esac
  shift
done
for ((i = 1; i <= ${range#1:}; i++)); do
  SGE_TASK_ID=$i bash "$script" > "${out//\$TASK_ID/$i}" 2>&1
done
echo "4242.1-${range#1:}:1"
"""


def fake_grid(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("qsub", FAKE_QSUB), ("qstat", "#!/bin/sh\nexit 1\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir, {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_queue_pl_job_array(tmp_path):
    bin_dir, env = fake_grid(tmp_path)
    log = tmp_path / "log" / "x.JOB.log"
    proc = run_script([os.path.join(ROOT, "utils", "queue.pl"), "--mem", "2G", "--max-jobs-run", "2", "JOB=1:3",
                       str(log), "echo", "job JOB", "|", "tr", "a-z", "A-Z"], env=env)
    assert "submitted job 4242 (3 job(s)" in proc.stderr and "qdel 4242" in proc.stderr
    args = (bin_dir / "qsub.args").read_text()
    assert args.startswith("-v PATH -cwd -S /bin/bash -j y -l arch=*64* -tc 2 -l mem_free=2G,ram_free=2G -t 1:3 ")
    for n in (1, 2, 3):
        lines = (tmp_path / "log" / f"x.{n}.log").read_text().splitlines()
        assert lines[0] == f"# echo job {n} | tr a-z A-Z"
        assert f"JOB {n}" in lines
        assert lines[-1].startswith("# Ended (code 0)")


def test_queue_pl_failing_job_and_unknown_option(tmp_path):
    _, env = fake_grid(tmp_path)
    log = tmp_path / "log" / "x.JOB.log"
    proc = run_script([os.path.join(ROOT, "utils", "queue.pl"), "JOB=1:2", str(log), "test", "JOB", "=", "1"],
                      env=env, check=False)
    assert proc.returncode == 1
    assert f"1 / 2 failed, log is in {tmp_path}/log/x.2.log" in proc.stderr
    assert (tmp_path / "log" / "x.2.log").read_text().splitlines()[-1].startswith("# Ended (code 1)")

    proc = run_script([os.path.join(ROOT, "utils", "queue.pl"), "--partition", "gpu", str(tmp_path / "y.log"), "true"],
                      env=env, check=False)
    assert proc.returncode != 0
    assert "queue.pl: option --partition is not declared in conf/queue.conf" in proc.stderr
