"""steps/make_fbank.sh and steps/compute_vad_decision.sh end to end on tiny data dirs."""

import os
import re
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT, make_wav_data_dir, run_script

from pyspk.data.datadir import DataDir, read_kv
from pyspk.features.audio import read_audio
from pyspk.features.fbank import FbankConfig, compute_fbank

FBANK_CONF = os.path.join(ROOT, "conf", "fbank.conf")
needs_validate = pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, "utils", "validate_data_dir.sh")),
                                    reason="utils/validate_data_dir.sh is not in the tree yet")


def reference_fbank(wave):
    config = FbankConfig.from_file(FBANK_CONF)
    return compute_fbank(wave, config)


def add_utterance(data_dir, utt, entry):
    """Add an utterance (its own speaker) to wav.scp, utt2spk and spk2utt, keeping the dir valid."""
    for name, line in (("wav.scp", f"{utt} {entry}\n"), ("utt2spk", f"{utt} {utt}\n"),
                       ("spk2utt", f"{utt} {utt}\n")):
        path = os.path.join(data_dir, name)
        with open(path) as f:
            lines = [*f.readlines(), line]
        with open(path, "w") as f:
            f.writelines(sorted(lines))


def write_tone(path, seconds, rate):
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


def done_failed(log_path):
    return tuple(int(x) for x in re.search(r"Done (\d+) utterances, failed (\d+)", open(log_path).read()).groups())


@needs_validate
def test_make_fbank_writes_kaldi_features_and_is_idempotent(tmp_path):
    data = make_wav_data_dir(str(tmp_path), n_spk=3, n_utt=3)
    proc = run_script(["steps/make_fbank.sh", "--nj", "2", "--compress", "false", data])
    assert "succeeded making fbank features for data (9 utterances)" in proc.stdout
    wav_scp = DataDir(data).wav_scp()
    feats_scp = DataDir(data).feats_scp()
    assert list(feats_scp) == sorted(wav_scp)
    assert Path(data, "feats.scp").read_text().splitlines() == sorted(
        Path(data, "feats.scp").read_text().splitlines())
    num_frames = read_kv(os.path.join(data, "utt2num_frames"), int)
    durations = read_kv(os.path.join(data, "utt2dur"), float)
    for utt, feats in kaldiio.load_scp(os.path.join(data, "feats.scp")).items():
        samples, _ = read_audio(wav_scp[utt])
        np.testing.assert_allclose(feats, reference_fbank(samples[:, 0]), rtol=1e-6, atol=1e-5)
        assert num_frames[utt] == feats.shape[0]
        assert durations[utt] == pytest.approx(samples.shape[0] / 16000, rel=1e-5)
    assert {f for f in os.listdir(os.path.join(data, "data")) if f.startswith(".")} == set()

    mtime = os.path.getmtime(os.path.join(data, "feats.scp"))
    proc = run_script(["steps/make_fbank.sh", "--nj", "2", data])
    assert "nothing to do" in proc.stdout
    assert os.path.getmtime(os.path.join(data, "feats.scp")) == mtime


def test_make_fbank_failure_accounting(tmp_path):
    data = make_wav_data_dir(str(tmp_path), n_spk=3, n_utt=4)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.wav").write_bytes(b"RIFF but not really a wav file" * 20)
    (bad / "empty.wav").write_bytes(b"")
    # Sorted ids put three bad utterances in each of the two jobs.
    bad_utts = {
        "a-corrupt": (str(bad / "corrupt.wav"), "cannot read audio"),
        "a-empty": (str(bad / "empty.wav"), "empty file"),
        "a-missing": (str(bad / "missing.wav"), "no such file"),
        "z-rate8k": (write_tone(str(bad / "8k.wav"), 1.0, 8000), "sample rate 8000 Hz does not match"),
        "z-short": (write_tone(str(bad / "short.wav"), 0.01, 16000), "too short"),
        "z-pipe": ("sox /nonexistent/x.flac -t wav - |", "failed with exit code"),
    }
    for utt, (entry, _) in bad_utts.items():
        add_utterance(data, utt, entry)
    logs = [os.path.join(data, "log", f"make_fbank_data.{n}.log") for n in (1, 2)]

    proc = run_script(["steps/make_fbank.sh", "--nj", "2", data], check=False)
    assert proc.returncode == 1
    assert "6 of 18 utterances failed, more than --max-fail-fraction 0.05" in proc.stderr
    assert logs[0] in proc.stderr
    assert not os.path.exists(os.path.join(data, "feats.scp"))

    proc = run_script(["steps/make_fbank.sh", "--nj", "2", "--max-fail-fraction", "0.4", data])
    assert [done_failed(log) for log in logs] == [(6, 3), (6, 3)]
    log_text = Path(logs[0]).read_text() + Path(logs[1]).read_text()
    for utt, (_, reason) in bad_utts.items():
        assert re.search(rf"WARNING .*{utt}: .*{reason}", log_text), utt
    assert "6 of 18 utterances failed" in proc.stdout and "utils/fix_data_dir.sh" in proc.stdout
    good = sorted(u for u in DataDir(data).utt2spk() if u not in bad_utts)
    assert list(DataDir(data).feats_scp()) == good
    assert sorted(DataDir(data).utt2num_frames()) == good


def test_segments_and_vad_decision(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rec1 = write_tone(str(tmp_path / "rec1.wav"), 3.0, 16000)
    rec2 = write_tone(str(tmp_path / "rec2.wav"), 2.0, 16000)
    (data / "wav.scp").write_text(f"rec1 {rec1}\nrec2 cat {rec2} |\n")
    segments = {"rec1-0000-0150": ("rec1", 0.0, 1.5), "rec1-0120-0300": ("rec1", 1.2, 3.0),
                "rec2-0050-0200": ("rec2", 0.5, 2.0), "rec2-0150-0500": ("rec2", 1.5, 5.0)}
    (data / "segments").write_text("".join(f"{u} {r} {s} {e}\n" for u, (r, s, e) in segments.items()))
    (data / "utt2spk").write_text("".join(f"{u} {u[:4]}\n" for u in segments))
    (data / "spk2utt").write_text("rec1 rec1-0000-0150 rec1-0120-0300\nrec2 rec2-0050-0200 rec2-0150-0500\n")
    proc = run_script(["steps/make_fbank.sh", "--nj", "2", "--compress", "false", "--max-fail-fraction", "0.3",
                       str(data)])
    assert "1 of 4 utterances failed" in proc.stdout
    log_text = (data / "log" / "make_fbank_data.2.log").read_text()
    assert "rec2-0150-0500: segment end 5.0 s is beyond the end" in log_text
    feats = kaldiio.load_scp(str(data / "feats.scp"))
    assert sorted(feats) == sorted(segments)[:3]
    durations = read_kv(str(data / "utt2dur"), float)
    for utt in feats:
        rec, start, end = segments[utt]
        whole, _ = read_audio(rec1 if rec == "rec1" else rec2)
        cut = whole[round(start * 16000):round(end * 16000)]
        np.testing.assert_allclose(feats[utt], reference_fbank(cut[:, 0]), rtol=1e-6, atol=1e-5)
        assert durations[utt] == pytest.approx(end - start)

    proc = run_script(["steps/compute_vad_decision.sh", "--nj", "2", str(data)])
    assert "succeeded computing VAD decisions for data (3 utterances)" in proc.stdout
    vad = kaldiio.load_scp(str(data / "vad.scp"))
    num_frames = read_kv(str(data / "utt2num_frames"), int)
    assert sorted(vad) == sorted(feats)
    for utt, decision in vad.items():
        assert decision.dtype == np.float32 and decision.shape == (num_frames[utt],)
        assert set(np.unique(decision)) <= {0.0, 1.0} and decision.mean() > 0.9  # a steady tone is all speech
    proc = run_script(["steps/compute_vad_decision.sh", "--nj", "2", str(data)])
    assert "nothing to do" in proc.stdout


def test_vad_rejects_features_made_with_other_framing(tmp_path):
    data = make_wav_data_dir(str(tmp_path), n_spk=1, n_utt=2)
    # Pretend the features were made with another frame shift: the frame counts disagree.
    with open(os.path.join(data, "feats.scp"), "w") as f:
        f.writelines(f"{utt} x.ark:1\n" for utt in DataDir(data).utts())
    with open(os.path.join(data, "utt2num_frames"), "w") as f:
        f.writelines(f"{utt} 3\n" for utt in DataDir(data).utts())
    proc = run_script(["steps/compute_vad_decision.sh", "--nj", "1", data], check=False)
    assert proc.returncode == 1
    assert "2 of 2 utterances failed" in proc.stderr
    assert "but 3 feature frames: is conf/fbank.conf the conf the features were made with?" in \
        Path(data, "log", "vad_data.1.log").read_text()
    assert not os.path.exists(os.path.join(data, "vad.scp"))


def test_script_input_errors(tmp_path):
    data = make_wav_data_dir(str(tmp_path), n_spk=1, n_utt=2)
    conf = tmp_path / "bad.conf"
    conf.write_text("--num-mel-bins=80\n--frame-lenght=25\n")
    proc = run_script(["steps/make_fbank.sh", "--nj", "1", "--fbank-config", str(conf), data], check=False)
    assert proc.returncode == 1
    assert f"{conf}:2: unknown option '--frame-lenght' (did you mean --frame-length?)" in proc.stderr
    assert not os.path.exists(os.path.join(data, "feats.scp"))

    proc = run_script(["steps/make_fbank.sh", "--nj", "0", data], check=False)
    assert proc.returncode == 1 and "--nj must be a positive integer" in proc.stderr

    os.remove(os.path.join(data, "wav.scp"))
    proc = run_script(["steps/make_fbank.sh", data], check=False)
    assert proc.returncode == 1 and f"no such file {data}/wav.scp" in proc.stderr
    proc = run_script(["steps/compute_vad_decision.sh", data], check=False)
    assert proc.returncode == 1 and "no such file" in proc.stderr
    proc = run_script(["steps/make_fbank.sh"], check=False)
    assert proc.returncode == 1 and "Usage: steps/make_fbank.sh" in proc.stderr
