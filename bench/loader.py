"""Benchmark: training crops from raw audio vs from arks, and the device frontend vs the model's step.

Makes a temporary data dir of real speech (Arabic Speech Commands files
joined into utterances of --seconds, repeated up to --utts) per audio format
of --formats (16-bit wav, 16-bit flac) with its fbank in a compressed ark (as
steps/make_fbank.sh writes it), then
  1. per format, loader items/s in one process: pyspk.train.data.CropDataset
     on feats.scp vs pyspk.train.wav_data.WavCropDataset on wav.scp, the same
     crops (the --config's: conf/dino_ecapa.yaml's 2 x 300 + 4 x 200 frames),
     fresh datasets (as each epoch's fresh loader workers) alternated --reps
     times, medians; and what bounds their ratio: reading whole utterances,
     audio (decoding) vs ark (decompressing), in ms per second of speech;
  2. per batch: online augmentation + torch fbank on the device
     (pyspk.train.online_aug.WavFrontend, generated noise banks) vs the
     objective's forward+backward+update on a batch of the same shape
     (bench/train_step.py's BareStep), and their ratio (aim <= 0.15).

Loader, raw audio / arks in one run (2 CPU cores shared with other jobs, so
the ratios mean more than the items/s), python bench/loader.py --loader-only --reps 5:
  before (e71d928: a file opening, a seek and a float read per crop):
    wav 0.25 (138 vs 554 items/s), flac 0.11 (105 vs 917)
  after (one opening per item, crops under 1 s apart in one int16 read):
    wav 2.17 (1911 vs 881 items/s), flac 0.49 (416 vs 856)
FLAC is bounded by its decoding (libsndfile 1.2.2's libFLAC): a whole utterance
costs 0.34 ms per second of speech against 0.08 ms for its compressed ark
(wav: 0.03 ms), and a 6 s utterance's crops cover most of it. With --seconds 20
(the ark decompressed whole, the audio only around the crops): wav 8.8, flac 1.15.

Usage: python bench/loader.py [--config conf/dino_ecapa.yaml] [--utts 64] [--formats wav,flac] [--batch 8]
           [--reps 3] [--device auto] [--loader-only] [section.key=value ...]
e.g.: python bench/loader.py --batch 4 model.channels=256
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import kaldiio
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


def make_speech_dir(path, utts, seconds, fbank, audio_format):
    """``utts`` utterances of about ``seconds`` joined from real speech files (repeated), with fbank arks."""
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(CORPUS) for f in names if f.endswith(".flac"))
    rng = np.random.default_rng(0)
    originals = [os.path.join(path, f"orig{i}.{audio_format}") for i in range(min(utts, 16))]
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


def time_loaders(path, crops, fbank, aug_prob, utts, reps):
    """Median items/s of the ark and raw-audio datasets, each rep on fresh datasets (nothing cached)."""
    rates = {"arks": [], "audio": []}
    for _ in range(reps):
        feats = CropDataset(path, crops, seed=1)
        wav = WavCropDataset(path, crops, fbank, seed=1, aug_prob=aug_prob)
        rates["arks"].append(items_per_second(feats, utts))
        rates["audio"].append(items_per_second(wav, utts))
    return statistics.median(rates["arks"]), statistics.median(rates["audio"])


def whole_read_ms_per_second(path, reps):
    """ms per second of speech to read whole utterances: audio decoded to int16 vs the compressed ark."""
    feats = kaldiio.load_scp(os.path.join(path, "feats.scp"))
    with open(os.path.join(path, "wav.scp")) as f:
        audio = dict(line.split() for line in f)
    seconds = sum(sf.info(file).duration for file in audio.values())
    times = {"audio": [], "ark": []}
    for _ in range(reps):
        start = time.perf_counter()
        for file in audio.values():
            sf.read(file, dtype="int16")
        times["audio"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for utt in audio:
            feats[utt]
        times["ark"].append(time.perf_counter() - start)
    return {kind: statistics.median(t) * 1000 / seconds for kind, t in times.items()}


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
    parser.add_argument("--formats", default="wav,flac", help="audio formats of the loader measurements")
    parser.add_argument("--batch", type=int, default=8, help="batch size of the frontend and model timing")
    parser.add_argument("--reps", type=int, default=3, help="timed loader passes and batches of each kind")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--loader-only", action="store_true",
                        help="measure the loaders alone (the model's step takes a minute on a CPU)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    config = load_config(args.config, [*args.overrides, f"data.batch_size={args.batch}"])
    device = pick_device(args.device)
    fbank = FbankConfig.from_file(FBANK_CONF)
    crops, aug_prob = config["data"]["crops"], float(config["data"].get("aug_prob", 0.6))
    shapes = ", ".join(f"{spec['count']}x{spec['frames']}" for spec in crops.values())
    print(f"device {device}, torch threads {torch.get_num_threads()}, model {config['model']['name']}, "
          f"crops {shapes}, batch {args.batch}")
    with tempfile.TemporaryDirectory(prefix="pyspk-bench-") as tmp:
        for audio_format in args.formats.split(","):
            path = os.path.join(tmp, audio_format)
            os.mkdir(path)
            make_speech_dir(path, args.utts, args.seconds, fbank, audio_format)
            time_loaders(path, crops, fbank, aug_prob, 4, 1)  # warm-up (imports, file cache)
            from_arks, from_audio = time_loaders(path, crops, fbank, aug_prob, args.utts, args.reps)
            whole = whole_read_ms_per_second(path, args.reps)
            print(f"loader, one process, {audio_format:4s}: arks {from_arks:7.1f} items/s, raw audio "
                  f"{from_audio:7.1f} items/s (ratio {from_audio / from_arks:.2f}); whole utterances: "
                  f"audio {whole['audio']:.3f} ms, ark {whole['ark']:.3f} ms per second of speech")
        if args.loader_only:
            return
        wav = WavCropDataset(path, crops, fbank, seed=1, aug_prob=aug_prob)
        front = WavFrontend(fbank, {}, wav.aug_prob, seed=1, rank=0, device=device, speech=wav.speech_clips)
        plain = WavFrontend(fbank, None, wav.aug_prob, seed=1, rank=0, device=device)
        aug_time = time_frontend(front, wav, args.batch, args.reps, device)
        fbank_time = time_frontend(plain, wav, args.batch, args.reps, device)
        bare_step = BareStep(objective_of(config, args.config), config, path, device, 100)
    bare = statistics.mean(bare_step.time_steps(args.reps + 1)[1:])
    print(f"per batch: augmentation + fbank {aug_time * 1000:8.1f} ms (fbank alone {fbank_time * 1000:.1f} ms), "
          f"forward+backward+update {bare * 1000:8.1f} ms")
    print(f"frontend / step ratio: {aug_time / bare:.3f} (aim <= 0.15)")


if __name__ == "__main__":
    main()
