"""Benchmark: training crops from raw audio vs from arks, and the device frontend vs the model's step.

Makes a temporary data dir of real speech (Arabic Speech Commands files
joined into utterances of --seconds, repeated up to --utts, written as wav)
with its fbank in a compressed ark (as steps/make_fbank.sh writes it), then
  1. loader items/s in one process: pyspk.train.data.CropDataset on feats.scp
     vs pyspk.train.wav_data.WavCropDataset on wav.scp, the same crops
     (the --config's: conf/dino_ecapa.yaml's 2 x 300 + 4 x 200 frames);
  2. per batch: online augmentation + torch fbank on the device
     (pyspk.train.online_aug.WavFrontend, generated noise banks) vs the
     objective's forward+backward+update on a batch of the same shape
     (bench/train_step.py's BareStep), and their ratio (aim <= 0.15).

Usage: python bench/loader.py [--config conf/dino_ecapa.yaml] [--utts 64] [--batch 8] [--reps 3]
           [--device auto] [section.key=value ...]
e.g.: python bench/loader.py --batch 4 model.channels=256
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_step import BareStep, sync

from pyspk.config import load_config
from pyspk.device import pick_device
from pyspk.features.fbank import ArkScpWriter, FbankConfig, compute_fbank
from pyspk.train.data import CropDataset
from pyspk.train.objectives import objective_of
from pyspk.train.online_aug import WavFrontend
from pyspk.train.wav_data import WavCropDataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "..", "shared", "data", "arabic_speech_commands", "dataset")
FBANK_CONF = os.path.join(ROOT, "conf", "fbank.conf")


def make_speech_dir(path, utts, seconds, fbank):
    """``utts`` wav utterances of about ``seconds`` joined from real speech files (repeated), with fbank arks."""
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(CORPUS) for f in names if f.endswith(".flac"))
    rng = np.random.default_rng(0)
    originals = [os.path.join(path, f"orig{i}.wav") for i in range(min(utts, 16))]
    for wav in originals:
        parts = [sf.read(files[i], dtype="int16")[0] for i in rng.choice(len(files), size=int(seconds))]
        sf.write(wav, np.concatenate(parts), 16000, subtype="PCM_16")
    with open(os.path.join(path, "wav.scp"), "w") as scp:
        scp.writelines(f"u{i:04d} {originals[i % len(originals)]}\n" for i in range(utts))
    with ArkScpWriter(os.path.join(path, "feats.ark"), os.path.join(path, "feats.scp"), compress=True) as writer:
        for i in range(utts):
            audio, _ = sf.read(originals[i % len(originals)], dtype="float32")
            writer.write(f"u{i:04d}", compute_fbank(audio * 32768.0, fbank))


def items_per_second(dataset, count):
    start = time.perf_counter()
    for i in range(count):
        dataset[(i % len(dataset), 0)]
    return count / (time.perf_counter() - start)


def time_frontend(front, dataset, batch, reps, device):
    items = [dataset[(i % len(dataset), 0)]["crops"] for i in range(batch)]
    crops = {name: torch.stack([item[name] for item in items]).to(device) for name in items[0]}
    front(crops, 0)  # warm-up
    times = []
    for step in range(1, reps + 1):
        sync(device)
        start = time.perf_counter()
        front(crops, step)
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.mean(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="conf/dino_ecapa.yaml")
    parser.add_argument("--utts", type=int, default=64, help="utterances read per loader measurement")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each utterance")
    parser.add_argument("--batch", type=int, default=8, help="batch size of the frontend and model timing")
    parser.add_argument("--reps", type=int, default=3, help="timed batches of each kind")
    parser.add_argument("--device", default="auto")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    config = load_config(args.config, [*args.overrides, f"data.batch_size={args.batch}"])
    device = pick_device(args.device)
    fbank = FbankConfig.from_file(FBANK_CONF)
    crops = config["data"]["crops"]
    shapes = ", ".join(f"{spec['count']}x{spec['frames']}" for spec in crops.values())
    print(f"device {device}, torch threads {torch.get_num_threads()}, model {config['model']['name']}, "
          f"crops {shapes}, batch {args.batch}")
    with tempfile.TemporaryDirectory(prefix="pyspk-bench-") as tmp:
        make_speech_dir(tmp, args.utts, args.seconds, fbank)
        feats = CropDataset(tmp, crops, seed=1)
        wav = WavCropDataset(tmp, crops, fbank, seed=1, aug_prob=float(config["data"].get("aug_prob", 0.6)))
        items_per_second(wav, 4)  # warm-up (imports, file cache)
        from_arks, from_audio = items_per_second(feats, args.utts), items_per_second(wav, args.utts)
        print(f"loader, one process: arks {from_arks:8.1f} items/s, raw audio {from_audio:8.1f} items/s "
              f"(ratio {from_audio / from_arks:.2f})")
        front = WavFrontend(fbank, {}, wav.aug_prob, seed=1, rank=0, device=device, speech=wav.speech_clips)
        plain = WavFrontend(fbank, None, wav.aug_prob, seed=1, rank=0, device=device)
        aug_time = time_frontend(front, wav, args.batch, args.reps, device)
        fbank_time = time_frontend(plain, wav, args.batch, args.reps, device)
        bare_step = BareStep(objective_of(config, args.config), config, tmp, device, 100)
    bare = statistics.mean(bare_step.time_steps(args.reps + 1)[1:])
    print(f"per batch: augmentation + fbank {aug_time * 1000:8.1f} ms (fbank alone {fbank_time * 1000:.1f} ms), "
          f"forward+backward+update {bare * 1000:8.1f} ms")
    print(f"frontend / step ratio: {aug_time / bare:.3f} (aim <= 0.15)")


if __name__ == "__main__":
    main()
