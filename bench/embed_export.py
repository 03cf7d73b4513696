"""Embedding speed of a backbone run by PyTorch eager, TorchScript and onnxruntime, in one run.

Usage:
  tools/venv/bin/python bench/embed_export.py [--models resnet_thin ecapa_128] [--seconds 60] [--chunk-frames 300]
      [--batch 8] [--threads 2] [--repeats 3]

For each model (bench/models.py's configs, random weights) the backbone is
exported as pyspk export does (pyspk/models/export.py), then each runtime
embeds the same --seconds of 80-dim features (chunks of --chunk-frames
frames, 100 per second, in batches of --batch) on the CPU with --threads
threads; on CUDA, when available, eager and TorchScript too. Each is timed
--repeats times and the fastest kept (the machine may be shared). Prints
seconds of audio embedded per second (x real time) and the ratio to eager on
the same device, all from this one run; and, for context, eager from audio
(pyspk.load's path: conf/fbank.conf fbank, then the backbone).
"""

import argparse
import os
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.models import CONFIGS, best_time  # noqa: E402  (bench/ is not a package on the path by itself)
from pyspk.features.fbank import FbankConfig  # noqa: E402
from pyspk.features.vad import VadConfig  # noqa: E402
from pyspk.models import build_model  # noqa: E402
from pyspk.models.export import ExportError, export_onnx, export_torchscript, onnx_session  # noqa: E402
from pyspk.models.speaker_model import SpeakerModel  # noqa: E402

FRAMES_PER_SECOND = 100


def batches(seconds, chunk_frames, batch, device):
    rng = np.random.default_rng(0)
    num_chunks = max(1, round(seconds * FRAMES_PER_SECOND / chunk_frames))
    chunks = torch.from_numpy(rng.standard_normal((num_chunks, chunk_frames, 80)).astype(np.float32))
    return [chunks[i:i + batch].to(device) for i in range(0, num_chunks, batch)]


def torch_runner(module, feats):
    def run():
        with torch.inference_mode():
            for x in feats:
                module(x)
        if feats[0].is_cuda:
            torch.cuda.synchronize()
    return run


def ort_runner(session, feats):
    def run():
        for x in feats:
            session.run(None, {"feats": x})
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet_thin", "ecapa_128"], choices=list(CONFIGS))
    parser.add_argument("--seconds", type=float, default=60.0, help="audio seconds embedded per timing")
    parser.add_argument("--chunk-frames", type=int, default=300, help="frames per chunk")
    parser.add_argument("--batch", type=int, default=8, help="chunks per forward pass")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of torch and onnxruntime")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"{args.seconds:g} s of audio as chunks of {args.chunk_frames} frames, batch {args.batch}, "
          f"{args.threads} CPU threads; x real time, best of {args.repeats}; devices: {', '.join(devices)}")
    print(f"{'model':<12} {'device':<6} {'eager':>9} {'torchscript':>12} {'onnxruntime':>12} {'ts/eager':>9} "
          f"{'ort/eager':>10} {'eager from audio':>17}")
    fbank = FbankConfig.from_file(os.path.join(ROOT, "conf", "fbank.conf"))
    rng = np.random.default_rng(1)
    audio = [0.1 * rng.standard_normal(args.chunk_frames * int(fbank.sample_rate) // FRAMES_PER_SECOND)
             .astype(np.float32) for _ in range(max(1, round(args.seconds * FRAMES_PER_SECOND / args.chunk_frames)))]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            torch.manual_seed(0)
            backbone = build_model({**CONFIGS[name], "feat_dim": 80}).eval()
            export_torchscript(backbone, os.path.join(tmp, f"{name}.ts"))
            try:
                export_onnx(backbone, os.path.join(tmp, f"{name}.onnx"))
                session = onnx_session(os.path.join(tmp, f"{name}.onnx"), args.threads)
            except ExportError as e:
                print(f"{name}: no onnxruntime timing: {e}")
                session = None
            for device in devices:
                backbone.to(device)
                feats = batches(args.seconds, args.chunk_frames, args.batch, device)
                audio_seconds = sum(len(x) for x in feats) * args.chunk_frames / FRAMES_PER_SECOND
                eager = audio_seconds / best_time(torch_runner(backbone, feats), args.repeats)
                scripted = torch.jit.load(os.path.join(tmp, f"{name}.ts"), map_location=device)
                ts = audio_seconds / best_time(torch_runner(scripted, feats), args.repeats)
                ort_text, ratio_text = "-", "-"
                if session is not None and device == "cpu":
                    ort = audio_seconds / best_time(ort_runner(session, [x.numpy() for x in feats]), args.repeats)
                    ort_text, ratio_text = f"{ort:.0f}x", f"{ort / eager:.2f}"
                model = SpeakerModel(backbone, fbank, VadConfig(), use_vad=False, chunk_size=args.chunk_frames,
                                     min_chunk_size=min(100, args.chunk_frames), device=device)
                from_audio = len(audio) * args.chunk_frames / FRAMES_PER_SECOND / best_time(
                    lambda model=model: model.embed(audio, sample_rate=fbank.sample_rate, batch_size=args.batch),
                    args.repeats)
                print(f"{name:<12} {device:<6} {eager:>8.0f}x {ts:>11.0f}x {ort_text:>12} {ts / eager:>9.2f} "
                      f"{ratio_text:>10} {from_audio:>16.0f}x", flush=True)


if __name__ == "__main__":
    main()
