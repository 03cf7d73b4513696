"""Benchmark pyspk's torch fbank against kaldi-native-fbank on the same real speech.

Usage:
  tools/venv/bin/python bench/fbank_torch.py [--minutes 5] [--utt-seconds 3] [--batch-sizes 1,16,64] [--threads 1,2]

Joins one-second keywords of ../shared/data/arabic_speech_commands into
utterances of --utt-seconds, repeated to --minutes of audio, then computes
conf/fbank.conf features of all of it with
 (1) kaldi-native-fbank, one utterance at a time (as the extractor does;
     the library is single-threaded), and
 (2) pyspk.features.torch_fbank.TorchFbank in batches of each --batch-sizes,
     on the CPU with each --threads torch thread count, and on CUDA when
     available.
Each is timed --repeats times and the fastest kept (the machine may be
shared). Prints audio seconds per second (x real time), the real-time factor,
and the speed ratio to kaldi-native-fbank, all from this one run.
"""

import argparse
import glob
import os
import sys
import time

import numpy as np
import soundfile as sf
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pyspk.features.fbank import FbankConfig, compute_fbank  # noqa: E402
from pyspk.features.torch_fbank import TorchFbank  # noqa: E402

CORPUS = os.path.join(ROOT, "..", "shared", "data", "arabic_speech_commands", "dataset")


def real_speech(minutes, utt_seconds, rate):
    """Utterances of ``utt_seconds`` of real speech (int16 range, float32), repeated to ``minutes``."""
    files = sorted(glob.glob(os.path.join(CORPUS, "*", "*_NO_01.flac")))[:60]
    if not files:
        sys.exit(f"bench/fbank_torch.py: no audio under {CORPUS}")
    audio = np.concatenate([sf.read(f, dtype="int16")[0].astype(np.float32) for f in files])
    utt_samples = int(utt_seconds * rate)
    utts = [audio[i:i + utt_samples] for i in range(0, len(audio) - utt_samples + 1, utt_samples)]
    num_utts = max(1, round(minutes * 60 / utt_seconds))
    return [utts[i % len(utts)] for i in range(num_utts)]


def time_kaldi_native(utts, config):
    start = time.perf_counter()
    for wave in utts:
        compute_fbank(wave, config)
    return time.perf_counter() - start


def time_torch(utts, fbank, batch_size, device):
    batches = [torch.from_numpy(np.stack(utts[i:i + batch_size])) for i in range(0, len(utts), batch_size)]
    with torch.no_grad():
        fbank(batches[0].to(device))  # warm-up: allocator, FFT plans, CUDA kernels
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for batch in batches:  # includes the copy to the device, as a loader's batch would need
            fbank(batch.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="total audio (default: %(default)s)")
    parser.add_argument("--utt-seconds", type=float, default=3.0,
                        help="length of each utterance (default: %(default)s)")
    parser.add_argument("--batch-sizes", default="1,16,64", help="torch batch sizes (default: %(default)s)")
    parser.add_argument("--threads", default="1,2", help="torch CPU thread counts (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per row, fastest kept (default: %(default)s)")
    args = parser.parse_args()
    config = FbankConfig.from_file(os.path.join(ROOT, "conf", "fbank.conf"))
    utts = real_speech(args.minutes, args.utt_seconds, config.sample_rate)
    audio_seconds = sum(len(u) for u in utts) / config.sample_rate
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    def fastest(timer, *timer_args):
        return min(timer(*timer_args) for _ in range(args.repeats))

    rows = [("kaldi-native-fbank", "cpu", 1, 1, fastest(time_kaldi_native, utts, config))]
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        fbank = TorchFbank(config)
        rows += [("torch", "cpu", threads, b, fastest(time_torch, utts, fbank, b, torch.device("cpu")))
                 for b in batch_sizes]
    if torch.cuda.is_available():
        device = torch.device("cuda")
        fbank = TorchFbank(config).to(device)
        rows += [("torch", "cuda", "-", b, fastest(time_torch, utts, fbank, b, device)) for b in batch_sizes]

    reference = rows[0][4]
    print(f"audio: {audio_seconds / 60:.1f} min of real speech in {len(utts)} utterances of {args.utt_seconds:g} s, "
          f"{config.dim}-dim fbank ({os.path.relpath(config.source, ROOT)})")
    print(f"{'backend':20s}{'device':>7s}{'threads':>8s}{'batch':>6s}{'wall s':>8s}{'x RT':>8s}{'RTF':>9s}"
          f"{'vs knf':>8s}")
    for backend, device, threads, batch, wall in rows:
        print(f"{backend:20s}{device:>7s}{threads!s:>8s}{batch:>6d}{wall:8.2f}{audio_seconds / wall:8.0f}"
              f"{wall / audio_seconds:9.5f}{reference / wall:8.2f}")


if __name__ == "__main__":
    main()
