"""Augmentation: simulated rooms, SNR-exact mixing, corpus lists, and the augmented data dirs."""

import os

import numpy as np
import pytest
import soundfile as sf
from conftest import make_fake_musan, make_fake_rirs, make_wav_data_dir, run_script

from pyspk.augment.augment_dir import AugmentError, make_options, merge, prepare, run_job
from pyspk.augment.noise import add_background, add_foreground, coloured_noise, musan_files, synth_music
from pyspk.augment.rir import estimate_rt60, read_rir_list, reverberate, simulate_rir
from pyspk.data.datadir import DataDir, DataDirError
from pyspk.features.audio import read_audio

SR = 16000


def snr_db(clean, mixed):
    return 10 * np.log10(np.mean(clean**2) / np.mean((mixed - clean) ** 2))


def read(path):
    return sf.read(path, dtype="float64")[0]


# ---------------------------------------------------------------- signal level

def test_simulated_rir_has_requested_rt60_and_direct_path():
    rng = np.random.default_rng(3)
    ratios = []
    for _ in range(12):
        rir, rt60 = simulate_rir(rng, SR)
        assert rir.dtype == np.float32
        assert np.isclose(np.sum(rir.astype(np.float64) ** 2), 1.0, atol=1e-4)
        assert np.all(rir[:int(np.argmax(rir > 0))] == 0)  # silence until the direct sound
        ratios.append(estimate_rt60(rir, SR) / rt60)
    # T30 of the energy decay curve follows the drawn RT60 (early reflections pull it down a little).
    assert 0.75 < np.mean(ratios) < 1.1, ratios
    assert min(ratios) > 0.6 and max(ratios) < 1.4, ratios


def test_reverberate_keeps_length_power_and_alignment():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SR)
    rir = np.zeros(800, dtype=np.float32)
    rir[100] = 1.0           # direct path, delayed by 100 samples
    rir[400] = 0.5           # one echo, 300 samples later
    y = reverberate(x, rir)
    assert len(y) == len(x)
    assert np.isclose(np.mean(y**2), np.mean(x**2))
    expected = x.copy()
    expected[300:] += 0.5 * x[:-300]  # output aligned on the direct path
    assert np.allclose(y, expected * np.sqrt(np.mean(x**2) / np.mean(expected**2)))


def test_background_noise_is_added_at_the_requested_snr():
    rng = np.random.default_rng(1)
    speech = rng.standard_normal(SR) * 0.1
    noise = coloured_noise(rng, SR // 3, SR)  # shorter than the speech: looped
    for snr in (0.0, 7.5, 20.0):
        mixed = add_background(speech, [noise], [snr], rng)
        assert abs(snr_db(speech, mixed) - snr) < 1e-6


def test_foreground_noises_follow_each_other_with_the_interval():
    rng = np.random.default_rng(2)
    speech = rng.standard_normal(5 * SR) * 0.1
    p_speech = np.mean(speech**2)
    mixed, segments = add_foreground(speech, lambda n: coloured_noise(rng, min(SR, n), SR), [5.0, 10.0], 0.5, SR, rng)
    starts = [s for s, _, _ in segments]
    assert starts == [0, 24000, 48000, 72000][:len(starts)] and len(segments) == 4
    for start, end, snr in segments:
        part = mixed[start:end] - speech[start:end]
        assert abs(10 * np.log10(p_speech / np.mean(part**2)) - snr) < 1e-6
    assert np.all(mixed[SR:SR + SR // 2] == speech[SR:SR + SR // 2])  # the gap is untouched


def test_generated_sources_are_normalised_and_deterministic():
    for make in (coloured_noise, synth_music):
        a = make(np.random.default_rng(5), SR, SR)
        b = make(np.random.default_rng(5), SR, SR)
        assert len(a) == SR and np.isclose(np.std(a), 1.0, rtol=1e-3)
        assert np.array_equal(a, b)
        assert not np.array_equal(a, make(np.random.default_rng(6), SR, SR))


# ---------------------------------------------------------------- corpus lists

def test_rir_list_paths_resolve_inside_the_given_directory(tmp_path):
    rir_dir = make_fake_rirs(str(tmp_path))
    paths = read_rir_list(rir_dir, "smallroom")
    assert [os.path.basename(p) for p in paths] == ["Room001-00001.wav", "Room001-00002.wav"]
    assert all(os.path.isfile(p) for p in paths)
    with open(os.path.join(rir_dir, "simulated_rirs", "smallroom", "rir_list"), "a") as f:
        f.write("--rir-id broken RIRS_NOISES/x.wav extra\n")
    with pytest.raises(DataDirError, match=r"rir_list:3: "):
        read_rir_list(rir_dir, "smallroom")
    with pytest.raises(DataDirError, match="mediumroom/rir_list: no such RIR list"):
        read_rir_list(rir_dir, "mediumroom")


def test_musan_files_lists_wavs_only(tmp_path):
    musan = make_fake_musan(str(tmp_path))
    files = musan_files(musan, "music")
    assert [os.path.basename(f) for f in files] == ["music-fma-0000.wav", "music-fma-0001.wav"]
    with pytest.raises(FileNotFoundError):
        musan_files(str(tmp_path / "nowhere"), "noise")


def test_options_are_checked():
    assert make_options("babble")["num_noises"] == [3, 4, 5, 6, 7]
    assert make_options("noise")["snrs"] == [15.0, 10.0, 5.0, 0.0] and make_options("noise")["interval"] == 1.0
    with pytest.raises(AugmentError, match="do not apply"):
        make_options("reverb", snrs=[5])
    with pytest.raises(AugmentError, match="unknown augmentation type"):
        make_options("chorus")
    with pytest.raises(AugmentError, match="bad RIR set"):
        make_options("reverb", rir_sets=["hall"])


# ---------------------------------------------------------------- data dirs

def run_python_api(src, audio_dir, dest, options, num_jobs):
    prepare(src, audio_dir, options)
    for job in range(1, num_jobs + 1):
        run_job(src, audio_dir, job, num_jobs, progress=False)
    return merge(src, audio_dir, dest, num_jobs)


def check_augmented_copy(src, dest, aug_type):
    clean = DataDir(src).wav_scp()
    data = DataDir(dest)
    wav_scp = data.wav_scp()
    assert sorted(wav_scp) == sorted(f"{u}-{aug_type}" for u in clean)
    assert data.utt2spk() == {f"{u}-{aug_type}": spk for u, spk in DataDir(src).utt2spk().items()}
    assert data.has("spk2utt") and data.has("utt2dur")
    with open(data.file("utt2uniq")) as f:
        assert dict(line.split() for line in f) == {f"{u}-{aug_type}": u for u in clean}
    pairs = {u: (read(clean[u]), read(wav_scp[f"{u}-{aug_type}"])) for u in clean}
    for x, y in pairs.values():
        assert len(x) == len(y) and not np.allclose(x, y, atol=1e-3)
    return pairs


def test_script_makes_valid_dirs_at_the_requested_snr(tmp_path):
    """steps/augment_data_dir.sh with generated sources: every type, SNRs measured on the written audio."""
    src = make_wav_data_dir(str(tmp_path / "corpus"), n_spk=4, n_utt=3, seed=4)
    audio = str(tmp_path / "aug")
    utts = sorted(DataDir(src).wav_scp())
    with open(os.path.join(src, "utt2lang"), "w") as f:
        f.writelines(f"{u} en\n" for u in utts)
    with open(os.path.join(src, "spk2gender"), "w") as f:
        f.writelines(f"spk00{i} {'mf'[i % 2]}\n" for i in range(4))
    # The script validates each dir it writes (utils/validate_data_dir.sh --no-text --no-feats).
    proc = run_script(["steps/augment_data_dir.sh", "--nj", "1", "--fg-snrs", "5", "--music-snrs", "10",
                       "--babble-snrs", "13", "--num-babble-speakers", "1", src, audio])
    assert "Done 12 utterances, failed 0 (babble, all jobs)" in proc.stdout  # the counts of log/merge.log
    for aug_type, snr in (("reverb", None), ("noise", 5.0), ("music", 10.0), ("babble", 13.0)):
        pairs = check_augmented_copy(src, f"{src}_{aug_type}", aug_type)
        with open(os.path.join(f"{src}_{aug_type}", "utt2lang")) as f:  # per-utterance files carried over
            assert f.read() == "".join(f"{u}-{aug_type} en\n" for u in utts)
        with open(os.path.join(f"{src}_{aug_type}", "spk2gender")) as f:
            assert f.read() == "spk000 m\nspk001 f\nspk002 m\nspk003 f\n"
        if snr is not None:
            for x, y in pairs.values():
                # Foreground noise may leave gaps; measure where it was added, against the whole clean power.
                added = (y != x) if aug_type == "noise" else np.ones(len(x), dtype=bool)
                measured = 10 * np.log10(np.mean(x**2) / np.mean((y - x)[added] ** 2))
                assert abs(measured - snr) < 0.5, (aug_type, measured)
    with open(os.path.join(audio, "babble", "info.txt")) as f:
        for line in f:  # "<utt>-babble <other-utt>@13dB": always another speaker
            utt, source = line.split()
            assert source.endswith("@13dB") and source.split("-")[0] != utt.split("-")[0], line
    combined = DataDir(f"{src}_combined")
    assert sorted(combined.wav_scp()) == sorted(
        [u for t in ("", "-reverb", "-noise", "-music", "-babble") for u in (x + t for x in DataDir(src).wav_scp())])


def test_corpus_sources_and_determinism_across_jobs(tmp_path):
    """MUSAN and RIRS_NOISES directories are used when given; output does not depend on --nj."""
    src = make_wav_data_dir(str(tmp_path / "corpus"), n_spk=2, n_utt=3, seed=8)
    musan = make_fake_musan(str(tmp_path))
    rir_dir = make_fake_rirs(str(tmp_path))
    cases = [("reverb", dict(rir_dir=rir_dir, rir_sets=["smallroom"]), "Room001-0000"),
             ("noise", dict(musan_dir=musan, snrs=[0.0]), "noise-free-sound-000"),
             ("music", dict(musan_dir=musan, snrs=[8.0]), "music-fma-000"),
             ("babble", dict(musan_dir=musan, snrs=[15.0], num_noises=[1]), "speech-librivox-000")]
    for aug_type, kwargs, source_name in cases:
        options = make_options(aug_type, seed=11, **kwargs)
        one = run_python_api(src, str(tmp_path / "a1" / aug_type), str(tmp_path / f"d1_{aug_type}"), options, 1)
        two = run_python_api(src, str(tmp_path / "a2" / aug_type), str(tmp_path / f"d2_{aug_type}"), options, 2)
        assert one == two == (6, 0)
        pairs = check_augmented_copy(src, str(tmp_path / f"d1_{aug_type}"), aug_type)
        other = DataDir(str(tmp_path / f"d2_{aug_type}")).wav_scp()
        for utt, (x, y) in pairs.items():
            assert np.array_equal(y, read(other[f"{utt}-{aug_type}"]))
            if aug_type in ("music", "babble"):
                assert abs(snr_db(x, y) - kwargs["snrs"][0]) < 0.5
        with open(tmp_path / "a1" / aug_type / "info.txt") as f:
            info = f.read()
        assert info.count(source_name) >= 6, info
    with open(tmp_path / "a1" / "noise" / "info.txt") as f:
        assert f.read().count("@0dB[0.00-0.70s]") == 6  # each utterance starts with a whole 0.7 s noise file

    # Re-running with the same options keeps the audio and the data dir as they are.
    noise_dir = str(tmp_path / "d1_noise")
    stamps = {p: os.stat(p).st_mtime_ns for p in DataDir(noise_dir).wav_scp().values()}
    stamps[os.path.join(noise_dir, "wav.scp")] = os.stat(os.path.join(noise_dir, "wav.scp")).st_mtime_ns
    options = make_options("noise", seed=11, musan_dir=musan, snrs=[0.0])
    assert run_python_api(src, str(tmp_path / "a1" / "noise"), noise_dir, options, 1) == (6, 0)
    assert stamps == {p: os.stat(p).st_mtime_ns for p in stamps}

    # Other options (here the seed) in the same place: everything is made again, differently.
    before = {p: read(p) for p in stamps if p.endswith(".wav")}
    reseeded = make_options("noise", seed=12, musan_dir=musan, snrs=[0.0])
    run_python_api(src, str(tmp_path / "a1" / "noise"), noise_dir, reseeded, 1)
    assert all(not np.array_equal(read(p), audio) for p, audio in before.items())


def test_failed_utterances_are_counted(tmp_path):
    src = make_wav_data_dir(str(tmp_path / "corpus"), n_spk=2, n_utt=5, seed=1)
    wav_scp = DataDir(src).wav_scp()
    utts = sorted(wav_scp)
    os.remove(wav_scp[utts[0]])
    with open(wav_scp[utts[1]], "wb") as f:
        f.write(b"RIFF not really a wav")
    audio = str(tmp_path / "aug")
    proc = run_script(["steps/augment_data_dir.sh", "--types", "noise", "--combine", "false", "--nj", "1",
                       "--max-fail-fraction", "0.1", src, audio], check=False)
    assert proc.returncode == 1
    assert "Done 8 utterances, failed 2" in proc.stderr
    assert "noise: 2 of 10 utterances failed (more than 0.1)" in proc.stderr
    # The merge runs through $cmd like the jobs: its log is kept, and its end shown.
    assert f"merging the augmented copies failed; the end of {audio}/log/merge.log" in proc.stderr
    with open(os.path.join(audio, "log", "augment.1.log")) as f:
        job_log = f.read()
    assert f"utterance {utts[0]} failed: no such file" in job_log
    assert f"utterance {utts[1]} failed: cannot read audio" in job_log
    assert not os.path.exists(f"{src}_noise")
    # Below the threshold the dir holds the others.
    assert merge(src, os.path.join(audio, "noise"), f"{src}_noise", 1, max_fail_fraction=0.3) == (8, 2)
    assert sorted(DataDir(f"{src}_noise").wav_scp()) == [f"{u}-noise" for u in utts[2:]]


def test_babble_with_fewer_other_speakers_than_asked_for(tmp_path):
    """Two speakers: each utterance's babble has the one other speaker, however many were asked for."""
    src = make_wav_data_dir(str(tmp_path / "corpus"), n_spk=2, n_utt=2, seed=5)
    audio = tmp_path / "aug"
    proc = run_script(["steps/augment_data_dir.sh", "--nj", "1", "--types", "babble", "--num-babble-speakers", "3",
                       src, str(audio)])
    assert "Done 4 utterances, failed 0" in proc.stdout
    assert all(len(line.split()) == 2 for line in (audio / "babble" / "info.txt").read_text().splitlines())


def test_bad_inputs_fail_with_clear_messages(tmp_path):
    src = make_wav_data_dir(str(tmp_path / "corpus"), n_spk=1, n_utt=2)
    proc = run_script(["steps/augment_data_dir.sh", "--types", "babble", src, str(tmp_path / "aug")], check=False)
    assert proc.returncode == 1 and "at least 2 speakers" in proc.stderr
    proc = run_script(["steps/augment_data_dir.sh", "--musan-dir", str(tmp_path / "none"), src,
                       str(tmp_path / "aug")], check=False)
    assert proc.returncode == 1 and "no such directory" in proc.stderr
    os.remove(os.path.join(src, "utt2spk"))
    proc = run_script(["steps/augment_data_dir.sh", src, str(tmp_path / "aug")], check=False)
    assert proc.returncode == 1 and "utt2spk" in proc.stderr
    with pytest.raises(AugmentError, match="whitespace"):
        prepare(make_wav_data_dir(str(tmp_path / "c2"), n_spk=2, n_utt=1), str(tmp_path / "a b"),
                make_options("noise"))


def test_segments_are_augmented_per_utterance(tmp_path):
    """A source dir with segments: each utterance is cut from its recording and written on its own."""
    corpus = make_wav_data_dir(str(tmp_path / "corpus"), n_spk=2, n_utt=1, min_sec=2.0, max_sec=2.0)
    src = str(tmp_path / "seg")
    os.makedirs(src)
    recordings = DataDir(corpus).wav_scp()
    with open(os.path.join(src, "wav.scp"), "w") as f:
        f.writelines(f"{rec} {path}\n" for rec, path in sorted(recordings.items()))
    segments = {f"{rec}-{i}": (rec, 0.5 * i, 0.5 * i + 0.8) for rec in recordings for i in (0, 1)}
    with open(os.path.join(src, "segments"), "w") as f:
        f.writelines(f"{u} {r} {a} {b}\n" for u, (r, a, b) in sorted(segments.items()))
    with open(os.path.join(src, "utt2spk"), "w") as f:
        f.writelines(f"{u} {u.split('-')[0]}\n" for u in sorted(segments))
    assert run_python_api(src, str(tmp_path / "aug"), str(tmp_path / "out"), make_options("music"), 1) == (4, 0)
    out = DataDir(str(tmp_path / "out"))
    assert not out.has("segments")
    with open(tmp_path / "aug" / "info.txt") as f:  # "<utt>-music synthetic@<snr>dB"
        drawn = {line.split()[0]: float(line.split("@")[1].split("dB")[0]) for line in f}
    for utt, (rec, start, end) in segments.items():
        clean = read(recordings[rec])[int(start * SR):int(end * SR)]
        mixed = read(out.wav_scp()[f"{utt}-music"])
        assert len(mixed) == len(clean)
        assert drawn[f"{utt}-music"] in (15.0, 10.0, 8.0, 5.0)
        assert abs(snr_db(clean, mixed) - drawn[f"{utt}-music"]) < 0.5


def test_flac_output_is_read_through_a_sox_pipe(tmp_path):
    src = make_wav_data_dir(str(tmp_path / "corpus"), n_spk=2, n_utt=1)
    options = make_options("reverb", audio_format="flac")
    assert run_python_api(src, str(tmp_path / "aug"), str(tmp_path / "out"), options, 1) == (2, 0)
    for utt, entry in DataDir(str(tmp_path / "out")).wav_scp().items():
        path = entry.split()[1]
        assert entry == f"sox {path} -t wav - |" and path.endswith(f"{utt}.flac")
        samples, rate = read_audio(entry)  # as make_fbank.sh reads wav.scp
        assert rate == SR and np.array_equal(samples[:, 0] / 32768.0, read(path))
