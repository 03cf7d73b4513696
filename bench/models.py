"""Time the backbones: a training step (forward + backward) and extraction speed.

Prints, per model: parameters, training-step time for a batch of random
crops, and extraction speed in x real time (100 frames per second) through
pyspk.models.extract_embeddings on 10 s utterances.
e.g.:
  tools/venv/bin/python bench/models.py --threads 2 --batch 32 --frames 200
  tools/venv/bin/python bench/models.py --models resnet_thin ecapa_256
"""

import argparse
import time

import numpy as np
import torch

from pyspk.models import build_model, extract_embeddings

CONFIGS = {
    "resnet_thin": {"name": "resnet_thin"},
    "resnet_thin_w16": {"name": "resnet_thin", "base_width": 16},
    "ecapa_128": {"name": "ecapa", "channels": 128, "mfa_channels": 384, "attention_channels": 64},
    "ecapa_256": {"name": "ecapa", "channels": 256, "mfa_channels": 768},
    "ecapa_512": {"name": "ecapa", "channels": 512},
    "ecapa_1024": {"name": "ecapa", "channels": 1024},
    "tdnn": {"name": "tdnn"},
    "resnet34": {"name": "resnet34"},
}


def best_time(fn, repeats):
    fn()  # warm-up: oneDNN (and onnxruntime) build their kernels on the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=200, help="crop length for the training step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--extract-seconds", type=float, default=60.0, help="audio seconds to embed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    utts = [(f"u{i}", rng.standard_normal((1000, 80)).astype(np.float32))
            for i in range(max(1, int(args.extract_seconds / 10)))]
    print(f"threads {args.threads}, training step on batch {args.batch} x {args.frames} frames; "
          f"extraction of {len(utts)} x 10 s, chunk 1000")
    print(f"{'model':<16} {'params':>8} {'train step':>11} {'extract':>10}")
    for name in args.models:
        model = build_model(CONFIGS[name])
        params = sum(p.numel() for p in model.parameters()) / 1e6
        crops = torch.randn(args.batch, args.frames, 80)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

        def train_step(model=model, optimizer=optimizer, crops=crops):
            model.train()
            optimizer.zero_grad()
            model(crops).pow(2).mean().backward()
            optimizer.step()

        step = best_time(train_step, args.repeats)
        extract = best_time(lambda model=model: list(extract_embeddings(model, utts, 1000, 100, batch_size=8)),
                            args.repeats)
        print(f"{name:<16} {params:>7.2f}M {step:>10.3f}s {len(utts) * 10 / extract:>9.1f}x", flush=True)


if __name__ == "__main__":
    main()
