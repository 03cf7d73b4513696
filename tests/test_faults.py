"""Faults a demanding user meets (broken audio and files, kills, full disks, bad configs, concurrent runs)
end in a clear message naming the file, key or utterance, never a traceback, and leave nothing half-written.

One test per numbered item of issue 14, each through the real entry point (item 14, data-dir scripts on
awkward input, is in test_utils_scripts.py).
"""

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT, make_wav_data_dir, no_traceback, run_script

from pyspk.fileutil import dir_lock
from pyspk.train.synthetic import make_feats_data_dir

DINO_TINY = os.path.join(ROOT, "conf", "dino_tiny.yaml")
TINY_OVERRIDES = ["model.feat_dim=40", "train.epochs=2", "train.ckpt_every_steps=1", "train.log_every=1",
                  "train.keep_checkpoints=3", "train.threads=1"]


def train_dino(data, exp, *overrides, max_steps=None, config=DINO_TINY):
    args = [sys.executable, "-m", "pyspk.bin.train", "--config", config, "--device", "cpu"]
    if max_steps is not None:
        args += ["--max-steps", str(max_steps)]
    return run_script([*args, data, exp, *TINY_OVERRIDES, *overrides], check=False)


@pytest.fixture(scope="module")
def feats40(tmp_path_factory):
    return make_feats_data_dir(str(tmp_path_factory.mktemp("feats")), n_spk=4, n_utt=3, min_frames=60,
                               max_frames=100, feat_dim=40)


def make_fbank(data, *options):
    return run_script(["steps/make_fbank.sh", "--nj", "1", "--compress", "false", *options, data], check=False)


# 1 ----------------------------------------------------------------------------
def test_nan_samples_fail_one_named_utterance(tmp_path):
    data = make_wav_data_dir(str(tmp_path), n_spk=2, n_utt=2)
    first_utt, wav = Path(data, "wav.scp").read_text().splitlines()[0].split()
    samples, rate = sf.read(wav, dtype="float32")
    samples[100] = np.nan
    samples[200] = np.inf
    sf.write(wav, samples, rate, subtype="FLOAT")

    proc = make_fbank(data, "--max-fail-fraction", "0.5")
    assert proc.returncode == 0, proc.stderr
    no_traceback(proc)
    assert "1 of 4 utterances failed" in proc.stdout
    log_text = Path(data, "log", "make_fbank_data.1.log").read_text()
    assert f"{first_utt}: 2 of {len(samples)} samples are NaN or infinite" in log_text
    assert "Done 3 utterances, failed 1" in log_text
    feats_utts = [line.split()[0] for line in Path(data, "feats.scp").read_text().splitlines()]
    assert len(feats_utts) == 3 and first_utt not in feats_utts


# 2 ----------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign"])
def test_damaged_latest_checkpoint_falls_back_to_previous(feats40, tmp_path, damage):
    exp = str(tmp_path / "exp")
    assert train_dino(feats40, exp, max_steps=3).returncode == 0
    ckpt_dir = os.path.join(exp, "checkpoints")
    latest = os.path.join(ckpt_dir, "ckpt-e1-s3.pt")
    assert os.path.isfile(latest)
    if damage == "truncated":
        data = Path(latest).read_bytes()
        Path(latest).write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        Path(latest).write_bytes(b"\x00not a checkpoint" * 100)
    else:
        torch.save({"weights": torch.zeros(3)}, latest)

    proc = train_dino(feats40, exp, max_steps=4)
    assert proc.returncode == 0, proc.stderr
    no_traceback(proc)
    assert f"{latest}: unreadable checkpoint" in proc.stderr
    assert "falling back to the previous one" in proc.stderr
    assert f"resumed from {os.path.join(ckpt_dir, 'ckpt-e0-s2.pt')} (step 2)" in proc.stderr
    assert os.path.isfile(latest + ".bad")
    assert os.path.isfile(os.path.join(ckpt_dir, "ckpt-e1-s4.pt"))


def test_no_readable_checkpoint_is_a_clear_error(feats40, tmp_path):
    exp = str(tmp_path / "exp")
    assert train_dino(feats40, exp, max_steps=1).returncode == 0
    only = os.path.join(exp, "checkpoints", "ckpt-e0-s1.pt")
    Path(only).write_bytes(b"junk")
    proc = train_dino(feats40, exp, max_steps=2)
    assert proc.returncode == 1
    no_traceback(proc)
    assert f"no usable checkpoint in {os.path.join(exp, 'checkpoints')}: {only} could not be read" in proc.stderr
    assert not os.path.exists(os.path.join(exp, "final.pt"))


# 3 ----------------------------------------------------------------------------
def test_non_utf8_utterance_id_is_rejected_with_file_and_line(tmp_path):
    data = make_wav_data_dir(str(tmp_path), n_spk=2, n_utt=2)
    for name in ("wav.scp", "utt2spk", "spk2utt"):
        path = os.path.join(data, name)
        raw = Path(path).read_bytes()
        Path(path).write_bytes(raw.replace(b"spk000-utt001", b"spk000-utt\xff1"))
    proc = make_fbank(data)
    assert proc.returncode == 1
    no_traceback(proc)
    assert f"{data}/wav.scp:2: id '" in proc.stderr and "is not valid UTF-8" in proc.stderr
    assert not os.path.exists(os.path.join(data, "feats.scp"))
    assert not glob.glob(os.path.join(data, "data", "*"))


# 4 ----------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["unsorted", "missing", "crlf"])
def test_make_fbank_on_invalid_dir_fails_and_fails_again(tmp_path, fault):
    data = make_wav_data_dir(str(tmp_path), n_spk=2, n_utt=2)
    wav_scp = os.path.join(data, "wav.scp")
    lines = Path(wav_scp).read_text().splitlines(keepends=True)
    if fault == "unsorted":
        lines = lines[::-1]
    elif fault == "missing":
        lines = lines[1:]
    else:
        lines = [line.replace("\n", "\r\n") for line in lines]
    Path(wav_scp).write_text("".join(lines), newline="")

    for _ in range(2):  # the re-run must not take the failed run as finished
        proc = make_fbank(data)
        assert proc.returncode == 1, proc.stdout
        no_traceback(proc)
        assert f"{data} does not validate" in proc.stderr
        assert data in proc.stderr and ("wav.scp" in proc.stderr or "utt2spk" in proc.stderr)
        assert not os.path.exists(os.path.join(data, "feats.scp"))


# 6 ----------------------------------------------------------------------------
@pytest.mark.parametrize("override,message", [
    ("train.epochs=two", "train.epochs must be an integer, got 'two'"),
    ("data.batch_size=four", "data.batch_size must be an integer, got 'four'"),
    ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
    ("data.batch_size=-2", "data.batch_size must be >= 1, got -2"),
    ("dino.student_temp=[1]", "dino.student_temp must be a number, got [1]"),
    ("dino.student_temp=0", "dino.student_temp must be > 0, got 0"),
    ("train.amp=maybe", "train.amp must be true or false, got 'maybe'"),
])
def test_config_values_are_type_and_range_checked(feats40, tmp_path, override, message):
    exp = str(tmp_path / "exp")
    proc = train_dino(feats40, exp, override)
    assert proc.returncode == 1
    no_traceback(proc)
    assert f"train: error: {message}" in proc.stderr
    assert not os.path.exists(os.path.join(exp, "final.pt"))
    assert not os.path.exists(os.path.join(exp, "metrics.tsv"))


# 9 ----------------------------------------------------------------------------
def test_second_training_in_the_same_exp_dir_refuses(feats40, tmp_path):
    exp = str(tmp_path / "exp")
    with dir_lock(exp, "a test"):
        proc = train_dino(feats40, exp, max_steps=1)
    assert proc.returncode == 1
    no_traceback(proc)
    assert f"{exp} is in use by another training (pid {os.getpid()} on " in proc.stderr
    assert not os.path.exists(os.path.join(exp, "checkpoints"))
    assert not os.path.exists(os.path.join(exp, "metrics.tsv"))
    # Once the holder is gone the same command runs.
    assert train_dino(feats40, exp, max_steps=1).returncode == 0


# 11 ---------------------------------------------------------------------------
def test_make_fbank_killed_then_rerun_leaves_no_temporaries(tmp_path):
    data = make_wav_data_dir(str(tmp_path), n_spk=2, n_utt=2)
    wav_scp = os.path.join(data, "wav.scp")
    lines = Path(wav_scp).read_text().splitlines(keepends=True)
    last_utt, last_wav = lines[-1].split()
    # The last utterance reads through a slow pipe, so the job is killed with its temporaries open.
    lines[-1] = f"{last_utt} sleep 30; cat {last_wav} |\n"
    Path(wav_scp).write_text("".join(lines))
    env = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
               LC_ALL="C")
    job = subprocess.Popen(["steps/make_fbank.sh", "--nj", "1", data], cwd=ROOT, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pattern = os.path.join(data, "data", ".raw_fbank_data.1.*.tmp")
    deadline = time.time() + 60
    while len(glob.glob(pattern)) < 2 and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert len(glob.glob(pattern)) == 2, "the job never opened its temporaries"

    lines[-1] = f"{last_utt} {last_wav}\n"
    Path(wav_scp).write_text("".join(lines))
    proc = make_fbank(data)
    assert proc.returncode == 0, proc.stderr
    assert glob.glob(os.path.join(data, "data", ".*")) == []
    assert glob.glob(os.path.join(data, "log", ".*")) == []
    assert len(Path(data, "feats.scp").read_text().splitlines()) == 4


# 12 ---------------------------------------------------------------------------
def test_unsafe_yaml_tag_in_config_is_refused_with_line(feats40, tmp_path):
    config = tmp_path / "evil.yaml"
    config.write_text(Path(DINO_TINY).read_text().replace("seed: 1", "seed: !!python/object/apply:os.system ['touch "
                                                          f"{tmp_path}/pwned']"))
    line = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if "!!python" in text)
    exp = str(tmp_path / "exp")
    proc = train_dino(feats40, exp, config=str(config))
    assert proc.returncode == 1
    no_traceback(proc)
    assert f"unsafe YAML tag at {config}:{line}" in proc.stderr
    assert not os.path.exists(tmp_path / "pwned")
    assert not os.path.exists(exp)


# 5 ----------------------------------------------------------------------------
class SmallDisk:
    """A tmpfs mounted at ``path``; ``resize`` changes its size in place."""

    def __init__(self, path):
        self.path = path

    def resize(self, size):
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs to fill (needs root and mount(8); skipped otherwise)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {proc.stderr.strip()}")
    try:
        yield SmallDisk(mount_point)
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_disk_full_in_training_is_reported_and_resumable(feats40, small_disk):
    small_disk.resize("64k")  # room for config, log and metrics, not for a checkpoint
    exp = str(small_disk.path / "exp")
    proc = train_dino(feats40, exp, max_steps=2)
    assert proc.returncode == 1
    no_traceback(proc)
    assert f"train: error: no space left on {exp}" in proc.stderr
    assert os.listdir(os.path.join(exp, "checkpoints")) == []
    assert not os.path.exists(os.path.join(exp, "final.pt"))

    small_disk.resize("64m")
    proc = train_dino(feats40, exp)
    assert proc.returncode == 0, proc.stderr
    assert os.path.isfile(os.path.join(exp, "final.pt"))


def test_disk_full_in_extraction_is_reported_and_resumable(tmp_path, small_disk):
    feats = make_feats_data_dir(str(tmp_path / "feats"), n_spk=2, n_utt=4, min_frames=60, max_frames=100,
                                feat_dim=40)
    model = str(tmp_path / "model.pt")
    run_script([sys.executable, "-m", "pyspk.bin.init_model", "--config", DINO_TINY, "model.feat_dim=40", model])
    out = str(small_disk.path / "xv")
    os.makedirs(os.path.join(out, "log"))
    ballast = small_disk.path / "ballast"
    free = os.statvfs(small_disk.path).f_bavail * os.statvfs(small_disk.path).f_frsize
    ballast.write_bytes(b"\0" * (free - 8192))  # a log page and one more

    proc = run_script(["steps/extract_embeddings.sh", "--nj", "1", model, feats, out], check=False)
    assert proc.returncode == 1
    no_traceback(proc)
    assert f"no space left on {out}" in proc.stdout + proc.stderr
    assert not glob.glob(os.path.join(out, "xvector.*")) and not glob.glob(os.path.join(out, ".xvector*"))

    ballast.unlink()
    proc = run_script(["steps/extract_embeddings.sh", "--nj", "1", model, feats, out])
    assert "Done 8, failed 0" in proc.stdout
    assert os.path.isfile(os.path.join(out, "xvector.1.ark")) and os.path.isfile(os.path.join(out, "xvector.1.scp"))


# 7, 8 -------------------------------------------------------------------------
def point_to(data, utt, target):
    """Make ``utt`` of ``data``'s feats.scp read from ``target``."""
    path = os.path.join(data, "feats.scp")
    lines = [f"{utt} {target}\n" if line.split()[0] == utt else line
             for line in Path(path).read_text().splitlines(keepends=True)]
    Path(path).write_text("".join(lines))


def test_unreadable_training_utterances_are_counted(tmp_path):
    data = make_feats_data_dir(str(tmp_path / "feats"), n_spk=4, n_utt=3, min_frames=60, max_frames=100,
                               feat_dim=40)
    utts = [line.split()[0] for line in Path(data, "feats.scp").read_text().splitlines()]
    garbage = tmp_path / "garbage.ark"
    garbage.write_bytes(b"not an ark at all")
    for utt in (utts[0], utts[5]):  # the first one is also the feature-dim probe
        point_to(data, utt, f"{garbage}:0")
    exp = str(tmp_path / "exp")
    proc = train_dino(data, exp)
    assert proc.returncode == 0, proc.stderr
    no_traceback(proc)
    assert f"utterance {utts[0]}: cannot read features" in proc.stderr
    assert f"utterance {utts[5]}: cannot read features" in proc.stderr
    assert "epoch 1: skipped 2 unreadable utterances" in proc.stderr
    assert "epoch 2: skipped 2 unreadable utterances" in proc.stderr
    # Kaldi's "Done N, failed M" ends the run: 2 epochs of 12 items read, 2 utterances failing in each.
    assert f"Done 24 utterance reads, failed 4: 2 utterance(s) of {data}/feats.scp" in proc.stderr
    assert f"({utts[0]}, {utts[5]};" in proc.stderr
    assert os.path.isfile(os.path.join(exp, "final.pt"))


def test_nan_features_name_the_utterance(tmp_path):
    data = make_feats_data_dir(str(tmp_path / "feats"), n_spk=4, n_utt=3, min_frames=60, max_frames=100,
                               feat_dim=40)
    utt = Path(data, "feats.scp").read_text().splitlines()[4].split()[0]
    bad = np.zeros((80, 40), dtype=np.float32)
    bad[10, 3] = np.nan
    kaldiio.save_ark(str(tmp_path / "nan.ark"), {utt: bad}, scp=str(tmp_path / "nan.scp"))
    point_to(data, utt, (tmp_path / "nan.scp").read_text().split()[1])
    exp = str(tmp_path / "exp")
    proc = train_dino(data, exp, "train.epochs=1")
    assert proc.returncode == 0, proc.stderr
    no_traceback(proc)
    assert f"utterance {utt}: cannot read features (features contain NaN or Inf)" in proc.stderr
    assert "epoch 1: skipped 1 unreadable utterances" in proc.stderr
    assert "loss became nan" not in proc.stderr


# 13 ---------------------------------------------------------------------------
def test_feature_dim_mismatch_is_in_the_extraction_message(tmp_path):
    feats = make_feats_data_dir(str(tmp_path / "feats"), n_spk=2, n_utt=2, min_frames=60, max_frames=100,
                                feat_dim=80)
    model = str(tmp_path / "model.pt")
    run_script([sys.executable, "-m", "pyspk.bin.init_model", "--config", DINO_TINY, "model.feat_dim=40", model])
    out = str(tmp_path / "xv")
    proc = run_script(["steps/extract_embeddings.sh", "--nj", "1", model, feats, out], check=False)
    assert proc.returncode == 1
    no_traceback(proc)
    assert "4 of 4 utterances failed" in proc.stderr
    assert "4 feature dim 80 but the model expects 40" in proc.stderr
    assert not os.path.exists(os.path.join(out, "xvector.scp"))


# 10 ---------------------------------------------------------------------------
def snapshot(directory):
    """{path: (mtime_ns, bytes)} of every file under ``directory``."""
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            files[path] = (os.stat(path).st_mtime_ns, Path(path).read_bytes())
    return files


def test_back_end_steps_do_nothing_when_finished(tmp_path):
    feats = make_feats_data_dir(str(tmp_path / "data"), n_spk=4, n_utt=5, min_frames=60, max_frames=100,
                                feat_dim=40)
    utts = [line.split()[0] for line in Path(feats, "utt2spk").read_text().splitlines()]
    trials = str(tmp_path / "trials")
    with open(trials, "w") as f:
        for i, enroll in enumerate(utts):
            test = utts[(i + 1) % len(utts)]
            f.write(f"{enroll} {test} {'target' if enroll[:6] == test[:6] else 'nontarget'}\n")
    exp = tmp_path / "exp"
    model = str(exp / "model.pt")
    run_script([sys.executable, "-m", "pyspk.bin.init_model", "--config", DINO_TINY, "model.feat_dim=40",
                "model.embed_dim=8", model])
    xv, plda, scores = str(exp / "xv"), str(exp / "xv" / "plda"), str(exp / "scores")
    steps = [
        ["steps/extract_embeddings.sh", "--nj", "1", model, feats, xv],
        ["steps/train_plda.sh", "--lda-dim", "3", xv, feats, plda],
        ["steps/score_plda.sh", plda, trials, xv, xv, f"{scores}/plda"],
        ["steps/score_cosine.sh", "--mean-dir", xv, trials, xv, xv, f"{scores}/cosine"],
        ["steps/compute_metrics.sh", "--results", str(exp / "results.txt"), "--name", "plda", trials,
         f"{scores}/plda"],
        ["steps/compute_metrics.sh", "--results", str(exp / "results.txt"), "--name", "cosine", trials,
         f"{scores}/cosine"],
        ["steps/cluster_embeddings.sh", "--num-clusters", "4", "--min-cluster-size", "1", "--device", "cpu",
         xv, feats, str(tmp_path / "data_pl"), str(exp / "cluster")],
    ]
    for step in steps:
        run_script(step)
    before = {**snapshot(exp), **snapshot(tmp_path / "data_pl")}
    results = (exp / "results.txt").read_text()
    assert results.count("system=plda ") == 1 and results.count("system=cosine ") == 1

    for step in steps:
        proc = run_script(step)
        assert "nothing to do" in proc.stdout, step
    assert {**snapshot(exp), **snapshot(tmp_path / "data_pl")} == before

    # A newer input makes the step run again.
    os.utime(trials)
    proc = run_script(steps[2])
    assert "nothing to do" not in proc.stdout
    assert os.stat(f"{scores}/plda").st_mtime_ns > before[f"{scores}/plda"][0]


# Also ---------------------------------------------------------------------------
def test_finished_training_rerun_with_changed_overrides_stops(feats40, tmp_path):
    """Issue 28: it says what differs and stops (no longer a warning and exit 0); tests/test_config_checks.py
    covers steps/train.sh and its --retrain."""
    exp = str(tmp_path / "exp")
    assert train_dino(feats40, exp, "train.epochs=1").returncode == 0
    before = snapshot(exp)
    proc = train_dino(feats40, exp, "train.epochs=1", "optim.clip_grad=1.0")
    assert proc.returncode == 1
    no_traceback(proc)
    assert f"{exp} is a finished training of another config (was -> now: optim.clip_grad: 3.0 -> 1.0)" in proc.stderr
    assert snapshot(exp) == before


def test_stereo_warning_names_the_utterance(tmp_path):
    data = make_wav_data_dir(str(tmp_path), n_spk=1, n_utt=2)
    utt, wav = Path(data, "wav.scp").read_text().splitlines()[0].split()
    samples, rate = sf.read(wav, dtype="int16")
    sf.write(wav, np.stack([samples, samples], axis=1), rate, subtype="PCM_16")
    assert make_fbank(data).returncode == 0
    log_text = Path(data, "log", "make_fbank_data.1.log").read_text()
    assert f"{utt}: audio has 2 channels and --channel=-1: using the first" in log_text


def test_empty_trials_are_reported_as_empty(tmp_path):
    trials, scores = tmp_path / "trials_empty", tmp_path / "scores"
    trials.write_text("")
    scores.write_text("a b 1.5\n")
    proc = run_script([sys.executable, "-m", "pyspk.bin.compute_metrics", "--results", "", str(trials), str(scores)],
                      check=False)
    assert proc.returncode == 1
    no_traceback(proc)
    assert f"{trials}: no trials: the file is empty" in proc.stderr
    assert "is not a trial of" not in proc.stderr


def test_unsafe_yaml_tag_in_backend_yaml_is_refused_with_line(tmp_path):
    feats = make_feats_data_dir(str(tmp_path / "data"), n_spk=4, n_utt=5, min_frames=60, max_frames=100,
                                feat_dim=40)
    utts = [line.split()[0] for line in Path(feats, "utt2spk").read_text().splitlines()]
    trials = tmp_path / "trials"
    trials.write_text(f"{utts[0]} {utts[1]} target\n{utts[0]} {utts[-1]} nontarget\n")
    model, xv = str(tmp_path / "model.pt"), str(tmp_path / "xv")
    run_script([sys.executable, "-m", "pyspk.bin.init_model", "--config", DINO_TINY, "model.feat_dim=40",
                "model.embed_dim=8", model])
    run_script(["steps/extract_embeddings.sh", "--nj", "1", model, feats, xv])
    run_script(["steps/train_plda.sh", "--lda-dim", "3", xv, feats, f"{xv}/plda"])
    backend_yaml = os.path.join(xv, "plda", "backend.yaml")
    text = Path(backend_yaml).read_text()
    Path(backend_yaml).write_text(text + f"evil: !!python/object/apply:os.system ['touch {tmp_path}/pwned']\n")
    line = len(text.splitlines()) + 1
    proc = run_script(["steps/score_plda.sh", f"{xv}/plda", str(trials), xv, xv, str(tmp_path / "scores")],
                      check=False)
    assert proc.returncode == 1
    no_traceback(proc)
    assert f"unsafe YAML tag at {backend_yaml}:{line}" in proc.stderr
    assert not os.path.exists(tmp_path / "pwned") and not os.path.exists(tmp_path / "scores")
