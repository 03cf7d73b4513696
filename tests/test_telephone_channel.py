"""The simulated telephone channel (pyspk.augment.telephone): rate, band, codecs, determinism, the data-dir step
(utils/telephone_data_dir.sh) and the per-crop augmentation of raw-audio training crops (data.telephone)."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT, run_script

from pyspk.augment import telephone
from pyspk.augment.telephone import (
    CODECS,
    EXTERNAL_CODECS,
    CodecError,
    apply_channel,
    available_codecs,
    band_limit,
    check_codecs,
    codec_round_trip,
    draw_channel,
    utterance_rng,
)
from pyspk.config import ConfigError
from pyspk.data.datadir import DataDir
from pyspk.features.audio import read_audio
from pyspk.features.fbank import FbankConfig
from pyspk.train.wav_data import WavCropDataset, build_training_source

FBANK_8K = os.path.join(ROOT, "egs", "wuw", "v1", "conf", "fbank.conf")
HERE = available_codecs()


def speechlike(seconds=2.0, rate=8000, seed=0):
    """A voiced, speech-like signal: a gliding 100-180 Hz pitch, harmonics under three formants, 4 Hz rhythm."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = np.zeros_like(t)
    for k in range(1, 34):
        fk = k * f0
        amp = sum(np.exp(-0.5 * ((fk - fm) / 150) ** 2) for fm in (500, 1500, 2500)) + 0.05
        x += np.where(fk < min(rate / 2, 4000) - 200, amp / np.sqrt(k), 0) * np.sin(k * phase)
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return (x / np.abs(x).max() * 8000).astype(np.float32)


def tone_power(y, rate, freq):
    """Power of ``y`` at ``freq`` (Hz), from a Hann-windowed spectrum (the nearest bin)."""
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    return spectrum[round(freq * len(y) / rate)]


def channels(count, codecs=("mulaw",)):
    return [draw_channel(utterance_rng(777, f"utt{i}"), codecs) for i in range(count)]


def test_output_is_8khz_of_the_input_duration():
    x = speechlike(1.5, 16000)
    for channel in channels(5, HERE):
        assert len(apply_channel(x, 16000, channel)) == 12000
    # Back at the data's rate for training crops: the length kept.
    assert len(apply_channel(x, 16000, channels(1)[0], out_rate=16000)) == len(x)
    assert len(apply_channel(x[:8001], 8000, channels(1)[0], out_rate=8000)) == 8001


def test_band_is_the_telephone_band_and_nothing_folds_down():
    rate, seconds = 16000, 2.0
    t = np.arange(int(rate * seconds)) / rate
    tones = {100: 1.0, 150: 1.0, 1000: 1.0, 2000: 1.0, 4500: 1.0, 6300: 1.0}
    x = 3000 * sum(a * np.sin(2 * np.pi * f * t) for f, a in tones.items())
    for channel in channels(20):
        y = band_limit(x, rate, channel)
        ref = tone_power(y, 8000, 1000)
        assert tone_power(y, 8000, 2000) > ref * 10 ** -1.5  # in the band, within the handset's colour
        assert tone_power(y, 8000, 100) < ref * 10 ** -2.5   # the high-pass edge: > 25 dB down at 100 Hz
        assert tone_power(y, 8000, 150) < ref * 10 ** -1.5
        # 4.5 and 6.3 kHz are gone, not folded onto 3.5 and 1.7 kHz.
        assert tone_power(y, 8000, 3500) < ref * 1e-6 and tone_power(y, 8000, 1700) < ref * 1e-6


def test_band_on_white_noise():
    x = np.random.default_rng(0).standard_normal(16000 * 4) * 3000
    for channel in channels(10):
        spectrum = np.abs(np.fft.rfft(band_limit(x, 16000, channel))) ** 2
        freqs = np.fft.rfftfreq(4 * 8000, 1 / 8000)
        band = spectrum[(freqs > 500) & (freqs < 2500)].mean()
        assert spectrum[freqs < 150].mean() < band * 1e-2
        assert spectrum[freqs > 3900].mean() < band * 1e-1


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed (tools/install.sh installs it)")
def test_g711_is_bit_exact_with_sox():
    """Decoding: all 256 codes as sox decodes them; encoding: as sox (no dither) on the 14/13-bit grids the laws
    quantise (sox rounds the 16-bit input to them, the reference truncates: they differ only off the grid)."""
    for codec, encoding, step in (("mulaw", "u-law", 4), ("alaw", "a-law", 8)):
        x = np.arange(-32768, 32768, step).astype(np.int16)
        sox_codes = subprocess.run(["sox", "-D", "-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1", "-",
                                    "-t", "raw", "-e", encoding, "-b", "8", "-"], input=x.tobytes(),
                                   capture_output=True, check=True).stdout
        encode, decode = getattr(telephone, f"{codec}_encode"), getattr(telephone, f"{codec}_decode")
        assert np.array_equal(encode(x), np.frombuffer(sox_codes, np.uint8)), codec
        codes = np.arange(256, dtype=np.uint8)
        sox_pcm = subprocess.run(["sox", "-t", "raw", "-r", "8000", "-e", encoding, "-b", "8", "-c", "1", "-",
                                  "-t", "raw", "-e", "signed", "-b", "16", "-"], input=codes.tobytes(),
                                 capture_output=True, check=True).stdout
        assert np.array_equal(decode(codes), np.frombuffer(sox_pcm, "<i2")), codec


def aligned_correlation(x, y, max_lag=2):
    """The best correlation of ``y`` with ``x`` within ``max_lag`` samples (the edges left out)."""
    edge = 200
    return max(np.corrcoef(x[edge:-edge], np.roll(y, -lag)[edge:-edge])[0, 1] for lag in range(-max_lag, max_lag + 1))


def envelope_correlation(x, y):
    """Correlation of the smoothed log power spectra: for a vocoder, which keeps no waveform."""
    smooth = np.ones(64) / 64
    return np.corrcoef(*[np.log(np.convolve(np.abs(np.fft.rfft(s)) ** 2, smooth, "same") + 1) for s in (x, y)])[0, 1]


@pytest.mark.parametrize("codec", CODECS)
def test_codec_round_trip(codec):
    if codec not in HERE:
        pytest.skip(f"codec {codec}: its tool ({EXTERNAL_CODECS[codec][0]}) does not provide it here")
    x = speechlike()
    for setting in EXTERNAL_CODECS[codec][2] if codec in EXTERNAL_CODECS else [None]:
        y = codec_round_trip(x, codec, setting)
        assert len(y) == len(x) and y.dtype == np.float32, (codec, setting)
        if codec in telephone.NUMPY_CODECS:
            assert 10 * np.log10(np.sum(x**2) / np.sum((x - y) ** 2)) > 30, (codec, setting)
        elif codec == "codec2":
            assert envelope_correlation(x, y) > 0.85, (codec, setting)
        else:
            assert aligned_correlation(x, y) > 0.8, (codec, setting)


def test_line_noise_is_hum_and_hiss_at_the_drawn_snr(monkeypatch):
    monkeypatch.setattr(telephone, "codec_round_trip", lambda x, codec, setting: x)  # the noise alone, uncoded
    for channel in channels(10):
        hum = telephone.line_noise(16000, 8000, {**channel, "hum_share": 1.0})
        assert np.mean(hum**2) == pytest.approx(1.0, rel=0.01)
        total = np.sum(np.abs(np.fft.rfft(hum * np.hanning(16000))) ** 2)
        assert tone_power(hum, 8000, channel["mains_hz"]) > 0.3 * total  # the fundamental leads
        noise = apply_channel(np.zeros(16000), 8000, channel)  # silence in: the line noise out
        expected = 32768 * 10 ** ((channel["level_db"] - channel["snr_db"]) / 20)
        assert np.sqrt(np.mean(noise**2)) == pytest.approx(expected, rel=0.05)


def test_channel_is_drawn_per_utterance_and_reproducible():
    x = speechlike(1.0, 16000)
    first = apply_channel(x, 16000, draw_channel(utterance_rng(777, "a"), HERE))
    assert np.array_equal(first, apply_channel(x, 16000, draw_channel(utterance_rng(777, "a"), HERE)))
    assert not np.array_equal(first, apply_channel(x, 16000, draw_channel(utterance_rng(777, "b"), HERE)))
    assert not np.array_equal(first, apply_channel(x, 16000, draw_channel(utterance_rng(778, "a"), HERE)))
    drawn = {draw_channel(utterance_rng(1, f"u{i}"), HERE)["codec"] for i in range(200)}
    assert drawn == set(HERE)


def test_unknown_or_missing_codecs_are_named(monkeypatch):
    with pytest.raises(CodecError, match="unknown codec 'g729'"):
        check_codecs(["mulaw", "g729"])
    telephone._tool_listing.cache_clear()
    monkeypatch.setattr(telephone.shutil, "which", lambda tool: None)
    try:
        assert available_codecs() == ["mulaw", "alaw"]
        with pytest.raises(CodecError, match=r"codec .amr-nb. needs sox with .amr-nb.*available here: mulaw, alaw"):
            check_codecs(["mulaw", "amr-nb"])
    finally:
        telephone._tool_listing.cache_clear()


def write_wav(path, seconds, rate, seed=0):
    sf.write(path, np.round(speechlike(seconds, rate, seed)).astype(np.int16), rate, subtype="PCM_16")
    return str(path)


def tiny_data_dir(tmp_path, entries):
    data = tmp_path / "src"
    data.mkdir()
    (data / "wav.scp").write_text("".join(f"{utt} {entry}\n" for utt, entry in sorted(entries.items())))
    (data / "utt2spk").write_text("".join(f"{utt} {utt.split('-')[0]}\n" for utt in sorted(entries)))
    run_script(["utils/fix_data_dir.sh", str(data)])
    return str(data)


def test_data_dir_step_on_files_and_pipes(tmp_path):
    audio = tmp_path / "audio dir"
    audio.mkdir()
    flac = write_wav(audio / "a.flac", 1.2, 16000, seed=1)
    wav = write_wav(tmp_path / "b.wav", 0.8, 16000, seed=2)
    entries = {"s1-a": flac, "s1-b": wav, "s2-c": f"sox {wav} -t wav - |",
               "s2-d": f"ffmpeg -nostdin -loglevel error -i {wav} -f wav - |"}
    src = tiny_data_dir(tmp_path, entries)
    dest = str(tmp_path / "tel")
    proc = run_script(["utils/telephone_data_dir.sh", "--codecs", "mulaw alaw gsm", src, dest])
    assert "4 recordings" in proc.stdout
    scp = DataDir(dest).wav_scp()
    assert DataDir(dest).utt2spk() == DataDir(src).utt2spk()
    assert scp["s2-c"].startswith(f"sox {wav} -t wav - | {sys.executable} -m pyspk.bin.telephone_channel ")
    durations = {"s1-a": 1.2, "s1-b": 0.8, "s2-c": 0.8, "s2-d": 0.8}
    for utt, entry in scp.items():
        samples, rate = read_audio(entry)
        assert rate == 8000 and len(samples) == round(durations[utt] * 8000), utt
        assert np.abs(samples).max() > 100, utt
        assert np.array_equal(samples, read_audio(entry)[0]), utt  # the same every time it is read
    # A file and a pipe of the same audio under one id get the same channel.
    as_file = scp["s2-c"].replace(f"sox {wav} -t wav - | ", "").replace(" - - |", f" {wav} - |")
    assert np.array_equal(read_audio(scp["s2-c"])[0], read_audio(as_file)[0])


def test_data_dir_step_names_bad_lines_and_codecs(tmp_path):
    wav = write_wav(tmp_path / "a.wav", 0.5, 16000)
    src = tiny_data_dir(tmp_path, {"s1-a": wav, "s1-b": wav})
    with open(os.path.join(src, "wav.scp"), "a") as f:
        f.write("s1-c\n")
    proc = run_script(["utils/telephone_data_dir.sh", src, str(tmp_path / "out")], check=False)
    assert proc.returncode != 0 and f"{src}/wav.scp:3: expected at least 2 fields" in proc.stderr
    proc = run_script(["utils/telephone_data_dir.sh", "--codecs", "mulaw g729", src, str(tmp_path / "out2")],
                      check=False)
    assert proc.returncode != 0 and "unknown codec 'g729'" in proc.stderr
    assert not os.path.exists(tmp_path / "out2" / "wav.scp")


def test_channel_tool_names_the_utterance_and_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pyspk.bin.telephone_channel", "--utt-id", "u7",
                           str(tmp_path / "missing.wav"), "-"], capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and f"u7: no such file '{tmp_path}/missing.wav'" in proc.stderr
    listed = subprocess.run([sys.executable, "-m", "pyspk.bin.telephone_channel", "--list-codecs"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert listed == HERE


@pytest.fixture
def narrowband_dir(tmp_path):
    """Three 8 kHz utterances of constructed speech, as the telephone recipe's own training data."""
    entries = {f"s{i % 2}-u{i}": write_wav(tmp_path / f"u{i}.wav", 2.5, 8000, seed=i) for i in range(3)}
    return tiny_data_dir(tmp_path, entries)


CROPS = {"global": {"count": 2, "frames": 100}, "local": {"count": 2, "frames": 50}}


def test_training_crops_through_the_channel(narrowband_dir):
    fbank = FbankConfig.from_file(FBANK_8K)
    plain = WavCropDataset(narrowband_dir, CROPS, fbank, seed=3)
    phoned = WavCropDataset(narrowband_dir, CROPS, fbank, seed=3, telephone={"prob": 1.0, "codecs": ["mulaw", "alaw"]})
    half = WavCropDataset(narrowband_dir, CROPS, fbank, seed=3, telephone={"prob": 0.5})
    changed = []
    for index in range(3):
        a, b, c = plain[index, 0]["crops"], phoned[index, 0]["crops"], half[index, 0]["crops"]
        again = phoned[index, 0]["crops"]
        for name in CROPS:
            assert a[name].shape == b[name].shape
            assert np.array_equal(b[name], again[name])  # (seed, epoch, index) decides
            rows = [not np.array_equal(x, y) for x, y in zip(a[name], b[name], strict=True)]
            assert all(rows)
            # The channel is drawn after the crops: the same crops under it.
            for x, y in zip(a[name].numpy(), b[name].numpy(), strict=True):
                assert np.corrcoef(x, y)[0, 1] > 0.5
            assert np.array_equal(a[name], plain[index, 0]["crops"][name])
        changed += [not np.array_equal(x, y) for name in CROPS for x, y in zip(a[name], c[name], strict=True)]
    assert 0 < sum(changed) < len(changed)  # prob 0.5: some crops changed, some kept


def test_telephone_config_is_checked(narrowband_dir):
    cfg = {"source": "wav", "fbank_conf": FBANK_8K, "crops": CROPS}
    assert build_training_source(narrowband_dir, {**cfg, "telephone": {"prob": 0.3}}, 1).telephone["prob"] == 0.3
    for bad, message in (({"prob": 1.5}, "prob"), ({"codecs": ["gsm"]}, "codecs"), ({"tilt": 1}, "tilt"),
                         ({"prob": 0.5, "codecs": []}, "at least one codec")):
        with pytest.raises(ConfigError, match=message):
            build_training_source(narrowband_dir, {**cfg, "telephone": bad}, 1)
    with pytest.raises(ConfigError, match=r"data\.telephone needs data\.source: wav"):
        build_training_source(narrowband_dir, {"crops": CROPS, "telephone": {"prob": 0.5}}, 1)


def test_written_once_equals_the_pipe(tmp_path):
    """steps/convert_audio.sh writes the channel's output once (run.sh --extra-write-audio): the same samples."""
    wav = write_wav(tmp_path / "a.wav", 0.7, 16000)
    src = tiny_data_dir(tmp_path, {"s1-a": wav, "s2-b": f"sox {wav} -t wav - |"})
    run_script(["utils/telephone_data_dir.sh", src, str(tmp_path / "tel")])
    run_script(["steps/convert_audio.sh", "--nj", "1", str(tmp_path / "tel"), str(tmp_path / "flac"),
                str(tmp_path / "audio")])
    piped, written = DataDir(str(tmp_path / "tel")).wav_scp(), DataDir(str(tmp_path / "flac")).wav_scp()
    for utt, entry in piped.items():
        samples, rate = read_audio(written[utt])
        assert rate == 8000 and np.array_equal(samples, read_audio(entry)[0])
