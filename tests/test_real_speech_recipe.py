"""egs/arabic_commands/v1, the real-speech recipe, on a few speakers of ../shared/data."""

import os
import shlex
from pathlib import Path

import pytest
from conftest import ROOT, link_recipe, run_script, shared_corpus

from pyspk.data.datadir import DataDir, read_trials
from pyspk.features.audio import read_audio

RECIPE = os.path.join(ROOT, "egs", "arabic_commands", "v1")
CORPUS = shared_corpus("arabic_speech_commands", module_level=True)


def session(utt):
    return utt.rsplit("-", 1)[0]


def test_data_prep_joins_keywords_of_one_session_and_keeps_targets_cross_session(tmp_path):
    data = tmp_path / "data"
    proc = run_script([os.path.join(RECIPE, "local", "data.sh"), "--speakers", "4", "--test-speakers", "2",
                       "--rounds", "2", CORPUS, str(data)], cwd=str(tmp_path))
    assert "train 40 utterances of 2 speakers, test 40 of 2" in proc.stderr
    train, test = DataDir(str(data / "train")), DataDir(str(data / "test"))
    assert set(train.spk2utt()) == {"00000002", "00000003"} and set(test.spk2utt()) == {"00000005", "00000007"}
    for utt, entry in train.wav_scp().items():
        words = shlex.split(entry)[1:-4]  # sox <4 clips> -t wav - |
        spk, rnd = utt.split("-")[:2]
        assert len(words) == 4 and all(os.path.basename(w) == f"{spk}_NO_{rnd[1:]}.flac" for w in words)
        assert len({os.path.basename(os.path.dirname(w)) for w in words}) == 4
    # A keyword folder with a space ("zoom in") survives the pipe; the audio is 4 one-second clips.
    spaced = next(entry for entry in test.wav_scp().values() if "zoom in" in entry or "zoom out" in entry)
    samples, rate = read_audio(spaced)
    assert rate == 16000 and abs(len(samples) / rate - 4.0) < 0.1
    trials = read_trials(str(data / "test" / "trials"))
    utt2spk = test.utt2spk()
    assert all(session(e) != session(t) for e, t, is_target in trials if is_target)
    assert all((utt2spk[e] == utt2spk[t]) == is_target for e, t, is_target in trials)
    # Same options: nothing rewritten; a missing corpus names the directory.
    mtime = os.path.getmtime(data / "test" / "trials")
    proc = run_script([os.path.join(RECIPE, "local", "data.sh"), "--speakers", "4", "--test-speakers", "2",
                       "--rounds", "2", CORPUS, str(data)], cwd=str(tmp_path))
    assert "nothing to do" in proc.stdout and os.path.getmtime(data / "test" / "trials") == mtime
    proc = run_script([os.path.join(RECIPE, "local", "data.sh"), str(tmp_path / "nowhere"), str(data)],
                      cwd=str(tmp_path), check=False)
    assert proc.returncode == 1 and "nowhere/dataset: no such directory" in proc.stderr


def test_recipe_runs_end_to_end_on_a_few_speakers(tmp_path):
    root = link_recipe(tmp_path, RECIPE)
    args = ["./run.sh", "--stage", "1", "--corpus", CORPUS, "--speakers", "4", "--test-speakers", "2",
            "--rounds-used", "2", "--nj", "1", "--ssl", "dino",
            "--ssl-config", os.path.join(ROOT, "conf", "dino_tiny.yaml"),
            "--classifier-config", os.path.join(ROOT, "conf", "classifier_tiny.yaml"),
            "--rounds", "1", "--num-clusters", "4"]
    proc = run_script(args, cwd=root)
    assert "Done (stages 1..100)" in proc.stdout
    with open(os.path.join(root, "exp", "results.txt")) as f:
        systems = {line.split()[0].split("=", 1)[1] for line in f}
    calibrated = {"fbank_mean_std_cosine", "dino_tiny_cosine", "pl_dino_r1_cosine", "pl_dino_r1_plda",
                  "supervised_upper_bound_cosine", "supervised_upper_bound_plda"}
    assert systems == calibrated | {"untrained_cosine"} | {f"{system}_cal" for system in calibrated}
    assert len(DataDir(os.path.join(root, "data", "train")).utt2spk()) == 2 * 2 * 10
    report = os.path.join(root, "exp", "pl_dino_r1", "cluster", "cluster_report.txt")
    assert "truth_all.nmi" in Path(report).read_text()


@pytest.mark.parametrize("option,value", [("--ssl", "wav2vec"), ("--num-clusters", "many")])
def test_bad_options_stop_before_any_work(tmp_path, option, value):
    root = link_recipe(tmp_path, RECIPE)
    proc = run_script(["./run.sh", "--stage", "1", "--corpus", CORPUS, option, value], cwd=root, check=False)
    assert proc.returncode == 1 and option.lstrip("-") in proc.stderr
    assert not os.path.exists(os.path.join(root, "data"))
