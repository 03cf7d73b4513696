"""GPU placement without GPUs: run.pl --gpu hands each job its own CUDA_VISIBLE_DEVICES."""

import os

import pytest
import torch
from conftest import ROOT, run_script

from pyspk.device import process_cuda_device

FAKE_NVIDIA_SMI = """#!/bin/sh
[ "$1" = -L ] || exit 1
i=0
while [ $i -lt {n} ]; do echo "GPU $i: Fake GPU (UUID: GPU-$i)"; i=$((i+1)); done
"""

# Each job records its devices, holds them a while, and fails if another running job holds the same ones.
JOB = ('d=$CUDA_VISIBLE_DEVICES; mkdir {held}/$d || exit 3; echo $d > {out}/JOB; sleep 0.3; rmdir {held}/$d')


@pytest.fixture
def fake_gpus(tmp_path):
    def make(n):
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        smi = bin_dir / "nvidia-smi"
        smi.write_text(FAKE_NVIDIA_SMI.replace("{n}", str(n)))
        smi.chmod(0o755)
        return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return make


def run_jobs(tmp_path, env, gpu_opt, nj=6):
    held, out = tmp_path / "held", tmp_path / "out"
    held.mkdir()
    out.mkdir()
    log = str(tmp_path / "log" / "j.JOB.log")
    proc = run_script([os.path.join(ROOT, "utils", "run.pl"), *gpu_opt, f"JOB=1:{nj}", log,
                       "bash", "-c", JOB.format(held=held, out=out)], env=env, check=False)
    return proc, [(out / str(n)).read_text().strip() if (out / str(n)).exists() else None for n in range(1, nj + 1)]


def test_one_gpu_per_job_from_nvidia_smi(tmp_path, fake_gpus):
    proc, devices = run_jobs(tmp_path, dict(fake_gpus(3), CUDA_VISIBLE_DEVICES=""), ["--gpu", "1"])
    assert proc.returncode == 0, proc.stderr
    assert set(devices) == {"0", "1", "2"}  # 6 jobs on 3 GPUs, never two on one at once
    assert "# CUDA_VISIBLE_DEVICES=" in (tmp_path / "log" / "j.1.log").read_text()


def test_scheduler_devices_and_multi_gpu_jobs(tmp_path, fake_gpus):
    # A scheduler gave us GPUs 4,5,6,7; jobs of 2 GPUs each get 4,5 or 6,7.
    proc, devices = run_jobs(tmp_path, dict(fake_gpus(8), CUDA_VISIBLE_DEVICES="4,5,6,7"), ["--gpu", "2"], nj=4)
    assert proc.returncode == 0, proc.stderr
    assert set(devices) == {"4,5", "6,7"}


def test_too_many_gpus_per_job_fails(tmp_path, fake_gpus):
    proc, _ = run_jobs(tmp_path, dict(fake_gpus(2), CUDA_VISIBLE_DEVICES=""), ["--gpu", "3"], nj=1)
    assert proc.returncode != 0
    assert "--gpu 3 asks for more GPUs than this machine has (2)" in proc.stderr


def test_each_ddp_process_gets_its_own_visible_device(monkeypatch):
    assert [process_cuda_device(r, 4) for r in range(4)] == [torch.device("cuda", r) for r in range(4)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(RuntimeError, match=r"DDP process 1 needs a GPU of its own, but only 1 are visible "
                                           r"\(CUDA_VISIBLE_DEVICES=3\)"):
        process_cuda_device(1, 1)
