"""Shared fixtures: tiny data dirs made on the fly (the tests never download)."""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from pyspk.augment.noise import coloured_noise
from pyspk.data.datadir import utt2spk_to_spk2utt, write_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The project's shared real-speech corpora, beside the repository (never copied into it).
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
SHARED_CORPORA = {
    "wuw_corpus_ii": "WUW Corpus II, real 8 kHz telephone speech (V. Kepuska, doi 10.5772/16242), CC BY-SA 4.0",
    "arabic_speech_commands": "Arabic Speech Commands (GitHub abdulkaderghandoura/arabic-speech-commands-dataset), "
                              "CC BY 4.0",
    "speechocean762": "speechocean762, real 16 kHz read English of Mandarin-L1 speakers (Zhang et al., Interspeech "
                      "2021; GitHub jimbozhang/speechocean762), free for commercial and non-commercial use",
}


def shared_corpus(name, module_level=False):
    """The path of shared corpus ``name``; a missing one skips the caller with one line naming the corpus and
    where it comes from, except under CI (CI=true), where its absence is a failure."""
    path = os.path.join(SHARED_DATA, name)
    if os.path.isdir(path):
        return path
    message = f"{path}: no such corpus ({SHARED_CORPORA[name]}; the project's shared files, ../shared/data)"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=module_level)


def synth_voice(rng, f0, formants, seconds, sample_rate=16000):
    """A crude voiced signal: harmonics of ``f0`` shaped by formant peaks, with pauses."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    f0_track = f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t))
    phase = 2 * np.pi * np.cumsum(f0_track) / sample_rate
    signal = np.zeros(n)
    for h in range(1, 30):
        freq = h * f0
        if freq > sample_rate / 2 - 200:
            break
        gain = sum(np.exp(-((freq - fc) ** 2) / (2 * 120.0**2)) for fc in formants) + 0.02
        signal += gain * np.sin(h * phase)
    envelope = (np.sin(2 * np.pi * rng.uniform(1.5, 3.0) * t + rng.uniform(0, 6)) > -0.3).astype(float)
    signal = signal * envelope + 0.01 * rng.standard_normal(n)
    return (0.3 * signal / np.abs(signal).max()).astype(np.float32)


def make_wav_data_dir(path, n_spk=4, n_utt=3, seed=0, sample_rate=16000, min_sec=1.0, max_sec=2.0):
    """Write wavs and a Kaldi data dir (wav.scp, utt2spk, spk2utt) under ``path``.

    Speakers differ in f0 and formants, so embeddings can separate them.
    Returns the data dir path.
    """
    rng = np.random.default_rng(seed)
    wav_dir = os.path.join(path, "wav")
    data_dir = os.path.join(path, "data")
    os.makedirs(wav_dir, exist_ok=True)
    os.makedirs(data_dir, exist_ok=True)
    wav_scp, utt2spk = [], []
    for s in range(n_spk):
        spk = f"spk{s:03d}"
        f0 = rng.uniform(90, 250)
        formants = rng.uniform([300, 900, 2000], [900, 2000, 3200])
        for u in range(n_utt):
            utt = f"{spk}-utt{u:03d}"
            audio = synth_voice(rng, f0, formants, rng.uniform(min_sec, max_sec), sample_rate)
            wav = os.path.join(wav_dir, utt + ".wav")
            sf.write(wav, audio, sample_rate, subtype="PCM_16")
            wav_scp.append(f"{utt} {wav}\n")
            utt2spk.append(f"{utt} {spk}\n")
    with open(os.path.join(data_dir, "wav.scp"), "w") as f:
        f.writelines(sorted(wav_scp))
    with open(os.path.join(data_dir, "utt2spk"), "w") as f:
        f.writelines(sorted(utt2spk))
    write_spk2utt(data_dir, utt2spk)
    return data_dir


def write_spk2utt(data_dir, utt2spk_lines):
    """``data_dir/spk2utt`` from ``utt spk`` lines."""
    utt2spk = dict(line.split() for line in utt2spk_lines)
    write_table(os.path.join(data_dir, "spk2utt"), utt2spk_to_spk2utt(utt2spk))


def free_port():
    """A TCP port free on localhost now (for a test's own daemons or DDP rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RECIPE_FILES = ("run.sh", "local", "conf", "path.sh", "cmd.sh", "steps", "utils")


def link_recipe(tmp_path, recipe):
    """A corpus recipe's files (``egs/<corpus>/<version>``) linked into a scratch dir, where its data/ and
    exp/ go; returns the dir."""
    root = tmp_path / "recipe"
    root.mkdir()
    for name in RECIPE_FILES:
        os.symlink(os.path.join(recipe, name), root / name)
    return str(root)


def run_script(args, cwd=ROOT, check=True, env=None):
    """Run a shell script of the project with path.sh's environment; return the CompletedProcess."""
    full_env = dict(os.environ)
    full_env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.path.join(ROOT, "utils"),
                                        os.path.join(ROOT, "steps"), full_env.get("PATH", "")])
    full_env["LC_ALL"] = "C"
    full_env.update(env or {})
    proc = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine run far faster without intra-op threads.

    Test modules that train or run models opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def wav_data_dir(tmp_path):
    return make_wav_data_dir(str(tmp_path), n_spk=4, n_utt=3)


def make_fake_rirs(root):
    """A RIRS_NOISES tree with two small-room RIRs listed as the corpus lists them."""
    rir_dir = os.path.join(root, "RIRS_NOISES")
    room = os.path.join(rir_dir, "simulated_rirs", "smallroom", "Room001")
    os.makedirs(room)
    lines = []
    for i in (1, 2):
        rir = np.zeros(4000)
        rir[50] = 0.8
        rir[600 * i] = 0.3
        sf.write(os.path.join(room, f"Room001-0000{i}.wav"), rir, 16000, subtype="PCM_16")
        lines.append(f"--rir-id smallroom-Room001-0000{i} --room-id smallroom-Room001 "
                     f"RIRS_NOISES/simulated_rirs/smallroom/Room001/Room001-0000{i}.wav\n")
    with open(os.path.join(rir_dir, "simulated_rirs", "smallroom", "rir_list"), "w") as f:
        f.writelines(lines)
    return rir_dir


def make_fake_musan(root):
    musan = os.path.join(root, "musan")
    rng = np.random.default_rng(9)
    for kind, sub, seconds in (("noise", "free-sound", 0.7), ("music", "fma", 3.0), ("speech", "librivox", 2.5)):
        os.makedirs(os.path.join(musan, kind, sub))
        for i in range(2):
            sf.write(os.path.join(musan, kind, sub, f"{kind}-{sub}-000{i}.wav"),
                     0.1 * coloured_noise(rng, int(seconds * 16000), 16000), 16000, subtype="PCM_16")
        with open(os.path.join(musan, kind, sub, "ANNOTATIONS"), "w") as f:
            f.write("not audio\n")
    return musan


def kill_training_at_checkpoint(command, exp, min_step=1):
    """Start a training ``command`` (an argv), SIGKILL it once a checkpoint at step >= ``min_step`` exists.

    Asserts that it was killed before finishing (no ``<exp>/.done``), so that re-running resumes.
    """
    from pyspk.train import checkpoint as ckpt

    proc = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt_dir = os.path.join(exp, "checkpoints")
    deadline = time.time() + 900  # generous: a loaded CI machine can be slow to start torch
    while proc.poll() is None and time.time() < deadline and \
            not any(step >= min_step for step, _ in ckpt.list_checkpoints(ckpt_dir)):
        time.sleep(0.01)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed, "the training finished before it could be killed"
    assert not os.path.exists(os.path.join(exp, ".done"))


def no_traceback(proc):
    """The finished process printed no Python traceback (user errors must read as messages)."""
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
