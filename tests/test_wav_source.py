"""Training from raw audio (data.source: wav): crops, seeking, pipes/segments, online augmentation, training."""

import csv
import os
import shutil
import subprocess
import sys

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT, shared_corpus

from pyspk.config import ConfigError, load_config
from pyspk.features.fbank import FbankConfig, compute_fbank
from pyspk.supervised.classifier import utterance_labels
from pyspk.train import wav_data
from pyspk.train.data import CropDataset
from pyspk.train.online_aug import OnlineAugmenter, WavFrontend, fft_convolve, online_aug_options
from pyspk.train.wav_data import WavCropDataset, build_training_source, crop_samples

FBANK_CONF = os.path.join(ROOT, "conf", "fbank.conf")
TINY = os.path.join(ROOT, "conf", "dino_tiny.yaml")
CROPS = {"global": {"count": 2, "frames": 60}, "local": {"count": 3, "frames": 40}}
WORDS = ("no", "yes", "left", "right")

pytestmark = pytest.mark.usefixtures("one_thread")


def speech_files(count):
    """``count`` real-speech flac files: two speakers per word."""
    corpus = os.path.join(shared_corpus("arabic_speech_commands"), "dataset")
    files = []
    for word in WORDS:
        names = sorted(os.listdir(os.path.join(corpus, word)))
        files += [os.path.join(corpus, word, n) for n in names[:count // len(WORDS)]]
    return files


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory):
    """A data dir of 8 real flac utterances (wav.scp, utt2spk) and their stored fbank (feats.scp)."""
    path = str(tmp_path_factory.mktemp("speech"))
    config = FbankConfig.from_file(FBANK_CONF)
    wav_scp, utt2spk, feats = [], [], {}
    for i, file in enumerate(speech_files(8)):
        utt = f"spk{i % 2}-u{i:02d}"
        wav_scp.append(f"{utt} {file}\n")
        utt2spk.append(f"{utt} spk{i % 2}\n")
        audio, _ = sf.read(file, dtype="float32")
        feats[utt] = compute_fbank(audio * 32768.0, config)
    with open(os.path.join(path, "wav.scp"), "w") as f:
        f.writelines(sorted(wav_scp))
    with open(os.path.join(path, "utt2spk"), "w") as f:
        f.writelines(sorted(utt2spk))
    with kaldiio.WriteHelper(f"ark,scp:{path}/feats.ark,{path}/feats.scp") as writer:
        for utt in sorted(feats):
            writer(utt, feats[utt])
    return path


def frontend(dataset, online_aug=None):
    return WavFrontend(dataset.fbank, online_aug, dataset.aug_prob, seed=3, rank=0, device=torch.device("cpu"),
                       speech=dataset.speech_clips)


def features_of(front, item, step=0):
    crops = {name: batch[None] for name, batch in item["crops"].items()}
    return {name: feats[0] for name, feats in front(crops, step).items()}


def test_wav_crops_equal_the_stored_feature_crops(speech_dir):
    wav = WavCropDataset(speech_dir, CROPS, FbankConfig.from_file(FBANK_CONF), seed=5)
    feats = CropDataset(speech_dir, CROPS, seed=5)
    front = frontend(wav)
    for key in [(0, 0), (3, 1), (7, 2)]:
        from_audio = features_of(front, wav[key])
        from_arks = feats[key]["crops"]
        for name, (count, frames) in (("global", (2, 60)), ("local", (3, 40))):
            assert from_audio[name].shape == (count, frames, 80)
            assert torch.allclose(from_audio[name], from_arks[name], atol=2e-3), name


def test_disjoint_crops_equal_the_stored_feature_crops(speech_dir):
    wav = WavCropDataset(speech_dir, CROPS, FbankConfig.from_file(FBANK_CONF), seed=5, non_overlapping=True)
    feats = CropDataset(speech_dir, CROPS, seed=5, non_overlapping=True)
    from_audio = features_of(frontend(wav), wav[(2, 0)])
    for name, crop in feats[(2, 0)]["crops"].items():
        assert torch.allclose(from_audio[name], crop, atol=2e-3)


def test_seeking_reads_only_the_crop(speech_dir, monkeypatch):
    wav = WavCropDataset(speech_dir, CROPS, FbankConfig.from_file(FBANK_CONF))
    utt = wav.utts[1]
    full, _ = sf.read(wav.sources[utt].entry, dtype="float32")

    def no_decode(*args):
        raise AssertionError("the whole file was decoded")

    monkeypatch.setattr(wav_data, "read_audio", no_decode)
    span = wav.read_span(utt, 1234, crop_samples(40, wav.fbank))
    assert len(span) == 39 * 160 + 400 and np.array_equal(span, full[1234:1234 + len(span)] * 32768.0)
    assert wav.num_samples(utt) == len(full)


@pytest.mark.parametrize("suffix, subtype", [("wav", "PCM_16"), ("flac", "PCM_16"), ("wav", "PCM_24"),
                                             ("wav", "FLOAT")])
def test_spans_read_together_equal_each_read_alone(tmp_path, suffix, subtype):
    audio = np.concatenate([sf.read(f, dtype="float64")[0] for f in speech_files(4)])
    audio[::7] += 3e-6 * (subtype != "PCM_16")  # samples between the 16-bit steps
    path = str(tmp_path / f"rec.{suffix}")
    sf.write(path, audio, 16000, subtype=subtype)
    full = sf.read(path, dtype="float32")[0] * 32768.0
    with open(tmp_path / "wav.scp", "w") as f:
        f.write(f"rec {path}\n")
    with open(tmp_path / "segments", "w") as f:  # and an offset into the recording
        f.write("rec-a rec 0.00 -1\nrec-b rec 0.25 -1\n")
    wav = WavCropDataset(str(tmp_path), CROPS, FbankConfig.from_file(FBANK_CONF))
    for utt, offset in (("rec-a", 0), ("rec-b", 4000)):
        length = len(full) - offset
        in_file = [(20000, 6400), (100, 4000), (2000, 4000), (100, 4000), (50000, 3000), (0, 1), (length - 10, 10)]
        past_end = [(length - 500, 1000), (30000, 3000)]  # the first wraps: all from the decoded utterance
        for spans in (in_file, past_end):
            rows = [np.empty(count, np.float32) for _, count in spans]
            wav.read_spans_into(utt, spans, rows)
            for (start, count), row in zip(spans, rows, strict=True):
                expected = full[offset + (start + np.arange(count)) % length]
                assert np.array_equal(row, expected) and np.array_equal(wav.read_span(utt, start, count), expected)


def test_an_item_opens_its_file_once(speech_dir, monkeypatch):
    wav = WavCropDataset(speech_dir, CROPS, FbankConfig.from_file(FBANK_CONF))
    opened = []  # for the header's length and all the crops, the length not yet known

    class CountedSoundFile(sf.SoundFile):
        def __init__(self, *args, **kwargs):
            opened.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(wav_data.sf, "SoundFile", CountedSoundFile)
    wav[(3, 0)]
    assert opened == [wav.sources[wav.utts[3]].entry]


def test_pipes_and_segments(speech_dir, tmp_path):
    file = speech_files(4)[0]
    full, _ = sf.read(file, dtype="float32")
    with open(tmp_path / "wav.scp", "w") as f:
        f.write(f"pipe sox {file} -t wav - |\nrec {file}\n")
    with open(tmp_path / "segments", "w") as f:
        f.write("pipe-a pipe 0.10 0.80\nrec-a rec 0.20 -1\n")
    fbank = FbankConfig.from_file(FBANK_CONF)
    wav = WavCropDataset(str(tmp_path), CROPS, fbank, cache_mb=1)
    assert wav.num_samples("pipe-a") == 11200
    assert wav.num_samples("rec-a") == len(full) - 3200
    assert np.allclose(wav.read_span("pipe-a", 160, 400), full[1760:2160] * 32768.0, atol=0.5)
    assert np.array_equal(wav.read_span("rec-a", 160, 400), full[3360:3760] * 32768.0)
    assert wav.cache.items["pipe-a"].dtype == np.int16  # decoded once, cached as 16-bit
    item = wav[(0, 0)]
    assert item["crops"]["global"].shape == (2, crop_samples(60, fbank))


def test_unreadable_utterance_is_skipped_and_counted(speech_dir, tmp_path):
    file = speech_files(4)[0]
    with open(tmp_path / "wav.scp", "w") as f:
        f.write(f"a {tmp_path}/missing.flac\nb {file}\n")
    wav = WavCropDataset(str(tmp_path), CROPS, FbankConfig.from_file(FBANK_CONF))
    item = wav[(0, 0)]
    assert item["index"] == 1 and item["skipped"] == 1


def test_determinism_of_crops_and_augmentation(speech_dir):
    wav = WavCropDataset(speech_dir, CROPS, FbankConfig.from_file(FBANK_CONF), seed=5, aug_prob=1.0)
    a, b, other = wav[(4, 1)], wav[(4, 1)], wav[(4, 2)]
    assert all(torch.equal(a["crops"][n], b["crops"][n]) for n in a["crops"])
    assert not torch.equal(a["crops"]["global"], other["crops"]["global"])
    front = frontend(wav, {"bank_size": 4})
    first, again, later = features_of(front, a, 7), features_of(frontend(wav, {"bank_size": 4}), a, 7), \
        features_of(front, a, 8)
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not torch.equal(first["local"], later["local"])


def speech_batch(count=6, samples=16000):
    files = speech_files(8)[:count]
    return torch.stack([torch.from_numpy(sf.read(f, dtype="float32")[0][:samples] * 32768.0) for f in files])


@pytest.mark.parametrize("kind", ["noise", "music"])
def test_online_noise_has_the_drawn_snr(kind):
    options = online_aug_options({"types": {kind: 1.0}, "bank_size": 3, "noise_interval": 0.0})
    augmenter = OnlineAugmenter(options, 16000, torch.device("cpu"), seed=1)
    x = speech_batch().double().float()
    plan = augmenter.draw(len(x), 1.0, torch.Generator().manual_seed(0))
    noise = augmenter.apply(x, plan) - x
    measured = 10 * torch.log10(x.square().mean(dim=1) / noise.square().mean(dim=1))
    assert torch.allclose(measured, plan[f"{kind}_snr"][:, 0], atol=0.05)
    assert set(plan[f"{kind}_snr"][:, 0].tolist()) <= set(options["snrs"][kind])


def test_foreground_noise_snr_is_over_the_noisy_samples():
    options = online_aug_options({"types": {"noise": 1.0}, "bank_size": 2, "noise_interval": 1.0,
                                  "max_noise_sec": 0.3})
    augmenter = OnlineAugmenter(options, 16000, torch.device("cpu"), seed=1)
    x = speech_batch(2)
    plan = augmenter.draw(2, 1.0, torch.Generator().manual_seed(0))
    noise = augmenter.apply(x, plan) - x
    sounding = noise.abs() > 0
    assert 0 < sounding.float().mean() < 0.5  # 0.3 s of noise, 1 s of silence
    measured = 10 * torch.log10(x.square().mean(dim=1) / (noise.square().sum(dim=1) / sounding.sum(dim=1)))
    assert torch.allclose(measured, plan["noise_snr"][:, 0], atol=0.1)


def constant_speech(count, max_samples, rng):
    return [np.full(min(max_samples, 8000), 100.0 * (i + 1)) for i in range(count)]


def test_babble_and_reverb_change_the_crops():
    options = online_aug_options({"types": {"reverb": 1.0, "babble": 1.0}, "bank_size": 2})
    augmenter = OnlineAugmenter(options, 16000, torch.device("cpu"), seed=1, speech=constant_speech)
    x = speech_batch()
    out = augmenter(x, 1.0, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, x)
    # reverb and babble keep the crop's power within the SNR range's reach
    assert torch.allclose(out.square().mean(dim=1).log10(), x.square().mean(dim=1).log10(), atol=0.5)


def test_babble_comes_from_the_bank_not_from_the_batch():
    # The batch's other crops are a contrastive objective's negatives: babble must never sum them.
    options = online_aug_options({"types": {"babble": 1.0}, "bank_size": 4})
    augmenter = OnlineAugmenter(options, 16000, torch.device("cpu"), seed=1, speech=constant_speech)
    x = speech_batch()
    added = augmenter(x, 1.0, torch.Generator().manual_seed(0)) - x
    assert (added.abs() > 0).all()
    assert torch.allclose(added, added[:, :1].expand_as(added), rtol=1e-4)  # constant clips: a constant offset
    with pytest.raises(ConfigError, match="babble without musan_dir"):
        OnlineAugmenter(options, 16000, torch.device("cpu"), seed=1)


def test_babble_bank_reads_the_training_utterances(speech_dir):
    dataset = WavCropDataset(speech_dir, CROPS, FbankConfig.from_file(FBANK_CONF), seed=0)
    clips = dataset.speech_clips(3, 4000, np.random.default_rng(0))
    assert len(clips) == 3 and all(len(c) == 4000 for c in clips)
    assert all(np.abs(c).max() > 100 for c in clips)  # int16-range speech, not silence


def test_fft_convolution_equals_numpy():
    rng = np.random.default_rng(0)
    x, rirs = rng.standard_normal((3, 500)), rng.standard_normal((3, 120))
    shifts = np.array([0, 7, 119])
    out = fft_convolve(torch.from_numpy(x), torch.from_numpy(rirs), torch.from_numpy(shifts))
    for i in range(3):
        expected = np.convolve(x[i], rirs[i])[shifts[i]:shifts[i] + 500]
        assert np.allclose(out[i].numpy(), expected, atol=1e-9)


@pytest.mark.parametrize(("override", "key"), [
    ("data.source=bogus", "data.source"),
    ("data.online_aug={types: {echo: 1}}", "data.online_aug.types"),
    ("data.online_aug={snrs: {noise: []}}", "data.online_aug.snrs.noise"),
    ("data.online_aug={prob: 2}", "data.online_aug.prob"),
    ("data.online_aug={rir_sets: [attic]}", "data.online_aug.rir_sets"),
    ("data.fbank_conf=no/such.conf", "data.fbank_conf"),
])
def test_bad_config_values_name_the_key(speech_dir, override, key):
    config = load_config(TINY, ["data.source=wav", f"data.fbank_conf={FBANK_CONF}", override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        dataset = build_training_source(speech_dir, config["data"], 0)
        frontend(dataset, config["data"].get("online_aug"))


def test_wav_keys_need_the_wav_source(speech_dir):
    config = load_config(TINY, ["data.online_aug={prob: 0.5}"])
    with pytest.raises(ConfigError, match=r"data\.online_aug needs data\.source: wav"):
        build_training_source(speech_dir, config["data"], 0)
    with pytest.raises(ConfigError, match=r"data\.fbank_conf"):
        build_training_source(speech_dir, load_config(TINY, ["data.source=wav", "data.fbank_conf=null"])["data"], 0)


def test_training_from_raw_audio_runs_and_resumes(speech_dir, tmp_path):
    exp = str(tmp_path / "exp")
    overrides = ["data.source=wav", f"data.fbank_conf={FBANK_CONF}", "data.online_aug={bank_size: 4}",
                 "train.epochs=2", "train.log_every=1", "train.ckpt_every_steps=1"]
    command = [sys.executable, "-m", "pyspk.bin.train", "--config", TINY, "--device", "cpu"]
    first = subprocess.run([*command, "--max-steps", "1", speech_dir, exp, *overrides], capture_output=True,
                           text=True, check=False)
    assert first.returncode == 0, first.stderr
    assert not os.path.exists(os.path.join(exp, "final.pt"))
    second = subprocess.run([*command, speech_dir, exp, *overrides], capture_output=True, text=True, check=False)
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stderr and os.path.isfile(os.path.join(exp, "final.pt"))
    with open(os.path.join(exp, "metrics.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r["loss"])) for r in rows)


def test_classifier_labels_follow_the_raw_audio_dataset(speech_dir, tmp_path):
    # With data.source wav the crops index wav.scp, which need not list what feats.scp lists.
    data_dir = str(tmp_path / "data")
    shutil.copytree(speech_dir, data_dir)
    with open(os.path.join(data_dir, "feats.scp")) as f:
        lines = f.readlines()
    with open(os.path.join(data_dir, "feats.scp"), "w") as f:
        f.writelines(lines[1:])
    dataset = WavCropDataset(data_dir, CROPS, FbankConfig.from_file(FBANK_CONF), seed=0)
    classes, labels = utterance_labels(data_dir, source="wav")
    with open(os.path.join(data_dir, "utt2spk")) as f:
        utt2spk = dict(line.split() for line in f)
    assert [classes[label] for label in labels] == [utt2spk[utt] for utt in dataset.utts]
    assert len(utterance_labels(data_dir)[1]) == len(dataset) - 1
