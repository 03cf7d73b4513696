"""The offline demo corpus (local/): data dirs, audio, determinism, trials, baseline."""

import importlib.util
import os

import kaldiio
import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT, run_script

from pyspk.bin import score_fbank_baseline
from pyspk.data.datadir import DataDir, c_sort_key, read_trials

SPEAKERS, TEST_SPEAKERS, UTTS = 6, 2, 3
MIN_SEC, MAX_SEC = 1.0, 1.5
CORPUS_OPTS = ["--num-speakers", str(SPEAKERS), "--test-speakers", str(TEST_SPEAKERS),
               "--utts-per-speaker", str(UTTS), "--min-sec", str(MIN_SEC), "--max-sec", str(MAX_SEC)]


def load_local(name):
    """Import local/<name>.py (recipe scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "local", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("corpus")
    corpus_dir, data_root = str(base / "corpus"), str(base / "data")
    proc = run_script(["local/make_corpus.sh", "--nj", "2", "--num-trials", "40", *CORPUS_OPTS, corpus_dir, data_root])
    return corpus_dir, data_root, proc


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def test_data_dirs_sorted_consistent_and_disjoint(corpus):
    _, data_root, _ = corpus
    speakers = {}
    for subset in ("train", "test"):
        path = os.path.join(data_root, subset)
        for name in ("wav.scp", "utt2spk", "spk2utt", "utt2lang", "spk2gender"):
            lines = read_lines(os.path.join(path, name))
            assert lines == sorted(lines, key=c_sort_key), f"{subset}/{name} not C-sorted"
        data = DataDir(path)
        utt2spk = data.utt2spk()
        assert all(utt.startswith(spk + "-") for utt, spk in utt2spk.items())
        assert set(data.wav_scp()) == set(utt2spk)
        assert {spk: sorted(utts) for spk, utts in data.spk2utt().items()} == \
            {spk: sorted(u for u in utt2spk if utt2spk[u] == spk) for spk in set(utt2spk.values())}
        utt2lang = dict(line.split() for line in read_lines(data.file("utt2lang")))
        spk2gender = dict(line.split() for line in read_lines(data.file("spk2gender")))
        assert set(utt2lang) == set(utt2spk)
        assert set(spk2gender) == set(utt2spk.values()) and set(spk2gender.values()) <= {"m", "f"}
        assert all(len({utt2lang[u] for u in utts}) == 1 for utts in data.spk2utt().values())
        speakers[subset] = set(utt2spk.values())
    assert len(speakers["test"]) == TEST_SPEAKERS
    assert len(speakers["train"]) == SPEAKERS - TEST_SPEAKERS
    assert not speakers["train"] & speakers["test"]


def test_wavs_are_16k_mono_in_duration_range(corpus):
    _, data_root, _ = corpus
    for subset in ("train", "test"):
        for utt, path in DataDir(os.path.join(data_root, subset)).wav_scp().items():
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), utt
            assert MIN_SEC <= info.duration <= MAX_SEC, (utt, info.duration)
            audio, _ = sf.read(path)
            assert np.abs(audio).max() > 0.05, f"{utt} is (nearly) silent"


def test_trials_are_correct(corpus):
    _, data_root, _ = corpus
    test_dir = os.path.join(data_root, "test")
    utt2spk = DataDir(test_dir).utt2spk()
    trials = read_trials(os.path.join(test_dir, "trials"))
    # 2 speakers x 3 utts: all 6 same-speaker and 9 cross-speaker pairs (fewer than the 40 asked).
    assert sum(t for _, _, t in trials) == 6 and len(trials) == 15
    pairs = set()
    for enroll, test, is_target in trials:
        assert enroll != test
        assert is_target == (utt2spk[enroll] == utt2spk[test])
        pairs.add(frozenset((enroll, test)))
    assert len(pairs) == len(trials)
    keys = [(c_sort_key(e), c_sort_key(t)) for e, t, _ in trials]
    assert keys == sorted(keys)


def test_rerun_is_a_no_op_and_other_options_are_refused(corpus):
    corpus_dir, data_root, _ = corpus
    trials = os.path.join(data_root, "test", "trials")
    before = (os.path.getmtime(trials), read_lines(trials))
    proc = run_script(["local/make_corpus.sh", "--num-trials", "40", *CORPUS_OPTS, corpus_dir, data_root])
    assert "nothing to do" in proc.stdout
    assert (os.path.getmtime(trials), read_lines(trials)) == before
    proc = run_script(["local/make_corpus.sh", "--seed", "1", *CORPUS_OPTS, corpus_dir, data_root], check=False)
    assert proc.returncode != 0 and "other options" in proc.stderr


def test_audio_is_identical_for_any_job_split(corpus, tmp_path):
    corpus_dir, _, _ = corpus
    synth_corpus = load_local("synth_corpus")
    other = str(tmp_path / "corpus3")
    for job in (1, 2, 3):
        with pytest.raises(SystemExit) as done:
            synth_corpus.main(["synth", "--job", str(job), "--nj", "3", *CORPUS_OPTS, other])
        assert done.value.code == 0
    for spk in sorted(os.listdir(os.path.join(corpus_dir, "wav"))):
        for name in sorted(os.listdir(os.path.join(corpus_dir, "wav", spk))):
            with open(os.path.join(corpus_dir, "wav", spk, name), "rb") as a, \
                    open(os.path.join(other, "wav", spk, name), "rb") as b:
                assert a.read() == b.read(), name


def test_seed_determines_speakers_and_audio():
    synth_corpus = load_local("synth_corpus")
    speakers = synth_corpus.make_speakers(10, 3, seed=5)
    assert speakers == synth_corpus.make_speakers(10, 3, seed=5)
    assert speakers != synth_corpus.make_speakers(10, 3, seed=6)
    assert sum(s.subset == "test" for s in speakers) == 3
    speaker = speakers[0]
    utt = synth_corpus.utterance_ids(speaker, 2)[0]
    first = synth_corpus.synth_utterance(speaker, utt, 5, MIN_SEC, MAX_SEC)
    assert np.array_equal(first, synth_corpus.synth_utterance(speaker, utt, 5, MIN_SEC, MAX_SEC))
    other = synth_corpus.synth_utterance(speaker, utt, 6, MIN_SEC, MAX_SEC)
    assert len(first) != len(other) or not np.array_equal(first, other)


def test_make_trials_sampling_large_set():
    make_trials = load_local("make_trials")
    utt2spk = {f"s{s:02d}-u{u:02d}": f"s{s:02d}" for s in range(50) for u in range(20)}
    trials = make_trials.sample_trials(utt2spk, num_trials=2000, target_fraction=0.5, seed=3)
    assert trials == make_trials.sample_trials(utt2spk, num_trials=2000, target_fraction=0.5, seed=3)
    assert trials != make_trials.sample_trials(utt2spk, num_trials=2000, target_fraction=0.5, seed=4)
    assert len(trials) == 2000 and sum(t for _, _, t in trials) == 1000
    assert len({frozenset((e, t)) for e, t, _ in trials}) == 2000
    assert all(e != t and tar == (utt2spk[e] == utt2spk[t]) for e, t, tar in trials)


def test_baseline_eer_on_separable_features(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    feats, utts = {}, []
    for s in range(4):
        centre = rng.normal(0, 3, 80)
        for u in range(3):
            utt = f"spk{s}-u{u}"
            utts.append(utt)
            feats[utt] = (centre + rng.normal(0, 0.3, (50 + 10 * u, 80))).astype(np.float32)
    kaldiio.save_ark(str(data / "feats.ark"), feats, scp=str(data / "feats.scp"))
    trials = tmp_path / "trials"
    trials.write_text("".join(f"{a} {b} {'target' if a[:4] == b[:4] else 'nontarget'}\n"
                              for i, a in enumerate(utts) for b in utts[i + 1:]))
    score_fbank_baseline.main([str(data), str(trials)])
    out = capsys.readouterr().out
    assert "EER 0.00%" in out and "[66 trials, 12 target]" in out
    # A VAD decision whose length does not match the features is a user error naming vad.scp.
    kaldiio.save_ark(str(data / "vad.ark"), {u: np.ones(10, np.float32) for u in utts}, scp=str(data / "vad.scp"))
    with pytest.raises(SystemExit):
        score_fbank_baseline.main([str(data), str(trials)])
    assert "vad.scp" in capsys.readouterr().err
