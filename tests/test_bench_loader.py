"""bench/loader.py runs to its last line on a tiny config (it shares BareStep with bench/train_step.py)."""

import os
import subprocess
import sys

from conftest import ROOT, no_traceback, shared_corpus


def test_loader_bench_runs_on_a_tiny_config():
    shared_corpus("arabic_speech_commands")  # the bench joins real speech files of it
    command = [sys.executable, os.path.join(ROOT, "bench", "loader.py"), "--config",
               os.path.join(ROOT, "conf", "dino_tiny.yaml"), "--utts", "4", "--seconds", "2", "--batch", "2",
               "--reps", "1", "--device", "cpu"]
    proc = subprocess.run(command, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, check=False, timeout=600)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert "frontend / step ratio" in proc.stdout
