"""Calibrated scores and actDCF (issue 38): the logistic regression on constructed scores, the training trials of
(pseudo-)labels, the step and the results line with actDCF; the channel diagnostic's variance shares."""

import importlib.util
import os
import sys

import numpy as np
import pytest
from conftest import ROOT, run_script
from test_cluster import make_embedded_corpus
from test_results_quoted import RESULT_LINE

from pyspk.backend.calibration import (
    Calibration,
    prior_weighted_xent,
    sample_label_trials,
    train_calibration,
    write_label_trials,
)
from pyspk.backend.results import format_result, line_fields
from pyspk.cluster.report import between_share, channel_shares
from pyspk.data.datadir import DataDirError, read_trials
from pyspk.metrics import act_dcf, bayes_threshold, compute_min_dcf


def gaussian_scores(n_tar=20000, n_non=100000, mu_tar=2.0, mu_non=-1.0, sd=1.0, seed=0):
    """Scores whose LLR is known: scale (mu_t - mu_n) / sd^2, offset -(mu_t^2 - mu_n^2) / (2 sd^2)."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(mu_tar, sd, n_tar), rng.normal(mu_non, sd, n_non)])
    labels = np.arange(n_tar + n_non) < n_tar
    return scores, labels, (mu_tar - mu_non) / sd ** 2, -(mu_tar ** 2 - mu_non ** 2) / (2 * sd ** 2)


@pytest.mark.parametrize("p_target", [0.01, 0.05, 0.5])
def test_calibration_recovers_the_known_llr(p_target):
    scores, labels, scale, offset = gaussian_scores()
    # The same scores measured in another unit and origin: the calibration undoes it.
    cal = train_calibration(10 * scores - 3, labels, p_target)
    assert cal.scale * 10 == pytest.approx(scale, rel=0.05)
    assert cal.offset - 3 * cal.scale == pytest.approx(offset, abs=0.1)
    assert cal.p_target == p_target


def test_reversed_scores_get_a_calibration_that_says_nothing():
    scores, labels, _, _ = gaussian_scores(n_tar=2000, n_non=5000)
    cal = train_calibration(-scores, labels, 0.01)
    assert (cal.scale, cal.offset) == (0.0, 0.0)
    assert act_dcf(cal.apply(-scores), labels, 0.01) == 1.0  # every trial rejected: the cost of no system


def test_act_dcf_is_min_dcf_when_calibrated_and_far_above_when_shifted():
    scores, labels, _, _ = gaussian_scores()
    llrs = train_calibration(scores, labels, 0.01).apply(scores)
    for p in (0.01, 0.05):
        assert act_dcf(llrs, labels, p) == pytest.approx(compute_min_dcf(llrs, labels, p), rel=0.03)
        assert act_dcf(llrs + 3, labels, p) > 2 * compute_min_dcf(llrs, labels, p)
        assert act_dcf(scores, labels, p) > 1.5 * act_dcf(llrs, labels, p)  # raw scores read as LLRs
    # A well-calibrated system's cross-entropy is below 1 (LLRs of 0), a shifted one's far above.
    assert prior_weighted_xent(llrs, labels, 0.01) < 0.8
    assert prior_weighted_xent(np.zeros_like(llrs), labels, 0.01) == pytest.approx(1.0)
    assert prior_weighted_xent(llrs + 5, labels, 0.01) > 1.5


def test_act_dcf_decides_at_the_bayes_threshold():
    assert bayes_threshold(0.01) == pytest.approx(np.log(99))
    # LLRs: targets 5, 3 (accepted: > log 99 = 4.595 only the first), non-targets 5 (accepted), 0, 0.
    llrs, labels = np.array([5.0, 3.0, 5.0, 0.0, 0.0]), np.array([True, True, False, False, False])
    assert act_dcf(llrs, labels, 0.01) == pytest.approx((0.01 * 0.5 + 0.99 / 3) / 0.01)
    rng = np.random.default_rng(1)  # never below minDCF
    for _ in range(20):
        llrs, labels = rng.normal(size=50) * 3, rng.random(50) < 0.3
        assert act_dcf(llrs, labels, 0.05) >= compute_min_dcf(llrs, labels, 0.05) - 1e-12


def test_label_trials_pair_one_label_as_targets_and_cross_sessions_only():
    utts = [f"u{i:02d}" for i in range(40)]
    labels = [f"c{i // 8}" for i in range(40)]
    sessions = [f"s{i // 4}" for i in range(40)]  # two sessions per label
    for sess in (None, sessions):
        trials = sample_label_trials(utts, labels, 10000, 300, seed=3, sessions=sess)
        index = {u: i for i, u in enumerate(utts)}
        pairs = [(index[e], index[t], target) for e, t, target in trials]
        assert len({(i, j) for i, j, _ in pairs}) == len(pairs) and all(i < j for i, j, _ in pairs)
        assert all((labels[i] == labels[j]) == target for i, j, target in pairs)
        targets = sum(target for _, _, target in pairs)
        assert sum(not target for *_, target in pairs) == 300
        if sess is None:
            assert targets == 5 * 28  # every pair of one label (fewer than asked for)
        else:
            assert all(sessions[i] != sessions[j] for i, j, _ in pairs) and targets == 5 * 16


def write_dir(path, tables):
    path.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        (path / name).write_text("".join(f"{k} {v}\n" for k, v in sorted(table.items())))


def test_trials_of_a_pseudo_labelled_dir_use_source_ids_and_never_test_utterances(tmp_path):
    src = [f"spk{s}-c{c}-{i}" for s in range(3) for c in range(2) for i in range(3)]
    pl = {f"pl{n % 4}-{utt}": f"pl{n % 4}" for n, utt in enumerate(src)}
    write_dir(tmp_path / "train_pl", {"utt2spk": pl, "utt2uniq": {k: k.split("-", 1)[1] for k in pl},
                                      "utt2session": {k: k.split("-")[2] for k in pl}})
    write_dir(tmp_path / "test", {"utt2spk": {"tst1-c9-0": "tst1", "tst2-c8-0": "tst2"}})
    trials_path = tmp_path / "cal" / "trials"
    (tmp_path / "cal").mkdir()
    targets, nontargets = write_label_trials(tmp_path / "train_pl", trials_path, 1000, 1000, cross_session=True,
                                             exclude=(tmp_path / "test" / "utt2spk",))
    trials = read_trials(trials_path)
    assert targets > 0 and nontargets > 0 and len(trials) == targets + nontargets
    assert {u for e, t, _ in trials for u in (e, t)} <= set(src)  # source ids, no test utterance
    # A test utterance among the labels is an error naming the test set's file and line.
    with open(tmp_path / "test" / "utt2spk", "a") as f:
        f.write(f"{src[4]} tst3\n")
    with pytest.raises(DataDirError, match=r"test/utt2spk:3: .*test utterance"):
        write_label_trials(tmp_path / "train_pl", trials_path, exclude=(tmp_path / "test" / "utt2spk",))
    (tmp_path / "train_pl" / "utt2session").unlink()
    with pytest.raises(DataDirError, match="utt2session"):
        write_label_trials(tmp_path / "train_pl", trials_path, cross_session=True)


def test_a_bad_calibration_file_names_its_line(tmp_path):
    path = tmp_path / "cal"
    Calibration(2.0, -1.0, 0.01).save(path, {"trials": "t"})
    assert Calibration.load(path).apply(np.array([1.0])) == pytest.approx([1.0])
    path.write_text("scale 2\noffset x\np_target 0.01\n")
    with pytest.raises(DataDirError, match=r"cal:2: offset 'x' is not a number"):
        Calibration.load(path)
    path.write_text("scale 2\np_target 0.01\n")
    with pytest.raises(DataDirError, match="no offset"):
        Calibration.load(path)


def test_results_lines_with_act_dcf_still_parse():
    line = format_result("pl_dino_r1_cosine_cal_crosscall", 0.2, [(0.01, 0.9), (0.05, 0.7)], "t", "s",
                         [(0.01, 0.95), (0.05, 0.72)])
    fields = line_fields(line)
    assert fields["actDCF(p=0.01)"] == "0.9500" and fields["minDCF(p=0.05)"] == "0.7000"
    assert RESULT_LINE.match(line).groups() == ("pl_dino_r1_cosine_cal_crosscall", "20", "0.9000", "0.7000")
    spec = importlib.util.spec_from_file_location(
        "plot_scaling", os.path.join(ROOT, "egs", "speechocean762", "v1", "local", "plot_scaling.py"))
    plot_scaling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_scaling)
    assert plot_scaling.line_fields(f"train_speakers=20 {line}")["EER"] == "20%"


def test_variance_shares_on_constructed_embeddings():
    # Two groups at +-1 on one axis, each point +-1 on another: half the variance lies between the groups.
    x = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=float)
    assert between_share(x, ["a", "a", "b", "b"]) == pytest.approx(0.5)
    assert between_share(x, ["a", "b", "c", "d"]) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    n_spk, calls, per_call, dim = 10, 4, 6, 32
    speaker = np.repeat(np.arange(n_spk), calls * per_call)
    call = np.repeat(np.arange(n_spk * calls), per_call)
    phone = call % 2  # two phones, crossed with speakers
    channel = rng.normal(size=(2, dim)) * 3.0  # the phone dominates
    x = rng.normal(size=(n_spk, dim))[speaker] + channel[phone] + 0.3 * rng.normal(size=(len(call), dim))
    shares = channel_shares(x, phone, {"session": call.tolist(), "phonetype": phone.tolist(),
                                       "speaker": [None if s == 0 else s for s in speaker]})
    assert shares["phonetype_share"] > 0.6 > shares["speaker_share"]
    assert shares["session_share"] >= shares["phonetype_share"]  # calls are nested in phones here
    assert shares["phonetype_share_of_clusters"] == pytest.approx(1.0)  # clusters that are the phones
    assert shares["speaker_share_of_clusters"] < 0.1
    assert shares["phonetype_share_chance"] == pytest.approx(1 / (len(call) - 1))
    assert shares["speaker_groups"] == n_spk - 1  # speaker 0 unknown: left out


def test_between_calls_of_one_speaker_counts_only_speakers_with_several_calls():
    """A call effect as large as the speaker's: on the speakers with two calls, a quarter of the session share
    lies between one speaker's calls (a speaker's mean keeps half of its two calls' variance: 0.5 of 2); one-call
    speakers (whose speaker share is their call's) are left out."""
    rng = np.random.default_rng(1)
    dim, per_call = 64, 8
    speaker = np.repeat(np.arange(20), 2 * per_call)  # speakers 0-9: two calls; 10-19: one call each
    call = np.where(speaker < 10, np.repeat(np.arange(40), per_call), speaker * 2)
    x = rng.normal(size=(20, dim))[speaker] + rng.normal(size=(40, dim))[call] + 0.1 * rng.normal(size=(len(call), dim))
    shares = channel_shares(x, None, {"session": call.tolist(), "speaker": speaker.tolist()})
    assert shares["multisession_speakers"] == 10 and shares["multisession_utts"] == 10 * 2 * per_call
    assert shares["multisession_within_speaker_share"] == pytest.approx(
        shares["multisession_session_share"] - shares["multisession_speaker_share"])
    assert 0.15 < shares["multisession_within_speaker_share"] / shares["multisession_session_share"] < 0.35
    x_no_call = rng.normal(size=(20, dim))[speaker] + 0.1 * rng.normal(size=(len(call), dim))
    assert channel_shares(x_no_call, None, {"session": call.tolist(), "speaker": speaker.tolist()})[
        "multisession_within_speaker_share"] < 0.05
    assert "multisession_speakers" not in channel_shares(x, None, {"session": call.tolist()})


def test_calibration_step_and_calibrated_results_line(tmp_path):
    """cluster_embeddings.sh (with a channel section), the trials, score_cosine, calibrate_scores.sh and
    compute_metrics.sh --calibrated true on constructed embeddings."""
    data, xvec = make_embedded_corpus(tmp_path, n_spk=6, n_utt=12)
    utts = [line.split()[0] for line in (data / "utt2spk").read_text().splitlines()]
    (data / "utt2session").write_text("".join(f"{u} {u.split('-')[0]}-c{i % 2}\n" for i, u in enumerate(utts)))
    (data / "utt2phonetype").write_text("".join(f"{u} p{i % 2}\n" for i, u in enumerate(utts)))
    run_script(["steps/cluster_embeddings.sh", "--num-clusters", "6", "--min-cluster-size", "2", "--device",
                "cpu", "--ref-utt2spk", str(data / "utt2spk"), str(xvec), str(data),
                str(tmp_path / "data" / "train_pl"), str(tmp_path / "exp" / "cluster")])
    report = (tmp_path / "exp" / "cluster" / "cluster_report.txt").read_text()
    assert "channel.phonetype_share_of_clusters" in report and "channel.speaker_share" in report
    cal = tmp_path / "exp" / "calibration"
    run_script([sys.executable, "-m", "pyspk.bin.make_calibration_trials", "--cross-session", "true",
                str(tmp_path / "data" / "train_pl"), str(cal / "trials")])
    run_script(["steps/score_cosine.sh", "--mean-dir", str(xvec), str(cal / "trials"), str(xvec), str(xvec),
                str(cal / "scores_cosine")])
    test_trials = tmp_path / "trials"  # true-label trials of the same embeddings stand in for a test list
    spk = dict(line.split() for line in (data / "utt2spk").read_text().splitlines())
    test_trials.write_text("".join(f"{a} {b} {'target' if spk[a] == spk[b] else 'nontarget'}\n"
                                   for i, a in enumerate(utts) for b in utts[i + 1::5]))
    scores = tmp_path / "exp" / "scores" / "cosine_trials"
    run_script(["steps/score_cosine.sh", "--mean-dir", str(xvec), str(test_trials), str(xvec), str(xvec),
                str(scores)])
    args = ["steps/calibrate_scores.sh", str(cal / "trials"), str(cal / "scores_cosine"), str(cal / "cosine"),
            str(scores), f"{scores}_cal"]
    run_script(args)
    assert "nothing to do" in run_script(args).stdout  # a re-run with the same inputs
    calibration = Calibration.load(cal / "cosine")
    raw = np.loadtxt(scores, usecols=2)
    assert np.loadtxt(f"{scores}_cal", usecols=2) == pytest.approx(calibration.apply(raw), abs=1e-5)
    results = tmp_path / "exp" / "results.txt"
    run_script(["steps/compute_metrics.sh", "--calibrated", "true", "--name", "x_cosine_cal", "--results",
                str(results), str(test_trials), f"{scores}_cal"])
    fields = line_fields(results.read_text())
    assert {"EER", "minDCF(p=0.01)", "actDCF(p=0.01)", "actDCF(p=0.05)", "trials", "scores"} <= set(fields)
    # A bad p-target and a missing input are refused before any work.
    proc = run_script([*args[:1], "--p-target", "2", *args[1:]], check=False)
    assert proc.returncode == 1 and "--p-target must be in [0, 1]" in proc.stderr
    proc = run_script([*args[:2], str(cal / "missing"), *args[3:]], check=False)
    assert proc.returncode != 0 and "missing" in proc.stderr


def test_without_a_speaker_of_two_sessions_any_pairs_are_drawn(tmp_path, caplog):
    utt2spk = {f"c{i // 3}-u{i}": f"c{i // 3}" for i in range(9)}
    write_dir(tmp_path / "d", {"utt2spk": utt2spk, "utt2session": {u: u.split("-")[0] for u in utt2spk}})
    targets, _ = write_label_trials(tmp_path / "d", tmp_path / "trials", cross_session=True)
    assert targets == 9 and "no speaker has utterances of two sessions" in caplog.text
    write_dir(tmp_path / "one", {"utt2spk": {"a": "s", "b": "s"}})
    with pytest.raises(DataDirError, match="no non-target pair"):
        write_label_trials(tmp_path / "one", tmp_path / "trials")


def test_channel_report_prints_the_shares_of_an_embedding_dir(tmp_path, capsys):
    from pyspk.bin import channel_report

    data, xvec = make_embedded_corpus(tmp_path, n_spk=4, n_utt=6)
    utts = [line.split()[0] for line in (data / "utt2spk").read_text().splitlines()]
    (data / "utt2phonetype").write_text("".join(f"{u} p{i % 2}\n" for i, u in enumerate(utts)))
    clusters = tmp_path / "assignments"
    clusters.write_text("".join(f"{u} {u.split('-')[0]} 0.1 1\n" for u in utts))
    channel_report.main(["--clusters", str(clusters), str(xvec), str(data)])
    shares = dict(line.split() for line in capsys.readouterr().out.splitlines())
    # The embeddings are speaker blobs: speakers explain nearly all, the random phone types little.
    assert float(shares["channel.speaker_share"]) > 0.8 > float(shares["channel.phonetype_share"])
    assert float(shares["channel.speaker_share_of_clusters"]) == pytest.approx(1.0)
    assert "channel.session_share" not in shares  # no utt2session
    with pytest.raises(SystemExit):
        channel_report.main(["--factors", "session", str(xvec), str(data)])
    assert "has none of utt2session" in capsys.readouterr().err
    clusters.write_text(f"{utts[0]}\n")
    with pytest.raises(SystemExit):
        channel_report.main(["--clusters", str(clusters), str(xvec), str(data)])
    assert "assignments:1: expected '<utt> <cluster> ...'" in capsys.readouterr().err
