"""pyspk.features.torch_fbank against kaldi-native-fbank on real speech, and the extractor's torch backend."""

import glob
import os
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT, run_script, shared_corpus

from pyspk.features.fbank import FBANK_SPEC, FbankConfig, KaldiOptionError, compute_fbank, read_kaldi_conf
from pyspk.features.torch_fbank import TorchFbank

FBANK_CONF = os.path.join(ROOT, "conf", "fbank.conf")
TOLERANCE = 2e-3  # max abs difference of log features at float32 (issue 16)

# Option sets on top of conf/fbank.conf; together they change every option that affects the features.
OPTION_SETS = {
    "conf": {},
    "hamming-no-snip-energy": {"window-type": "hamming", "snip-edges": False, "use-energy": True},
    "40-bins-band-magnitude": {"num-mel-bins": 40, "low-freq": 100.0, "high-freq": -400.0, "use-power": False},
    "blackman-windowed-energy": {"window-type": "blackman", "blackman-coeff": 0.4, "use-energy": True,
                                 "raw-energy": False, "energy-floor": 1.0, "htk-compat": True,
                                 "round-to-power-of-two": False, "preemphasis-coefficient": 0.5,
                                 "remove-dc-offset": False},
    "sine-odd-frames-mean": {"window-type": "sine", "frame-length": 20.0, "frame-shift": 7.0,
                             "snip-edges": False, "subtract-mean": True},
    "8k-hanning": {"sample-frequency": 8000.0, "window-type": "hanning", "num-mel-bins": 23, "frame-length": 32.0,
                   "high-freq": 3800.0},
    "rectangular-linear": {"window-type": "rectangular", "use-log-fbank": False, "preemphasis-coefficient": 0.0},
}


def speech_corpus():
    return os.path.join(shared_corpus("arabic_speech_commands"), "dataset")


def fbank_config(**options):
    return FbankConfig({**read_kaldi_conf(FBANK_CONF, FBANK_SPEC), **options})


@pytest.fixture(scope="module")
def speech():
    """Real utterances of different lengths: 1 to 3 keywords of one speaker and round joined, one cut short."""
    files = sorted(glob.glob(os.path.join(speech_corpus(), "*", "00000002_NO_01.flac")))[:6]
    assert len(files) == 6, f"{speech_corpus()}: fewer than 6 files of speaker 00000002 round 1"
    clips = [sf.read(f, dtype="int16")[0].astype(np.float32) for f in files]
    return [clips[0], np.concatenate(clips[1:3]), np.concatenate(clips[3:6]), clips[5][:12345]]


def batch_of(waves):
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, :len(w)] = torch.from_numpy(w)
    return batch, lengths


@pytest.mark.parametrize("name", OPTION_SETS)
def test_matches_kaldi_native_fbank_on_real_speech(speech, name):
    options = OPTION_SETS[name]
    config = fbank_config(**options)
    waves = speech
    if config.sample_rate != 16000:  # every other sample: still speech, now at 8 kHz
        waves = [w[::2].copy() for w in speech]
    fbank = TorchFbank(config)
    feats, num_frames = fbank(*batch_of(waves))
    assert feats.dtype == torch.float32 and feats.shape[2] == config.dim
    for i, wave in enumerate(waves):
        expected = compute_fbank(wave, config)
        assert num_frames[i] == expected.shape[0] == config.num_frames(len(wave))
        got = feats[i, :num_frames[i]].numpy()
        if config.values["use-log-fbank"]:
            assert np.abs(got - expected).max() <= TOLERANCE
        else:  # linear energies: compare relative to each value
            assert (np.abs(got - expected) / np.maximum(np.abs(expected), 1.0)).max() <= TOLERANCE
        assert not feats[i, num_frames[i]:].any(), "frames past the utterance's end must be zero"


def test_batched_equals_per_utterance(speech):
    fbank = TorchFbank(fbank_config(**{"snip-edges": False}))
    feats, num_frames = fbank(*batch_of(speech))
    for i, wave in enumerate(speech):
        alone, frames_alone = fbank(torch.from_numpy(wave)[None])
        assert frames_alone.item() == num_frames[i]
        torch.testing.assert_close(feats[i, :num_frames[i]], alone[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("snip_edges", [True, False])
def test_frame_counts_and_short_waveforms(speech, snip_edges):
    """Kaldi's frame count for lengths around the frame size, and the mirrored edges of very short audio."""
    config = fbank_config(**{"snip-edges": snip_edges})
    fbank = TorchFbank(config)
    lengths = [0, 1, 79, 80, 100, 399, 400, 401, 559, 560, 561, 16000]
    assert fbank.num_frames(torch.tensor(lengths)).tolist() == [config.num_frames(n) for n in lengths]
    waves = [speech[2][4000:4000 + n] for n in lengths]
    feats, num_frames = fbank(*batch_of(waves))
    assert num_frames.tolist() == [config.num_frames(n) for n in lengths]
    for i, wave in enumerate(waves):
        if num_frames[i]:
            expected = compute_fbank(wave, config)
            assert np.abs(feats[i, :num_frames[i]].numpy() - expected).max() <= TOLERANCE


def test_dither():
    """Dither adds Gaussian noise of std --dither: its statistics match Kaldi's; a seeded generator repeats it."""
    config = fbank_config(dither=1.0)
    silence = np.zeros(80000, dtype=np.float32)  # exact digital silence: the features are the noise's
    fbank = TorchFbank(config)
    first, _ = fbank(torch.from_numpy(silence)[None], generator=torch.Generator().manual_seed(1))
    again, _ = fbank(torch.from_numpy(silence)[None], generator=torch.Generator().manual_seed(1))
    other, _ = fbank(torch.from_numpy(silence)[None], generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, again) and not torch.equal(first, other)
    expected = compute_fbank(silence, config)
    # a noise std off by a factor of 2 would shift the mean log energy by log(4)
    assert abs(first[0].mean().item() - expected.mean()) < 0.05
    no_dither = TorchFbank(fbank_config(dither=0.0))(torch.from_numpy(silence)[None])[0]
    assert torch.all(no_dither == torch.log(torch.tensor(torch.finfo(torch.float32).eps)))


def test_unsupported_option_is_named():
    with pytest.raises(KaldiOptionError, match="--debug-mel"):
        TorchFbank(fbank_config(**{"debug-mel": True}))
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        TorchFbank(fbank_config())(torch.zeros(16000))


def real_speech_data_dir(path):
    """A data dir of four real utterances (two speakers), wav.scp pointing into the shared corpus."""
    os.makedirs(path)
    utts = {f"{spk}-{word}": os.path.join(speech_corpus(), word, f"{spk}_NO_01.flac")
            for spk in ("00000002", "00000003") for word in ("left", "right")}
    with open(os.path.join(path, "wav.scp"), "w") as f:
        f.writelines(f"{utt} {wav}\n" for utt, wav in sorted(utts.items()))
    with open(os.path.join(path, "utt2spk"), "w") as f:
        f.writelines(f"{utt} {utt.split('-')[0]}\n" for utt in sorted(utts))
    with open(os.path.join(path, "spk2utt"), "w") as f:
        for spk in ("00000002", "00000003"):
            f.write(spk + " " + " ".join(u for u in sorted(utts) if u.startswith(spk)) + "\n")
    return path


def test_make_fbank_torch_backend_matches_default(tmp_path):
    data = real_speech_data_dir(str(tmp_path / "kaldi-native"))
    torch_data = real_speech_data_dir(str(tmp_path / "torch"))
    run_script(["steps/make_fbank.sh", "--nj", "1", "--compress", "false", data])
    proc = run_script(["steps/make_fbank.sh", "--nj", "1", "--compress", "false", "--backend", "torch", torch_data])
    assert "succeeded making fbank features for torch (4 utterances)" in proc.stdout
    expected = dict(kaldiio.load_scp(os.path.join(data, "feats.scp")).items())
    got = dict(kaldiio.load_scp(os.path.join(torch_data, "feats.scp")).items())
    assert sorted(got) == sorted(expected)
    for utt, feats in expected.items():
        assert got[utt].shape == feats.shape
        assert np.abs(got[utt] - feats).max() <= TOLERANCE
    for name in ("utt2num_frames", "utt2dur"):
        assert Path(torch_data, name).read_text() == Path(data, name).read_text()
    log = Path(torch_data, "log", "make_fbank_torch.1.log").read_text()
    assert "torch backend" in log and "Done 4 utterances, failed 0" in log

    bad = run_script(["steps/make_fbank.sh", "--backend", "numpy", torch_data], check=False)
    assert bad.returncode != 0 and "--backend must be kaldi-native or torch" in bad.stderr


def test_compute_fbank_names_a_bad_device(tmp_path):
    from pyspk.bin import compute_fbank as compute_fbank_bin

    data = real_speech_data_dir(str(tmp_path / "data"))
    with pytest.raises(SystemExit, match="--device bogus: not a device"):
        compute_fbank_bin.main(["--backend", "torch", "--device", "bogus", "--config", FBANK_CONF, data,
                                str(tmp_path / "x.ark"), str(tmp_path / "x.scp")])
    assert not os.path.exists(tmp_path / "x.ark")
