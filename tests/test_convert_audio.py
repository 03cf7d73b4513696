"""steps/convert_audio.sh: pipes and segments to one flac file per utterance, exactly, resumably."""

import os
import re
import shutil

import numpy as np
import pytest
import soundfile as sf
from conftest import run_script, synth_voice, write_spk2utt

from pyspk.data.datadir import DataDir, read_kv
from pyspk.features.audio import cut_segment, read_audio

pytestmark = pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed (tools/install.sh)")

# Recording -> (speaker, seconds, wav.scp entry template, segments as (start, end)).
RECORDINGS = {
    "rec1": ("spk1", 3.0, "sox {} -t wav - |", [(0.0, 1.2), (1.2, 3.0)]),
    "rec2": ("spk2", 2.0, "cat {} |", [(0.25, 2.0)]),
    "rec3": ("spk2", 1.5, "{}", [(0.0, 1.5)]),
}


def make_segmented_dir(root, recordings=RECORDINGS):
    """A data dir of piped and plain recordings cut by segments; returns (data dir, {utt: (entry, start, end)})."""
    rng = np.random.default_rng(0)
    data = os.path.join(root, "data")
    os.makedirs(data)
    wav_scp, segments, utt2spk, expected = [], [], [], {}
    for rec, (spk, seconds, template, cuts) in recordings.items():
        wav = os.path.join(root, rec + ".wav")
        sf.write(wav, synth_voice(rng, 120, [500, 1500, 2500], seconds), 16000, subtype="PCM_16")
        entry = template.format(wav)
        wav_scp.append(f"{rec} {entry}\n")
        for n, (start, end) in enumerate(cuts):
            utt = f"{spk}-{rec}-{n}"
            segments.append(f"{utt} {rec} {start} {end}\n")
            utt2spk.append(f"{utt} {spk}\n")
            expected[utt] = (entry, start, end)
    for name, lines in (("wav.scp", wav_scp), ("segments", segments), ("utt2spk", utt2spk)):
        with open(os.path.join(data, name), "w") as f:
            f.writelines(sorted(lines))
    write_spk2utt(data, utt2spk)
    return data, expected


def convert(tmp_path, src, *options, check=True):
    dest, audio = str(tmp_path / "converted"), str(tmp_path / "flac")
    return run_script(["steps/convert_audio.sh", "--nj", "2", *options, src, dest, audio], check=check), dest, audio


def job_logs(audio):
    log_dir = os.path.join(audio, "log")
    return "".join(open(os.path.join(log_dir, name)).read() for name in sorted(os.listdir(log_dir))
                   if name.startswith("convert."))


def test_pipes_and_segments_become_exact_flac_files(tmp_path):
    src, expected = make_segmented_dir(str(tmp_path))
    proc, dest, audio = convert(tmp_path, src)
    assert "Done 4, failed 0" in proc.stdout
    wav_scp = DataDir(dest).wav_scp()
    assert sorted(wav_scp) == sorted(expected)
    assert not os.path.exists(os.path.join(dest, "segments"))
    assert DataDir(dest).utt2spk() == DataDir(src).utt2spk()
    assert DataDir(dest).spk2utt() == DataDir(src).spk2utt()
    durations = read_kv(os.path.join(dest, "utt2dur"), float)
    for utt, (entry, start, end) in expected.items():
        path = wav_scp[utt]
        assert path == os.path.join(audio, DataDir(src).utt2spk()[utt], utt + ".flac")
        assert sf.info(path).format == "FLAC" and sf.info(path).subtype == "PCM_16"
        decoded, rate = read_audio(entry)
        reference = cut_segment(decoded, rate, start, end)
        written, written_rate = sf.read(path, dtype="int16", always_2d=True)
        assert written_rate == rate
        np.testing.assert_array_equal(written, reference.astype(np.int16))
        assert durations[utt] == pytest.approx(reference.shape[0] / rate, abs=1e-4)
    assert not [name for _, _, names in os.walk(audio) for name in names if name.endswith(".tmp")]


def test_rerun_converts_nothing_and_resumes_a_partial_run(tmp_path):
    src, _ = make_segmented_dir(str(tmp_path))
    _, dest, audio = convert(tmp_path, src)
    wav_scp = DataDir(dest).wav_scp()
    mtimes = {utt: os.stat(path).st_mtime_ns for utt, path in wav_scp.items()}
    dest_mtime = os.stat(os.path.join(dest, "wav.scp")).st_mtime_ns

    proc, _, _ = convert(tmp_path, src)
    assert "nothing to do" in proc.stdout
    assert os.stat(os.path.join(dest, "wav.scp")).st_mtime_ns == dest_mtime

    # An interrupted run: no stamp, one file missing. Only that one is decoded again.
    os.remove(os.path.join(audio, ".done"))
    lost = sorted(wav_scp)[0]
    os.remove(wav_scp[lost])
    proc, _, _ = convert(tmp_path, src)
    assert "Done 4, failed 0" in proc.stdout
    counts = [tuple(map(int, m)) for m in re.findall(r"(\d+) converted now, (\d+) converted before", job_logs(audio))]
    assert sum(now for now, _ in counts) == 1 and sum(before for _, before in counts) == 3
    assert os.path.isfile(wav_scp[lost])
    assert all(os.stat(wav_scp[utt]).st_mtime_ns == mtimes[utt] for utt in wav_scp if utt != lost)
    assert DataDir(dest).wav_scp() == wav_scp


def test_a_bad_utterance_is_counted_and_the_rest_converted(tmp_path):
    recordings = {**RECORDINGS, "rec0": ("spk0", 1.0, "false {} |", [(0.0, 1.0)])}
    src, expected = make_segmented_dir(str(tmp_path), recordings)
    bad = "spk0-rec0-0"

    # 1 of 5 is more than the default 5 %: the step fails, naming the share, and writes no data dir.
    proc, dest, audio = convert(tmp_path, src, check=False)
    assert proc.returncode != 0
    assert "1 of 5 utterances failed, more than --max-fail-fraction 0.05" in proc.stderr
    assert not os.path.exists(os.path.join(dest, "wav.scp"))
    assert re.search(rf"{bad}: command 'false .*' failed", job_logs(audio))

    proc, dest, audio = convert(tmp_path, src, "--max-fail-fraction", "0.25")
    assert "Done 4, failed 1" in proc.stdout
    assert sorted(DataDir(dest).wav_scp()) == sorted(set(expected) - {bad})
    assert bad not in DataDir(dest).utt2spk()
    assert "spk0" not in DataDir(dest).spk2utt()
    assert len([name for _, _, names in os.walk(audio) for name in names if name.endswith(".flac")]) == 4


def test_wav_format_and_usage(tmp_path):
    src, _ = make_segmented_dir(str(tmp_path))
    _, dest, _ = convert(tmp_path, src, "--format", "wav")
    assert all(path.endswith(".wav") and sf.info(path).format == "WAV" for path in DataDir(dest).wav_scp().values())

    proc = run_script(["steps/convert_audio.sh", src, dest], check=False)
    assert proc.returncode == 1 and "Usage: steps/convert_audio.sh" in proc.stderr
    proc = run_script(["steps/convert_audio.sh", "--format", "mp3", src, dest, str(tmp_path / "x")], check=False)
    assert proc.returncode == 1 and "--format must be flac or wav" in proc.stderr
