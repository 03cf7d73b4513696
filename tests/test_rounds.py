"""Pseudo-label rounds that keep what SSL learnt: the merge pass, the session-splitting report, checkpoint
averaging and the weight-space mix with the initial model, the round's init options."""

import os
import subprocess

import numpy as np
import pytest
import torch
from conftest import ROOT, run_script
from test_classifier import TINY_MODEL, tiny_config
from test_cluster import make_embedded_corpus

from pyspk.cluster.kmeans import kmeans, length_normalize
from pyspk.cluster.pseudo_label import (
    PseudoLabelOptions,
    merge_clusters,
    within_between_pairs,
    within_between_threshold,
)
from pyspk.cluster.report import nmi, session_splitting
from pyspk.config import ConfigError
from pyspk.models import build_model, read_backbone_file, save_backbones
from pyspk.supervised.classifier import ClassifierObjective
from pyspk.train import checkpoint as ckpt
from pyspk.train.schema import check_config
from pyspk.train.synthetic import make_feats_data_dir
from pyspk.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_session_splitting_on_a_constructed_case():
    # Speaker a: sessions a1 (3 utts), a2 (2), a3 (3); its largest cluster is c0 (5 of 8 utterances).
    truth = ["a"] * 8 + ["b"] * 3
    sessions = ["a1"] * 3 + ["a2"] * 2 + ["a3"] * 3 + ["b1"] * 3
    clusters = ["c0", "c0", "c0", "c1", "c1", "c0", "c0", "c1", "c2", "c2", "c2"]
    figures = session_splitting(truth, sessions, clusters)
    # a1 and a3 lie mostly in c0; a2 lies wholly in c1, split off. b has one session and does not count.
    assert figures == {"multi_session_speakers": 1, "session_pairs": 3, "sessions_in_largest": 2 / 3,
                       "sessions_split_off": 1 / 3}
    assert session_splitting(truth, sessions, ["c0"] * 11)["sessions_in_largest"] == 1.0
    assert session_splitting(["a", "b"], ["s1", "s2"], ["c0", "c1"]) == {"multi_session_speakers": 0,
                                                                        "session_pairs": 0}


def sessions_data(n_spk=6, n_sessions=2, per_session=25, dim=32, seed=3):
    """Unit embeddings of speakers recorded in sessions: a session offset smaller than the speaker spread."""
    rng = np.random.default_rng(seed)
    speakers = rng.standard_normal((n_spk, dim))
    offsets = 0.45 * rng.standard_normal((n_spk, n_sessions, dim))
    x, truth, sessions = [], [], []
    for i in range(n_spk):
        for j in range(n_sessions):
            x.append(speakers[i] + offsets[i, j] + 0.12 * rng.standard_normal((per_session, dim)))
            truth += [i] * per_session
            sessions += [f"{i}-{j}"] * per_session
    x = length_normalize(torch.from_numpy(np.concatenate(x).astype(np.float32)))
    return x, np.array(truth), np.array(sessions)


@pytest.mark.parametrize("merge,threshold", [("cosine", 0.5), ("plda", -800.0)])
def test_merge_joins_the_clusters_that_are_one_speaker(merge, threshold):
    x, truth, sessions = sessions_data()
    first = kmeans(x, 12, seed=0, device="cpu")  # twice the speakers: k-means splits each along its sessions
    assert session_splitting(truth, sessions, first.labels)["sessions_in_largest"] == 0.5
    # Mean cosine between one speaker's two clusters: 0.74-0.89, between speakers at most 0.27 (LLR: -404 to
    # -195 against at most -1249).
    options = PseudoLabelOptions(num_clusters=12, merge=merge, merge_threshold=threshold)
    merged = merge_clusters(first, x, options)
    assert merged.centers.shape[0] == 6 and nmi(truth, merged.labels) == 1.0
    assert session_splitting(truth, sessions, merged.labels)["sessions_in_largest"] == 1.0
    # A threshold above every pair of clusters merges nothing.
    options.merge_threshold = 1.0 if merge == "cosine" else 1e9
    assert nmi(first.labels, merge_clusters(first, x, options).labels) == 1.0


def test_auto_merge_threshold_lies_between_the_pair_scores_within_and_between_clusters():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(20), 10)
    centres = rng.standard_normal((20, 8))
    points = centres[labels] + 0.3 * rng.standard_normal((200, 8))
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    (w1, w2), (b1, b2) = within_between_pairs(labels)
    assert (labels[w1] == labels[w2]).all() and (w1 != w2).all() and (labels[b1] != labels[b2]).all()
    threshold = within_between_threshold(lambda i, j: np.einsum("ij,ij->i", unit[i], unit[j]), labels)
    within, between = (np.einsum("ij,ij->i", unit[a], unit[b]) for a, b in ((w1, w2), (b1, b2)))
    # At the threshold the within-cluster density is k - 1 = 19 times the between-cluster one (Gaussian fits).
    log_ratio = (-0.5 * ((threshold - within.mean()) / within.std()) ** 2 - np.log(within.std())
                 + 0.5 * ((threshold - between.mean()) / between.std()) ** 2 + np.log(between.std()))
    assert between.mean() < threshold and log_ratio == pytest.approx(np.log(19), abs=0.05)
    # Scores that never reach that ratio merge nothing.
    assert within_between_threshold(lambda i, j: rng.standard_normal(len(i)) + (labels[i] == labels[j]) * 0.01,
                                    labels) == np.inf
    with pytest.raises(ValueError, match="no higher than pairs between"):
        within_between_threshold(lambda i, j: -np.einsum("ij,ij->i", unit[i], unit[j]), labels)


def test_merge_options_are_checked():
    with pytest.raises(ValueError, match="--merge must be one of"):
        PseudoLabelOptions(merge="ahc").check()
    with pytest.raises(ValueError, match="two second passes"):
        PseudoLabelOptions(merge="cosine", plda_recluster=True).check()


def test_script_reports_session_splitting_before_and_after_the_merge(tmp_path):
    data, xvec = make_embedded_corpus(tmp_path, n_spk=6, n_utt=20)
    utts = [line.split()[0] for line in (data / "utt2spk").read_text().splitlines()]
    (data / "utt2session").write_text("".join(f"{u} {u.split('-')[0]}-s{i % 2}\n" for i, u in enumerate(utts)))
    report_dir = tmp_path / "exp" / "cluster"
    proc = run_script(["steps/cluster_embeddings.sh", "--num-clusters", "12", "--merge", "cosine",
                       "--min-cluster-size", "3", "--device", "cpu", "--ref-utt2spk", str(data / "utt2spk"),
                       str(xvec), str(data), str(tmp_path / "data" / "train_pl"), str(report_dir)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = dict(line.split(" ", 1) for line in (report_dir / "cluster_report.txt").read_text().splitlines()
                  if not line.startswith("#"))
    assert report["settings.merge"] == "cosine" and report["settings.merge_threshold"] == "auto"
    assert report["first_pass.num_clusters"] == "12" and report["clustering.num_clusters"] == "6"
    # Sessions here are arbitrary halves of each speaker: the first pass splits speakers, not sessions.
    assert 0.0 < float(report["first_pass_truth_all.sessions_in_largest"]) <= 1.0
    assert float(report["truth_all.sessions_in_largest"]) == 1.0
    assert float(report["truth_all.sessions_split_off"]) == 0.0
    assert "truth_all.sessions_in_largest" in proc.stdout  # the step prints the truth lines


@pytest.fixture(scope="module")
def feats_dir(tmp_path_factory):
    return make_feats_data_dir(str(tmp_path_factory.mktemp("feats")), n_spk=4, n_utt=4, min_frames=30,
                               max_frames=120, feat_dim=40, copies=("reverb",))


def float_states(path):
    state = read_backbone_file(path)["backbones"]["model"]["state_dict"]
    return {k: v.double() for k, v in state.items() if v.is_floating_point()}


def test_final_model_averages_checkpoints_and_mixes_in_the_initial_weights(feats_dir, tmp_path):
    torch.manual_seed(3)
    init = str(tmp_path / "ssl.pt")
    save_backbones(init, {"teacher": build_model(TINY_MODEL)}, "teacher")
    config = tiny_config(classifier={"init_model": init, "init_weight": 0.25},
                         train={"ckpt_every_steps": 1, "keep_checkpoints": 3, "average_last": 3})
    exp = str(tmp_path / "exp")
    Trainer(ClassifierObjective(feats_dir), config, feats_dir, exp, device="cpu").run()
    last = [path for _, path in ckpt.list_checkpoints(os.path.join(exp, "checkpoints"))]
    assert len(last) == 3
    saved = [float_states(path) for path in last]
    initial = {k: v.double() for k, v in read_backbone_file(init)["backbones"]["teacher"]["state_dict"].items()
               if v.is_floating_point()}
    final = float_states(os.path.join(exp, "final.pt"))
    assert final.keys() == initial.keys()
    for key, value in final.items():
        expected = 0.75 * sum(s[key] for s in saved) / 3 + 0.25 * initial[key]
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-6, msg=key)
    assert read_backbone_file(os.path.join(exp, "final.pt"))["averaged_from"] == [os.path.basename(p) for p in last]


@pytest.mark.parametrize("change,message", [
    ({"train": {"average_last": 5, "keep_checkpoints": 3}}, "train.average_last .5. needs train.keep_checkpoints"),
    ({"classifier": {"init_weight": 1.5}}, "init_weight"),
])
def test_averaging_and_mixing_settings_are_checked(change, message):
    config = tiny_config(**change)
    with pytest.raises(ConfigError, match=message):
        check_config(config, ClassifierObjective("unused"))
        ClassifierObjective("unused").build(config, 4, 8, torch.device("cpu"))


def test_mixing_needs_an_initial_model(feats_dir):
    with pytest.raises(ConfigError, match=r"init_weight 0.5 .* needs classifier.init_model"):
        ClassifierObjective(feats_dir).build(tiny_config(classifier={"init_weight": 0.5}), 4, 8,
                                             torch.device("cpu"))


@pytest.mark.parametrize("options,message", [
    (["--pl-init", "scratch"], None),
    (["--pl-init", "random"], "--pl-init must be ssl, previous or scratch"),
    (["--cluster-merge", "ahc"], "--cluster-merge must be none, cosine or plda"),
    (["--cluster-merge", "cosine", "--plda-recluster", "true"], "two second passes"),
])
def test_pipeline_checks_the_round_options(options, message):
    proc = subprocess.run(["steps/sv_pipeline.sh", "--check-only", "true", "--ssl-config", "conf/dino_demo.yaml",
                           "--classifier-config", "conf/classifier_demo.yaml", *options],
                          check=False, cwd=ROOT, capture_output=True, text=True)
    if message is None:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 1 and message in proc.stderr
