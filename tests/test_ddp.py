"""DDP on CPU: two gloo processes under torchrun stay in sync; only rank 0 writes."""

import csv
import os
import subprocess
import sys

import torch
from conftest import ROOT

from pyspk.train.synthetic import make_feats_data_dir

# Runs the trainer under torchrun, then dumps this rank's modules for the test to compare.
WORKER = """
import os, sys, torch
from pyspk.config import load_config
from pyspk.ssl.dino import DINOObjective
from pyspk.train.trainer import Trainer
config_path, data, exp, *overrides = sys.argv[1:]
objective = DINOObjective()
Trainer(objective, load_config(config_path, overrides), data, exp, device="cpu").run()
torch.save({"student": dict(objective.student.named_parameters()),
            "teacher": objective.teacher.state_dict(), "center": objective.loss_fn.center},
           os.path.join(exp, "..", f"rank{os.environ['RANK']}.pt"))
"""


def test_two_gloo_processes_stay_in_sync(tmp_path):
    data = make_feats_data_dir(str(tmp_path / "data"), n_spk=4, n_utt=4, min_frames=30, max_frames=120,
                               feat_dim=40, copies=("reverb",))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    exp = tmp_path / "exp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
               os.path.join(ROOT, "conf", "dino_tiny.yaml"), data, str(exp), "model.feat_dim=40",
               "train.epochs=2", "train.log_every=1", "train.ckpt_every_steps=0", "data.channel.prob=0.5"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, value in ranks[0]["student"].items():
        assert torch.equal(value, ranks[1]["student"][name]), f"student {name}"
    for name, value in ranks[0]["teacher"].items():
        assert torch.equal(value, ranks[1]["teacher"][name]), f"teacher {name}"
    assert torch.equal(ranks[0]["center"], ranks[1]["center"])
    # The teacher moved away from its initial copy of the student, and both were trained.
    assert not torch.equal(ranks[0]["student"]["head.mlp.0.weight"], ranks[0]["teacher"]["head.mlp.0.weight"])

    # 16 utterances / (2 processes x batch 4) = 2 steps per epoch; one metrics row per step, from rank 0 only.
    with open(exp / "metrics.tsv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f, delimiter="\t")] == [1, 2, 3, 4]
    assert sorted(os.listdir(exp / "checkpoints")) == ["ckpt-e1-s2.pt", "ckpt-e2-s4.pt"]
    assert (exp / "final.pt").is_file() and (exp / ".done").is_file()
    log = (exp / "log" / "train.log").read_text()
    assert "2 process(es), 2 steps/epoch" in log
