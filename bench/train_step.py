"""Benchmark: a trainer step (data path included) vs a bare step, and extraction speed.

Makes a temporary synthetic fbank data dir, then, for the config's objective
(DINO by default; e.g. the pseudo-label classifier with conf/classifier_demo.yaml)
  1. runs the real trainer (pyspk.train.trainer.Trainer) and reads its per-step
     wall time (loading, augmentation, transfer, forward, backward, optimiser,
     EMA) from metrics.tsv;
  2. times the same objective's step on one random batch of the same shape
     already on the device (no data path);
  alternating the two in --rounds rounds (the trainer resumes each time) so
  that load from other processes affects both alike;
  3. prints both and their ratio (aim: <= 1.15), then the extraction speed of
     the exported (default) backbone in x real time (10 ms frames).

Usage: python bench/train_step.py [--config conf/dino_demo.yaml] [--steps 24] [--rounds 4]
           [--device auto] [section.key=value ...]
e.g.: python bench/train_step.py --steps 30 data.num_workers=0
      python bench/train_step.py --config conf/classifier_demo.yaml classifier.subcenters=3
"""

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyspk.config import load_config
from pyspk.device import pick_device
from pyspk.models import extract_embeddings
from pyspk.train.objectives import objective_of
from pyspk.train.optim import build_optimizer, clip_gradients
from pyspk.train.synthetic import make_feats_data_dir
from pyspk.train.trainer import Trainer


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_round(objective_class, config, data_dir, exp_dir, stop_step, device):
    """Run (or resume) the real trainer up to ``stop_step``; per-step times of its metrics rows."""
    config = dict(config, train=dict(config["train"], log_every=1, ckpt_every_steps=0, epochs=1000))
    Trainer(objective_class(data_dir), config, data_dir, exp_dir, device=str(device)).run(max_steps=stop_step)
    with open(os.path.join(exp_dir, "metrics.tsv"), encoding="utf-8") as f:
        return {int(r["step"]): (float(r["sec_per_step"]), float(r["data_sec_per_step"]))
                for r in csv.DictReader(f, delimiter="\t")}


class BareStep:
    """The same objective's step on one random batch of the training shape, already on the device."""

    def __init__(self, objective_class, config, data_dir, device, steps_per_epoch):
        torch.manual_seed(0)
        self.objective = objective_class(data_dir)
        self.objective.build(config, steps_per_epoch, steps_per_epoch * 1000, device)
        self.model = self.objective.trainable()
        self.model.train()
        self.optimizer = build_optimizer(self.objective.param_groups(self.model), config["optim"])
        for group in self.optimizer.param_groups:
            group["lr"] = 0.01
        batch_size, feat_dim = int(config["data"]["batch_size"]), int(config["model"].get("feat_dim", 80))
        crops = {name: torch.randn(batch_size, int(spec["count"]), int(spec["frames"]), feat_dim, device=device)
                 + 8.0 for name, spec in config["data"]["crops"].items()}
        self.batch = {"crops": crops, "index": torch.arange(batch_size)}
        self.clip = float(config["optim"].get("clip_grad", 0.0))
        self.clip_mode = config["optim"].get("clip_mode", "global")
        self.device = device
        self.step = 0

    def time_steps(self, count):
        times = []
        for _ in range(count):
            sync(self.device)
            start = time.perf_counter()
            loss, _ = self.objective.compute_loss(self.model, self.batch, self.step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.objective.after_backward(self.step)
            clip_gradients(list(self.model.parameters()), self.clip, self.clip_mode)
            self.optimizer.step()
            self.objective.after_step(self.step)
            float(loss.detach())  # the trainer also reads the loss every logged step
            sync(self.device)
            times.append(time.perf_counter() - start)
            self.step += 1
        return times


def extraction_speed(backbone, device, feat_dim, n_utts=40, seconds=8.0):
    rng = np.random.default_rng(0)
    frames = int(seconds * 100)
    feats = [(f"u{i}", (rng.standard_normal((frames, feat_dim)) + 8.0).astype(np.float32)) for i in range(n_utts)]
    list(extract_embeddings(backbone, feats[:4], device=device))  # warm-up
    sync(device)
    start = time.perf_counter()
    count = sum(1 for _ in extract_embeddings(backbone, feats, device=device))
    sync(device)
    elapsed = time.perf_counter() - start
    return count * seconds / elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="conf/dino_demo.yaml")
    parser.add_argument("--steps", type=int, default=24, help="timed steps of each kind, over all rounds")
    parser.add_argument("--rounds", type=int, default=4, help="alternations of trainer and bare timing")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--utts", type=int, default=256, help="synthetic utterances (each with 2 copies)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    objective_class = objective_of(config, args.config)
    device = pick_device(args.device)
    if int(config["train"].get("threads", 0)) > 0:
        torch.set_num_threads(int(config["train"]["threads"]))
    batch = int(config["data"]["batch_size"])
    crops = ", ".join(f"{s['count']}x{s['frames']}" for s in config["data"]["crops"].values())
    print(f"objective {config['objective']}, device {device}, torch threads {torch.get_num_threads()}, "
          f"model {config['model']['name']}, batch {batch}, crops {crops}, "
          f"num_workers {config['data'].get('num_workers', 0)}")
    # Rounds alternate the two measurements, so a change in machine load hits both alike;
    # the first step of every round (worker start, resume) is left out.
    full, data_wait, bare = [], [], []
    with tempfile.TemporaryDirectory(prefix="pyspk-bench-") as tmp:
        data_dir = make_feats_data_dir(os.path.join(tmp, "data"), n_spk=max(args.utts // 16, 1), n_utt=16,
                                       min_frames=200, max_frames=800,
                                       feat_dim=int(config["model"].get("feat_dim", 80)), copies=("reverb", "noise"))
        exp_dir = os.path.join(tmp, "exp")
        bare_step = None
        per_round = args.steps // args.rounds + 1
        for r in range(args.rounds):
            rows = trainer_round(objective_class, config, data_dir, exp_dir, (r + 1) * per_round, device)
            for step in range(r * per_round + 2, (r + 1) * per_round + 1):
                full.append(rows[step][0])
                data_wait.append(rows[step][1])
            if bare_step is None:
                bare_step = BareStep(objective_class, config, data_dir, device, max(args.utts // batch, 1))
            bare.extend(bare_step.time_steps(per_round)[1:])
        objective = bare_step.objective
    full_mean, bare_mean = statistics.mean(full), statistics.mean(bare)
    print(f"trainer step (data path included): {full_mean * 1000:8.1f} ms  "
          f"(median {statistics.median(full) * 1000:.1f}, waiting for data {statistics.mean(data_wait) * 1000:.1f})")
    print(f"bare forward+backward+update:      {bare_mean * 1000:8.1f} ms  "
          f"(median {statistics.median(bare) * 1000:.1f})")
    print(f"data-path overhead ratio:          {full_mean / bare_mean:8.3f}  "
          f"(medians {statistics.median(full) / statistics.median(bare):.3f}; aim <= 1.15)")
    backbones, default = objective.backbones()
    speed = extraction_speed(backbones[default], device, int(config["model"].get("feat_dim", 80)))
    print(f"extraction ({default} backbone, 8 s utterances): {speed:8.1f} x real time")


if __name__ == "__main__":
    main()
