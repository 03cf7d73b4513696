"""Multi-node DDP on localhost: 2 "nodes" x 1 gloo process stay in sync; --node-rank/--master-addr slurm."""

import os
import subprocess
import sys

import torch
from conftest import ROOT, free_port, run_script
from test_ddp import WORKER

from pyspk.train.synthetic import make_feats_data_dir


def test_two_nodes_stay_in_sync(tmp_path):
    data = make_feats_data_dir(str(tmp_path / "data"), n_spk=4, n_utt=4, min_frames=30, max_frames=120,
                               feat_dim=40, copies=("reverb",))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    exp = tmp_path / "exp"
    port = str(free_port())
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    nodes = []
    for node_rank in (0, 1):
        # What steps/train_*.sh --num-nodes 2 --node-rank i --master-addr 127.0.0.1 runs on node i.
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node_rank),
                   "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", port, str(script),
                   os.path.join(ROOT, "conf", "dino_tiny.yaml"), data, str(exp), "model.feat_dim=40",
                   "train.epochs=1", "train.ckpt_every_steps=0"]
        nodes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-3000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for part in ("student", "teacher"):
        for name, value in ranks[0][part].items():
            assert torch.equal(value, ranks[1][part][name]), f"{part} {name}"
    assert "2 process(es), 2 steps/epoch" in (exp / "log" / "train.log").read_text()


LAUNCH = """set -euo pipefail
. {root}/steps/libs/train_launch.sh
set_launcher 1 2 "$1" "$2" 29600
echo "${{launcher[*]}}"
"""


def test_node_rank_and_master_from_slurm(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"  # as Slurm's: one host per line
    scontrol.write_text('#!/bin/sh\n'
                        '[ "$1 $2" = "show hostnames" ] && [ "$3" = "gpu[07-08]" ] && printf "gpu07\\ngpu08\\n"\n')
    scontrol.chmod(0o755)
    script = tmp_path / "launch.sh"
    script.write_text(LAUNCH.format(root=ROOT))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]"}
    proc = run_script(["bash", str(script), "slurm", "slurm"], env=env)
    assert "--nnodes 2 --node-rank 1 --nproc-per-node 1 --master-addr gpu07 --master-port 29600" in proc.stdout

    proc = run_script(["bash", str(script), "slurm", "slurm"], env={"SLURM_NODEID": ""}, check=False)
    assert proc.returncode == 1 and "--node-rank slurm needs to run under srun" in proc.stderr
    proc = run_script(["bash", str(script), "2", "127.0.0.1"], check=False)
    assert proc.returncode == 1 and "--node-rank must be in 0..1 or slurm, got '2'" in proc.stderr
