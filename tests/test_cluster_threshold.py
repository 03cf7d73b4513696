"""Clustering without the number of speakers: threshold AHC, micro-centroids, PLDA re-clustering, selection."""

import numpy as np
import pytest
import torch
from conftest import run_script
from scipy.cluster.hierarchy import fcluster, linkage
from test_cluster import blobs, make_embedded_corpus

from pyspk.backend.plda import estimate_plda
from pyspk.bin import cluster as cluster_bin
from pyspk.cluster.agglomerative import agglomerative, cut_tree, equal_prior_threshold, nn_chain
from pyspk.cluster.kmeans import kmeans
from pyspk.cluster.plda_recluster import mean_llr_matrix, plda_recluster
from pyspk.cluster.pseudo_label import PseudoLabelOptions
from pyspk.cluster.report import nmi
from pyspk.cluster.select import cluster_posteriors, select_by_posterior, select_confident
from pyspk.data.datadir import read_kv


@pytest.mark.parametrize("method", ["average", "complete", "ward"])
def test_nn_chain_matches_scipy(method):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 4))
    diff = x[:, None] - x[None]
    if method == "ward":
        dist, reference = (diff**2).sum(-1), linkage(x, method="ward")
    else:
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        dist, reference = 1.0 - unit @ unit.T, linkage(x, method=method, metric="cosine")
    pairs, heights = nn_chain(dist.astype(np.float32), np.ones(len(x)), method)
    np.testing.assert_allclose(np.sort(heights), reference[:, 2], atol=1e-4)
    for k in (2, 9):
        cut = cut_tree(pairs, heights, len(x), n_clusters=k)
        assert nmi(fcluster(reference, k, "maxclust"), cut) == pytest.approx(1.0)


def test_threshold_finds_the_number_of_separated_clusters():
    x, truth = blobs(n_clusters=9, per_cluster=30)
    auto = agglomerative(x, 0)  # threshold from the pair scores
    assert auto.centers.shape[0] == 9 and nmi(truth, auto.labels) == pytest.approx(1.0)
    assert agglomerative(x, 0, threshold=0.5).centers.shape[0] == 9
    assert agglomerative(x, 0, threshold=2.5).centers.shape[0] == 1  # beyond any cosine distance
    # The micro-centroid reduction (sizes as weights) gives the same clusters.
    reduced = agglomerative(x, 0, reduce_clusters=40, seed=0, device="cpu")
    assert reduced.centers.shape[0] == 9 and nmi(truth, reduced.labels) == pytest.approx(1.0)


def test_weighted_micro_centroids_give_the_points_average_linkage():
    """The mean cosine distance between two groups of unit vectors is one minus the dot product of their means."""
    x, _ = blobs(n_clusters=3, per_cluster=10, spread=1.0)
    groups = np.repeat(np.arange(15), 2)
    means = np.stack([x[groups == g].mean(0) for g in range(15)]).astype(np.float64)
    pair_mean = np.array([[1.0 - (x[groups == a] @ x[groups == b].T).mean() for b in range(15)] for a in range(15)])
    np.testing.assert_allclose(1.0 - means @ means.T, pair_mean, atol=1e-5)


def test_equal_prior_threshold_lies_between_the_modes():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0.0, 0.2, 9000), rng.normal(0.8, 0.05, 1000)])
    assert 0.5 < equal_prior_threshold(scores) < 0.7


def nuisance_data(n_spk=4, per_spk=60, seed=1):
    """Speakers apart in three quiet dimensions under one loud within-speaker direction (cosine is misled)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_spk), per_spk)
    means = np.zeros((n_spk, 6))
    means[:, 1:4] = rng.choice([-1.0, 1.0], size=(n_spk, 3))
    x = means[labels] + 0.1 * rng.standard_normal((len(labels), 6))
    x[:, 0] += 1.5 * rng.standard_normal(len(labels))
    return x, labels


def test_llr_matrix_matches_kaldi_llr():
    x, labels = nuisance_data()
    plda = estimate_plda(x, labels)
    y, _ = plda.transform_vectors(x)
    scores = mean_llr_matrix(plda, x, np.arange(len(x)), len(x))
    np.testing.assert_allclose(scores[5], plda.log_likelihood_ratio(y[[5] * len(x)], 1, y), atol=1e-8)


def test_plda_recluster_improves_on_cosine_when_cosine_is_misled():
    x, truth = nuisance_data()
    first = kmeans(x, 8, seed=0, device="cpu")  # over-split, partly along the loud direction
    cosine = agglomerative(x, 4)  # even told the number of speakers
    best_before = max(nmi(truth, first.labels), nmi(truth, cosine.labels))
    keep = select_confident(first.labels, first.distances, 0.8, 5)
    second = plda_recluster(x, first.labels, keep)
    assert nmi(truth, second.labels) > best_before + 0.1
    # The same through micro-clusters.
    micro = kmeans(x, 40, seed=0, device="cpu").labels
    reduced = plda_recluster(x, first.labels, keep, micro=(micro, np.bincount(micro, minlength=40)))
    assert nmi(truth, reduced.labels) > best_before + 0.1
    with pytest.raises(ValueError, match="at least two"):
        plda_recluster(x, np.zeros(len(x), dtype=np.int64), keep)


def test_posterior_selection_keeps_confident_members_within_size_limits():
    centers = np.array([[0.0, 0.0], [4.0, 0.0], [20.0, 0.0]])
    x = np.array([[0.0, 0.1], [0.1, 0.0], [-0.1, 0.0], [0.0, -0.1], [2.0, 0.0],  # cluster 0; 2.0 is halfway
                  [4.0, 0.1], [4.1, 0.0], [3.9, 0.0],  # cluster 1
                  [20.0, 0.0], [20.0, 0.1]])  # cluster 2, small
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    posteriors = cluster_posteriors(x, centers, labels)
    assert posteriors[4] < 0.7 and np.delete(posteriors, 4).min() > 0.99
    keep = select_by_posterior(labels, posteriors, 0.9, min_cluster_size=3)
    np.testing.assert_array_equal(keep, [1, 1, 1, 1, 0, 1, 1, 1, 0, 0])
    keep = select_by_posterior(labels, posteriors, 0.9, min_cluster_size=2, max_cluster_size=2)
    assert keep.sum() == 6 and np.bincount(labels[keep]).max() == 2
    # The nearest-fraction rule takes the maximum too, nearest first.
    distances = np.array([0.3, 0.1, 0.2, 0.4, 2.0, 0.2, 0.3, 0.1, 0.0, 0.1])
    keep = select_confident(labels, distances, 1.0, 1, max_cluster_size=1)
    np.testing.assert_array_equal(np.flatnonzero(keep), [1, 7, 8])
    with pytest.raises(ValueError, match="maximum cluster size"):
        select_confident(labels, distances, 1.0, 3, max_cluster_size=2)


@pytest.mark.parametrize("options,message", [
    (dict(num_clusters=0), "only with --method agglomerative"),
    (dict(num_clusters=5, method="agglomerative", threshold=0.3), "--threshold needs --num-clusters 0"),
    (dict(select="best"), "--select must be"),
    (dict(posterior_threshold=1.0), "--posterior-threshold"),
    (dict(pca_variance=1.5), "--pca-variance"),
    (dict(max_cluster_size=3, min_cluster_size=5), "--max-cluster-size"),
])
def test_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        PseudoLabelOptions(**options).check()


def test_threshold_option_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cluster_bin.main(["--threshold", "high", "x", "y", "z", "w"])
    assert "expected 'auto' or a number" in capsys.readouterr().err


def test_script_clusters_without_the_number_of_speakers(tmp_path):
    data, xvec = make_embedded_corpus(tmp_path, n_spk=6, n_utt=20)
    dest, report_dir = tmp_path / "data" / "train_pl", tmp_path / "exp" / "cluster"
    proc = run_script(["steps/cluster_embeddings.sh", "--method", "agglomerative", "--num-clusters", "0",
                       "--pca-variance", "0.95", "--plda-recluster", "true", "--select", "posterior",
                       "--max-cluster-size", "15", "--min-cluster-size", "3", "--device", "cpu",
                       "--ref-utt2spk", str(data / "utt2spk"), str(xvec), str(data), str(dest), str(report_dir)])
    assert "clustering.num_clusters 6" in proc.stdout, proc.stdout + proc.stderr
    report = dict(line.split(" ", 1) for line in (report_dir / "cluster_report.txt").read_text().splitlines()
                  if not line.startswith("#"))
    assert report["first_pass.num_clusters"] == "6" and report["settings.threshold"] == "auto"
    assert float(report["truth_all.nmi"]) == 1.0 and float(report["first_pass_truth_all.nmi"]) == 1.0
    utt2spk = read_kv(str(dest / "utt2spk"))
    assert len(set(utt2spk.values())) == 6 and len(utt2spk) == 6 * 15  # the maximum size binds
    assert int(report["selection.kept_utts"]) == len(utt2spk)


def test_pca_keeps_the_requested_variance_share():
    from pyspk.cluster.pseudo_label import pca_reduce

    rng = np.random.default_rng(0)
    x = torch.from_numpy((rng.standard_normal((500, 5)) * np.array([10.0, 5.0, 1.0, 0.1, 0.1])).astype(np.float32))
    assert pca_reduce(x, 0.9).shape[1] == 2  # 100 + 25 of 126.02
    assert pca_reduce(x, 0.995).shape[1] == 3
