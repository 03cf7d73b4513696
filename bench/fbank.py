"""Benchmark steps/make_fbank.sh against a bare kaldi-native-fbank loop on the same audio.

Usage:
  tools/venv/bin/python bench/fbank.py [--minutes 3] [--utt-seconds 6] [--compress true]

Writes a few minutes of 16 kHz audio to a temp dir, then times
 (1) ``steps/make_fbank.sh --nj 1`` (process start, audio reading, fbank,
     compressed ark writing, merging, validation), and
 (2) an in-process loop: soundfile read + kaldi-native-fbank, nothing written.
Prints times real time per core (audio seconds / seconds, by wall clock and
by CPU time) and the script/bare time ratio.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import kaldi_native_fbank as knf
import numpy as np
import soundfile as sf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pyspk.features.fbank import FbankConfig  # noqa: E402


def make_data_dir(path, minutes, utt_seconds):
    """Write tone-plus-noise wavs and a wav.scp/utt2spk/spk2utt data dir; return (dir, wav paths)."""
    rng = np.random.default_rng(0)
    rate = 16000
    num_utts = max(1, round(minutes * 60 / utt_seconds))
    t = np.arange(int(utt_seconds * rate)) / rate
    data = os.path.join(path, "data")
    os.makedirs(data)
    wavs = []
    for i in range(num_utts):
        audio = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.05 * rng.standard_normal(len(t))
        wav = os.path.join(path, f"utt{i:04d}.wav")
        sf.write(wav, audio.astype(np.float32), rate, subtype="PCM_16")
        wavs.append(wav)
    utts = [f"spk{i % 4}-utt{i:04d}" for i in range(num_utts)]
    order = sorted(range(num_utts), key=lambda i: utts[i])
    with open(os.path.join(data, "wav.scp"), "w") as f:
        f.writelines(f"{utts[i]} {wavs[i]}\n" for i in order)
    with open(os.path.join(data, "utt2spk"), "w") as f:
        f.writelines(f"{utts[i]} {utts[i].split('-')[0]}\n" for i in order)
    with open(os.path.join(data, "spk2utt"), "w") as f:
        for spk in sorted({u.split("-")[0] for u in utts}):
            f.write(spk + " " + " ".join(sorted(u for u in utts if u.startswith(spk + "-"))) + "\n")
    return data, wavs, num_utts * utt_seconds


def cpu_seconds(who):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def bare_loop(wavs, config):
    frames = 0
    for wav in wavs:
        samples, _ = sf.read(wav, dtype="int16")
        extractor = knf.OnlineFbank(config.options)
        extractor.accept_waveform(config.sample_rate, samples.astype(np.float32))
        extractor.input_finished()
        feats = np.stack([extractor.get_frame(i) for i in range(extractor.num_frames_ready)])
        frames += feats.shape[0]
    return frames


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="total audio (default: %(default)s)")
    parser.add_argument("--utt-seconds", type=float, default=6.0,
                        help="length of each utterance (default: %(default)s)")
    parser.add_argument("--compress", default="true", choices=["true", "false"], help="make_fbank.sh --compress")
    args = parser.parse_args()
    config = FbankConfig.from_file(os.path.join(ROOT, "conf", "fbank.conf"))

    with tempfile.TemporaryDirectory() as tmp:
        data, wavs, audio_seconds = make_data_dir(tmp, args.minutes, args.utt_seconds)
        env = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
        cpu0, wall0 = cpu_seconds(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(["steps/make_fbank.sh", "--nj", "1", "--compress", args.compress, data], cwd=ROOT, env=env,
                       check=True, stdout=subprocess.DEVNULL)
        script_wall = time.perf_counter() - wall0
        script_cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0

        cpu0, wall0 = cpu_seconds(resource.RUSAGE_SELF), time.perf_counter()
        bare_loop(wavs, config)
        bare_wall = time.perf_counter() - wall0
        bare_cpu = cpu_seconds(resource.RUSAGE_SELF) - cpu0

    print(f"audio: {audio_seconds / 60:.1f} min in {len(wavs)} utterances of {args.utt_seconds:g} s, "
          f"{config.dim}-dim fbank, compress={args.compress}")
    print(f"{'':28s}{'wall s':>8s}{'cpu s':>8s}{'x RT (wall)':>13s}{'x RT (cpu)':>12s}")
    for name, wall, cpu in (("make_fbank.sh --nj 1", script_wall, script_cpu),
                            ("bare kaldi-native-fbank", bare_wall, bare_cpu)):
        print(f"{name:28s}{wall:8.2f}{cpu:8.2f}{audio_seconds / wall:13.0f}{audio_seconds / cpu:12.0f}")
    print(f"script/bare time ratio: {script_wall / bare_wall:.2f} (wall), {script_cpu / bare_cpu:.2f} (cpu)")


if __name__ == "__main__":
    main()
