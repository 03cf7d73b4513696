"""Feature extraction library: audio reading, Kaldi conf parsing, fbank, arks, VAD."""

import itertools
import os
import struct
from pathlib import Path

import kaldi_native_fbank as knf
import kaldiio
import numpy as np
import pytest
import soundfile as sf

from pyspk.features.audio import (
    UtteranceError,
    UtteranceSource,
    cut_segment,
    iter_utterance_audio,
    read_audio,
    shard,
    utterance_sources,
)
from pyspk.features.fbank import (
    ArkScpWriter,
    FbankConfig,
    KaldiOptionError,
    compute_fbank,
    prepare_waveform,
    read_kaldi_conf,
    run_feature_job,
)
from pyspk.features.vad import VadConfig, compute_vad, frame_log_energy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FBANK_CONF = os.path.join(ROOT, "conf", "fbank.conf")


def write_wav(path, seconds=1.3, rate=16000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0) + 0.01 * rng.standard_normal(len(t))
    sf.write(path, audio.astype(np.float32), rate, subtype="PCM_16")
    return path


def int16_samples(path):
    samples, _ = sf.read(path, dtype="int16")
    return samples.astype(np.float32)


def write_conf(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_conf_file_sets_kaldi_options(tmp_path):
    conf = write_conf(tmp_path / "fbank.conf",
                      "# comment line\n\n--num-mel-bins=40   # trailing comment\n--frame_shift=20\n"
                      "--snip-edges=false\n--dither=0\n--use-energy\n--num-mel-bins=64\n")
    config = FbankConfig.from_file(conf)
    assert config.options.mel_opts.num_bins == 64  # a later line wins
    assert config.options.frame_opts.frame_shift_ms == 20 and config.window_shift == 320
    assert config.options.frame_opts.snip_edges is False and config.options.use_energy is True
    assert config.dim == 65
    # Kaldi's defaults, not kaldi-native-fbank's (whose dither is 3e-5).
    assert FbankConfig().options.frame_opts.dither == 1.0
    assert FbankConfig.from_file(FBANK_CONF).dim == 80


@pytest.mark.parametrize("text, message", [
    ("--sample-frequency=16000\n--num-mel-bin=80\n",
     r"fbank.conf:2: unknown option '--num-mel-bin' \(did you mean --num-mel-bins\?\)"),
    ("--num-mel-bins=eighty\n", r"fbank.conf:1: bad value 'eighty' for --num-mel-bins \(expected int\)"),
    ("--snip-edges=maybe\n", r"fbank.conf:1: bad value 'maybe' for --snip-edges \(expected bool\)"),
    ("num_mel_bins=80\n", r"fbank.conf:1: expected '--name=value'"),
    ("--num-mel-bins\n", r"fbank.conf:1: option '--num-mel-bins' needs a value"),
    ("--allow-downsample=true\n", r"fbank.conf:1: --allow-downsample is a Kaldi option that pyspk does not support"),
    ("--num-mel-bins=2\n", r"fbank.conf: invalid fbank options: .*at least 3 mel bins"),
    ("--high-freq=9000\n", r"fbank.conf: invalid fbank options: .*high-freq"),
    ("--frame-shift=0\n", r"fbank.conf: --frame-length and --frame-shift must each span at least one sample"),
])
def test_conf_errors_name_file_and_line(tmp_path, text, message):
    conf = write_conf(tmp_path / "fbank.conf", text)
    with pytest.raises(KaldiOptionError, match=message):
        FbankConfig.from_file(conf)


def test_vad_conf_errors(tmp_path):
    with pytest.raises(KaldiOptionError, match=r"vad.conf:1: unknown option '--vad-energy-treshold'"):
        VadConfig.from_file(write_conf(tmp_path / "vad.conf", "--vad-energy-treshold=5\n"))
    with pytest.raises(KaldiOptionError, match=r"vad.conf: --vad-proportion-threshold must be in \(0, 1\)"):
        VadConfig.from_file(write_conf(tmp_path / "vad.conf", "--vad-proportion-threshold=1.5\n"))
    with pytest.raises(KaldiOptionError, match=r"absent\.conf: cannot read config: No such file"):
        read_kaldi_conf(str(tmp_path / "absent.conf"), {})


def test_fbank_equals_direct_kaldi_native_fbank(tmp_path):
    wav = write_wav(str(tmp_path / "a.wav"))
    config = FbankConfig.from_file(FBANK_CONF)
    samples, rate = read_audio(wav)
    ours = compute_fbank(prepare_waveform(samples, rate, config), config)

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 80
    opts.energy_floor = 0.0
    direct = knf.OnlineFbank(opts)
    direct.accept_waveform(16000, int16_samples(wav))
    direct.input_finished()
    expected = np.stack([direct.get_frame(i) for i in range(direct.num_frames_ready)])
    assert ours.shape == expected.shape == (config.num_frames(len(int16_samples(wav))), 80)
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("snip_edges", [True, False])
def test_num_frames_matches_kaldi_native_fbank(snip_edges):
    config = FbankConfig({"dither": 0.0, "snip-edges": snip_edges})
    rng = np.random.default_rng(1)
    for num_samples in (400, 401, 559, 560, 561, 1234, 16000):
        if snip_edges or num_samples >= 200:
            feats = compute_fbank(rng.standard_normal(num_samples).astype(np.float32) * 1000, config)
            assert feats.shape[0] == config.num_frames(num_samples)
    assert FbankConfig({"snip-edges": True}).num_frames(399) == 0


def test_subtract_mean(tmp_path):
    wav = write_wav(str(tmp_path / "a.wav"))
    samples, rate = read_audio(wav)
    config = FbankConfig({"dither": 0.0, "subtract-mean": True})
    feats = compute_fbank(prepare_waveform(samples, rate, config), config)
    np.testing.assert_allclose(feats.mean(axis=0), 0, atol=1e-4)


def test_waveform_checks(tmp_path):
    config = FbankConfig({"dither": 0.0, "min-duration": 0.5}, source="my.conf")
    stereo = np.ones((16000, 2), dtype=np.float32) * [1, 2]
    with pytest.raises(UtteranceError, match=r"sample rate 8000 Hz does not match --sample-frequency=16000 in my.conf"):
        prepare_waveform(stereo, 8000, config)
    with pytest.raises(UtteranceError, match=r"under --min-duration=0\.5"):
        prepare_waveform(stereo[:4000], 16000, config)
    np.testing.assert_array_equal(prepare_waveform(stereo, 16000, config), 1)  # --channel=-1: first channel
    assert prepare_waveform(stereo, 16000, FbankConfig({"channel": 1}))[0] == 2
    with pytest.raises(UtteranceError, match="--channel=2 but the audio has 2 channel"):
        prepare_waveform(stereo, 16000, FbankConfig({"channel": 2}))
    with pytest.raises(UtteranceError, match="too short: 300 samples give no frame"):
        prepare_waveform(stereo[:300], 16000, FbankConfig())


def test_read_audio_int16_scale_and_pipes(tmp_path):
    wav = write_wav(str(tmp_path / "a.wav"))
    plain, rate = read_audio(wav)
    assert rate == 16000 and plain.shape == (len(int16_samples(wav)), 1)
    np.testing.assert_array_equal(plain[:, 0], int16_samples(wav))
    for entry in (f"cat {wav} |", f"sox {wav} -t wav - |", f"  sox {wav} -t wav -|  "):
        piped, piped_rate = read_audio(entry)
        assert piped_rate == rate
        np.testing.assert_array_equal(piped, plain)


def test_pipe_wav_with_streaming_sizes(tmp_path):
    """A writer on a pipe leaves 0 or 0xFFFFFFFF as sizes; all samples must still be read."""
    wav = write_wav(str(tmp_path / "a.wav"))
    data = bytearray(Path(wav).read_bytes())
    data_pos = data.index(b"data")
    for size in (0, 0xFFFFFFFF):
        streamed = bytearray(data)
        streamed[4:8] = struct.pack("<I", size)
        streamed[data_pos + 4:data_pos + 8] = struct.pack("<I", size)
        path = tmp_path / f"streamed{size}.wav"
        path.write_bytes(bytes(streamed))
        samples, _ = read_audio(f"cat {path} |")
        np.testing.assert_array_equal(samples[:, 0], int16_samples(wav))


def test_read_audio_errors(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "garbage.wav").write_bytes(b"this is not audio" * 50)
    cases = [
        (str(tmp_path / "missing.wav"), "no such file"),
        (str(tmp_path / "empty.wav"), "empty file"),
        (str(tmp_path / "garbage.wav"), "cannot read audio from"),
        ("false |", "command 'false' failed with exit code 1"),
        ("sox /nonexistent.flac -t wav - |", "failed with exit code"),
        ("true |", "command 'true' produced no output"),
    ]
    for entry, message in cases:
        with pytest.raises(UtteranceError, match=message):
            read_audio(entry)


def test_cut_segment_as_extract_segments():
    samples = np.arange(16000, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(cut_segment(samples, 16000, 0.25, 0.5)[:, 0], np.arange(4000, 8000))
    assert cut_segment(samples, 16000, 0.5, -1).shape[0] == 8000  # -1: to the end
    assert cut_segment(samples, 16000, 0.5, 1.3).shape[0] == 8000  # small overshoot truncated
    with pytest.raises(UtteranceError, match="beyond the end of the recording"):
        cut_segment(samples, 16000, 0.5, 1.6)
    with pytest.raises(UtteranceError, match="outside the recording"):
        cut_segment(samples, 16000, 1.2, 1.4)
    with pytest.raises(UtteranceError, match="is empty"):
        cut_segment(samples, 16000, 0.5, 0.5)


def test_segments_cut_and_read_each_recording_once(tmp_path):
    wav = write_wav(str(tmp_path / "rec.wav"), seconds=3.0)
    count_file = tmp_path / "reads"
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"rec1 sh -c 'echo read >> {count_file}; cat {wav}' |\n")
    (data / "segments").write_text("rec1-a rec1 0.00 1.00\nrec1-b rec1 0.50 2.25\nrec1-c rec1 2.00 9.00\n"
                                   "rec2-a rec2 0 1\n")
    sources = utterance_sources(str(data))
    assert [s.utt for s in sources] == ["rec1-a", "rec1-b", "rec1-c", "rec2-a"]
    results = {s.utt: (samples, error) for s, samples, _, error in iter_utterance_audio(sources)}
    assert count_file.read_text() == "read\n"
    whole = int16_samples(wav)
    np.testing.assert_array_equal(results["rec1-a"][0][:, 0], whole[:16000])
    np.testing.assert_array_equal(results["rec1-b"][0][:, 0], whole[8000:36000])
    assert "beyond the end of the recording" in results["rec1-c"][1]
    assert results["rec2-a"][1] == "recording 'rec2' is not in wav.scp"
    config = FbankConfig({"dither": 0.0, "num-mel-bins": 80})
    by_hand = compute_fbank(whole[8000:36000], config)
    np.testing.assert_array_equal(compute_fbank(results["rec1-b"][0][:, 0], config), by_hand)


def test_shard_is_contiguous_partition():
    items = list(range(10))
    shards = [shard(items, job, 3) for job in (1, 2, 3)]
    assert list(itertools.chain.from_iterable(shards)) == items and [len(s) for s in shards] == [3, 4, 3]
    assert sorted(len(shard(items[:2], job, 4)) for job in (1, 2, 3, 4)) == [0, 0, 1, 1]
    with pytest.raises(ValueError):
        shard(items, 4, 3)


@pytest.mark.parametrize("compress", [False, True])
def test_ark_scp_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    arrays = {f"utt{i}": (rng.standard_normal((50 + i, 80)) * 3 - 5).astype(np.float32) for i in (2, 10, 1)}
    arrays["vec"] = np.array([0, 1, 1, 0], dtype=np.float32)
    ark, scp = tmp_path / "x.ark", tmp_path / "x.scp"
    with ArkScpWriter(str(ark), str(scp), compress=compress) as writer:
        for key, array in arrays.items():
            writer.write(key, array)
    lines = scp.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["utt1", "utt10", "utt2", "vec"]  # C-sorted
    assert all(line.split()[1].startswith(str(ark) + ":") for line in lines)
    loaded = kaldiio.load_scp(str(scp))
    for key, array in arrays.items():
        if compress and array.ndim == 2:
            # Kaldi's 8-bit speech-feature compression: error well under 1% of each column's range.
            span = array.max(axis=0) - array.min(axis=0)
            assert np.all(np.abs(loaded[key] - array) <= 0.01 * span + 1e-6)
        else:
            np.testing.assert_array_equal(loaded[key], array)
    assert kaldiio.load_mat(lines[0].split()[1]).shape == (51, 80)


def test_ark_writer_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), ArkScpWriter(str(tmp_path / "x.ark"), str(tmp_path / "x.scp")) as writer:
        writer.write("a", np.zeros((3, 2), dtype=np.float32))
        raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []


def test_run_feature_job_counts_failures(tmp_path, caplog):
    good = write_wav(str(tmp_path / "good.wav"))
    sources = [UtteranceSource("a", "a", good), UtteranceSource("b", "b", str(tmp_path / "missing.wav")),
               UtteranceSource("c", "c", good)]

    def compute(source, samples, rate):
        if source.utt == "c":
            raise UtteranceError("rejected")
        return samples[:10, 0].copy(), len(samples)

    caplog.set_level("INFO")
    with ArkScpWriter(str(tmp_path / "x.ark"), str(tmp_path / "x.scp")) as writer:
        infos, failed = run_feature_job(sources, compute, writer)
    assert list(infos) == ["a"] and failed == 2
    assert "b: no such file" in caplog.text and "c: rejected" in caplog.text
    assert "Done 1 utterances, failed 2" in caplog.text
    assert list(kaldiio.load_scp(str(tmp_path / "x.scp"))) == ["a"]


@pytest.mark.parametrize("overrides", [
    {"dither": 0.0},
    {"dither": 0.0, "snip-edges": False, "frame-shift": 12.5},
    {"dither": 0.0, "energy-floor": 1e6, "remove-dc-offset": False},
])
def test_log_energy_equals_kaldi_energy_column(tmp_path, overrides):
    """Our framed log energy is Kaldi's raw log energy (the fbank/MFCC --use-energy column)."""
    wave = int16_samples(write_wav(str(tmp_path / "a.wav")))
    wave[2000:4000] = 0  # digital silence hits the FLT_EPSILON / energy floor
    config = FbankConfig(overrides)
    energy = frame_log_energy(wave, config)
    with_energy = FbankConfig({**overrides, "use-energy": True})
    np.testing.assert_allclose(energy, compute_fbank(wave, with_energy)[:, 0], rtol=1e-5, atol=1e-4)


def kaldi_vad_reference(log_energy, config):
    """compute-vad's loop, written out frame by frame as in Kaldi's voice-activity-detection.cc."""
    num_frames = len(log_energy)
    threshold = config.energy_threshold + config.energy_mean_scale * log_energy.sum() / num_frames
    out = np.zeros(num_frames, dtype=np.float32)
    for t in range(num_frames):
        window = [log_energy[t2] for t2 in range(t - config.frames_context, t + config.frames_context + 1)
                  if 0 <= t2 < num_frames]
        out[t] = sum(e > threshold for e in window) >= len(window) * config.proportion_threshold
    return out


@pytest.mark.parametrize("values", [{}, {"vad-frames-context": 2, "vad-proportion-threshold": 0.12},
                                    {"vad-frames-context": 5, "vad-energy-mean-scale": 0.0}])
def test_vad_decision_equals_kaldi_loop(values):
    config = VadConfig(values)
    log_energy = np.random.default_rng(3).uniform(0, 25, size=300).astype(np.float32)
    np.testing.assert_array_equal(compute_vad(log_energy, config), kaldi_vad_reference(log_energy, config))
    assert compute_vad(np.zeros(0), config).shape == (0,)


def test_vad_finds_speech_and_silence(tmp_path):
    rate = 16000
    rng = np.random.default_rng(0)
    t = np.arange(rate) / rate
    speech = 0.3 * (np.sin(2 * np.pi * 150 * t) + 0.5 * np.sin(2 * np.pi * 450 * t))
    silence = 1e-4 * rng.standard_normal(rate)
    # 1 s silence, 1 s speech, 1 s silence, 1 s speech.
    wave = (np.concatenate([silence, speech, silence[::-1], speech]) * 32768).astype(np.float32)
    fbank_config = FbankConfig.from_file(FBANK_CONF)
    decision = compute_vad(frame_log_energy(wave, fbank_config),
                           VadConfig.from_file(os.path.join(ROOT, "conf", "vad.conf")))
    assert decision.shape == (fbank_config.num_frames(len(wave)),)
    margin = 5  # frames near a boundary may go either way (context, frame overlap)
    for first, last, voiced in ((0, 100, 0), (100, 200, 1), (200, 300, 0), (300, 398, 1)):
        assert np.all(decision[first + margin:last - margin] == voiced), (first, last)
