"""Clustering for pseudo-labelling: k-means variants, selection, report, and the data dir written."""

import os
import subprocess

import kaldiio
import numpy as np
import pytest
import torch
from conftest import run_script
from sklearn.metrics import normalized_mutual_info_score

from pyspk.bin import cluster as cluster_bin
from pyspk.cluster import kmeans as km
from pyspk.cluster.agglomerative import agglomerative
from pyspk.cluster.pseudo_label import PseudoLabelOptions, pseudo_label
from pyspk.cluster.report import clusters_per_class, nmi, purity, summarize
from pyspk.cluster.seeding import kmeans_plus_plus
from pyspk.cluster.select import build_tables, cluster_names, select_confident
from pyspk.data.datadir import DataDir, read_kv, read_scp, read_table, write_table
from pyspk.data.validate import validate_data_dir
from pyspk.train.data import AUG_SUFFIXES, group_copies


def blobs(n_clusters=20, per_cluster=50, dim=32, spread=0.15, seed=0):
    """Well-separated Gaussian clusters on the unit sphere, shuffled."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((n_clusters, dim))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_clusters), per_cluster)
    x = means[labels] + spread / np.sqrt(dim) * rng.standard_normal((len(labels), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = rng.permutation(len(labels))
    return x[order].astype(np.float32), labels[order]


def reference_lloyd(x, centers, n_iter):
    """Plain Lloyd iterations (full distance matrix each time), the ground truth for the pruned version."""
    for _ in range(n_iter):
        labels = ((x[:, None, :] - centers[None]) ** 2).sum(-1).argmin(1)
        centers = np.stack([x[labels == c].mean(0) for c in range(len(centers))])
    return ((x[:, None, :] - centers[None]) ** 2).sum(-1).argmin(1), centers


@pytest.mark.parametrize("kwargs,n_clusters", [({}, 20), ({"spherical": True}, 20),
                                               ({"init": "random", "n_init": 4}, 5)])
def test_kmeans_recovers_separated_clusters(kwargs, n_clusters):
    x, truth = blobs(n_clusters=n_clusters)
    result = km.kmeans(x, n_clusters, seed=1, device="cpu", **kwargs)
    assert nmi(truth, result.labels) > 0.95
    assert result.converged
    centers = result.centers[result.labels]
    np.testing.assert_allclose(result.distances, np.linalg.norm(x - centers, axis=1), atol=1e-5)
    assert result.inertia == pytest.approx(float((result.distances.astype(np.float64) ** 2).sum()), rel=1e-6)
    if kwargs.get("n_init"):
        first_run_only = km.kmeans(x, n_clusters, seed=1, device="cpu", **dict(kwargs, n_init=1))
        assert result.inertia <= first_run_only.inertia
    if kwargs.get("spherical"):
        np.testing.assert_allclose(np.linalg.norm(result.centers, axis=1), 1.0, atol=1e-5)


def test_minibatch_and_agglomerative_recover_separated_clusters():
    x, truth = blobs()
    assert nmi(truth, km.minibatch_kmeans(x, 20, batch_size=256, seed=0, device="cpu").labels) > 0.95
    for linkage in ("average", "ward"):
        assert nmi(truth, agglomerative(x, 20, linkage=linkage).labels) > 0.95
    # Two-stage: k-means micro-clusters, then merging.
    two_stage = agglomerative(x, 20, max_points=200, seed=0, device="cpu")
    assert nmi(truth, two_stage.labels) > 0.95
    assert len(two_stage.distances) == len(x)


# 8 centres: one group of bounds (Hamerly's single bound); 64: 6 groups and 2 far movers per iteration.
@pytest.mark.parametrize("n_clusters", [8, 64])
def test_pruned_lloyd_matches_plain_lloyd(n_clusters):
    x, _ = blobs(n_clusters=n_clusters, per_cluster=40, dim=16, spread=0.8, seed=3)
    start = x[:n_clusters].copy()
    centers, labels, _, n_iter, converged = km._lloyd(torch.from_numpy(x), torch.from_numpy(start), 300, 0.0, 64,
                                                      False, False)
    assert converged and n_iter > 3
    ref_labels, ref_centers = reference_lloyd(x.astype(np.float64), start.astype(np.float64), n_iter)
    np.testing.assert_array_equal(labels.numpy(), ref_labels)
    np.testing.assert_allclose(centers.numpy(), ref_centers, atol=1e-5)


def test_lloyd_stops_once_few_points_change_cluster():
    x, _ = blobs(n_clusters=64, per_cluster=40, dim=16, spread=0.8, seed=3)
    x_t, start = torch.from_numpy(x), torch.from_numpy(x[:64].copy())
    full = km._lloyd(x_t, start, 300, 0.0, 64, False, False)
    early = km._lloyd(x_t, start, 300, 0.0, 64, False, False, tol_changed=0.02)
    assert early[4] and early[3] < full[3]
    # Plain Lloyd iterations, stopped earlier: labels exact for the returned centres.
    ref_labels, ref_centers = reference_lloyd(x.astype(np.float64), x[:64].astype(np.float64), early[3])
    np.testing.assert_array_equal(early[1].numpy(), ref_labels)
    np.testing.assert_allclose(early[0].numpy(), ref_centers, atol=1e-5)
    # The iteration before the stop moved more than 2 % of the points; the stopping one at most that.
    previous = reference_lloyd(x.astype(np.float64), x[:64].astype(np.float64), early[3] - 1)[0]
    before = reference_lloyd(x.astype(np.float64), x[:64].astype(np.float64), early[3] - 2)[0]
    assert (ref_labels != previous).mean() <= 0.02 < (previous != before).mean()
    early_run = km.kmeans(x, 64, tol_changed=0.02, seed=0, device="cpu")
    assert early_run.n_iter < km.kmeans(x, 64, seed=0, device="cpu").n_iter
    with pytest.raises(ValueError, match="--tol-changed must be in"):
        PseudoLabelOptions(num_clusters=4, tol_changed=1.0).check()


def reference_greedy_kmeans_plus_plus(x, n_clusters, seed, n_trials):
    """Greedy k-means++ in float64 numpy on the same random draws as ``pyspk.cluster.seeding.kmeans_plus_plus``."""
    generator = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(len(x), (1,), generator=generator)[0])]
    closest = ((x - x[chosen[0]]) ** 2).sum(1)
    for _ in range(1, n_clusters):
        cumulative = np.cumsum(closest)
        targets = torch.rand(n_trials, generator=generator, dtype=torch.float64).numpy() * cumulative[-1]
        candidates = np.minimum(np.searchsorted(cumulative, targets), len(x) - 1)
        new_closest = np.minimum(((x[:, None, :] - x[candidates][None]) ** 2).sum(-1), closest[:, None])
        best = new_closest.sum(0).argmin()
        chosen.append(int(candidates[best]))
        closest = new_closest[:, best]
    return chosen


def test_greedy_kmeans_plus_plus_matches_reference():
    x, _ = blobs(n_clusters=30, per_cluster=20, dim=16, spread=0.5, seed=2)
    chosen = kmeans_plus_plus(torch.from_numpy(x), 30, torch.Generator().manual_seed(4), n_trials=5)
    assert len(set(chosen.tolist())) == 30
    assert chosen.tolist() == reference_greedy_kmeans_plus_plus(x.astype(np.float64), 30, 4, 5)


def test_block_size_and_seed_do_not_change_results_unexpectedly():
    x, _ = blobs(n_clusters=10, per_cluster=30, spread=0.6)
    small = km.kmeans(x, 10, seed=5, device="cpu", block_bytes=4096)
    large = km.kmeans(x, 10, seed=5, device="cpu")
    np.testing.assert_array_equal(small.labels, large.labels)
    again = km.kmeans(x, 10, seed=5, device="cpu")
    np.testing.assert_array_equal(again.labels, large.labels)


def test_empty_cluster_is_reseeded_from_far_points():
    x, _ = blobs(n_clusters=2, per_cluster=50, dim=8, spread=0.1)
    far_away = np.full((1, 8), 100.0, dtype=np.float32)
    start = torch.from_numpy(np.concatenate([x[:1], far_away]))
    _, labels, _, _, _ = km._lloyd(torch.from_numpy(x), start, 100, 0.0, 64, False, False)
    assert np.bincount(labels.numpy(), minlength=2).min() > 0


def test_kmeans_input_errors():
    x, _ = blobs(n_clusters=2, per_cluster=5)
    with pytest.raises(ValueError, match="between 1 and the number of points"):
        km.kmeans(x, 11, device="cpu")
    x[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        km.kmeans(x, 2, device="cpu")


def test_report_measures_match_definitions():
    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 7, 500), rng.integers(0, 9, 500)
    assert nmi(truth, pred) == pytest.approx(normalized_mutual_info_score(truth, pred), abs=1e-12)
    assert nmi(["a", "a", "b"], ["x", "x", "y"]) == pytest.approx(1.0)
    truth = ["a", "a", "a", "b", "b", "c"]
    pred = [0, 0, 1, 1, 1, 1]
    assert purity(truth, pred) == pytest.approx((2 + 2) / 6)
    assert list(clusters_per_class(truth, pred)) == [2, 1, 1]
    summary = summarize(truth, pred)
    assert summary["num_speakers"] == 3 and summary["num_clusters"] == 2
    assert summary["clusters_per_speaker_mean"] == pytest.approx(4 / 3)


def test_selection_keeps_requested_fraction_nearest_first():
    rng = np.random.default_rng(0)
    sizes = [10, 20, 7, 3]
    labels = np.repeat(np.arange(4), sizes)
    distances = rng.random(len(labels))
    keep = select_confident(labels, distances, 0.7, min_cluster_size=1)
    for c, n in enumerate(sizes):
        members = labels == c
        assert keep[members].sum() == int(np.ceil(0.7 * n - 1e-9))
        # The kept ones are the nearest.
        assert distances[members & keep].max() <= distances[members & ~keep].min(initial=np.inf)
    keep = select_confident(labels, distances, 0.5, min_cluster_size=4)
    assert keep.sum() == 5 + 10 + 4  # ceil(0.5 * 3) = 2 < 4: the last cluster is dropped
    assert not keep[labels == 3].any()
    with pytest.raises(ValueError):
        select_confident(labels, distances, 0.0, 1)


def test_cluster_names_sort_like_numbers():
    names = list(cluster_names(12000))
    assert names[0] == "pl00001" and sorted(names) == names


def test_segments_source_keeps_only_used_recordings(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "utt2spk").write_text("r1-a s1\nr1-b s1\nr2-a s2\n")
    (src / "spk2utt").write_text("s1 r1-a r1-b\ns2 r2-a\n")
    (src / "segments").write_text("r1-a r1 0 1\nr1-b r1 1 2\nr2-a r2 0 1\n")
    (src / "wav.scp").write_text("r1 sox r1.flac -t wav - |\nr2 r2.wav\n")
    tables = build_tables(str(src), ["r1-b"], ["pl0001"], [0.5])
    assert tables["segments"] == {"pl0001-r1-b": "r1 1 2"}
    assert tables["wav.scp"] == {"r1": "sox r1.flac -t wav - |"}
    assert tables["utt2uniq"] == {"pl0001-r1-b": "r1-b"}


def make_embedded_corpus(root, n_spk=12, n_utt=20, dim=24, bad_dim_line=None):
    """A data dir with feats.scp / utt2num_frames and an x-vector dir of Gaussian speaker embeddings."""
    x, labels = blobs(n_clusters=n_spk, per_cluster=n_utt, dim=dim, spread=0.3, seed=7)
    data, xvec = root / "data" / "train", root / "exp" / "xvectors_train"
    data.mkdir(parents=True)
    xvec.mkdir(parents=True)
    utts = [f"spk{lab:02d}-utt{i:04d}" for i, lab in enumerate(labels)]
    spks = [f"spk{lab:02d}" for lab in labels]
    order = sorted(range(len(utts)), key=lambda i: utts[i])
    with open(data / "utt2spk", "w") as f:
        f.writelines(f"{utts[i]} {spks[i]}\n" for i in order)
    spk2utt = {}
    for i in order:
        spk2utt.setdefault(spks[i], []).append(utts[i])
    with open(data / "spk2utt", "w") as f:
        f.writelines(f"{s} {' '.join(u)}\n" for s, u in sorted(spk2utt.items()))
    with open(data / "feats.scp", "w") as f:
        f.writelines(f"{utts[i]} /feats/raw_fbank.1.ark:{100 + i}\n" for i in order)
    with open(data / "utt2num_frames", "w") as f:
        f.writelines(f"{utts[i]} {200 + i}\n" for i in order)
    with kaldiio.WriteHelper(f"ark,scp:{xvec}/xvector.ark,{xvec}/xvector.scp") as writer:
        for line, i in enumerate(order, 1):
            vector = x[i] if line != bad_dim_line else x[i][:-1]
            writer(utts[i], vector)
    return data, xvec


def test_cluster_embeddings_script_writes_valid_pseudo_label_dir(tmp_path):
    data, xvec = make_embedded_corpus(tmp_path)
    dest, report_dir = tmp_path / "data" / "train_pl_r1", tmp_path / "exp" / "pl_r1"
    args = ["steps/cluster_embeddings.sh", "--num-clusters", "12", "--keep-fraction", "0.75",
            "--min-cluster-size", "3", "--device", "cpu", "--ref-utt2spk", str(data / "utt2spk"),
            str(xvec), str(data), str(dest), str(report_dir)]
    proc = run_script(args)
    assert "wrote" in proc.stdout

    validate_data_dir(str(dest), need_feats=True)
    run_script(["utils/validate_data_dir.sh", "--no-text", "--no-wav", str(dest)])
    # Kaldi's own check: utt2spk sorted by utterance is also sorted by speaker.
    subprocess.run(["sort", "-k2", "-C", str(dest / "utt2spk")], check=True, env={"LC_ALL": "C"})

    utt2spk = read_kv(str(dest / "utt2spk"))
    uniq = read_kv(str(dest / "utt2uniq"))
    src_feats, feats = read_scp(str(data / "feats.scp")), read_scp(str(dest / "feats.scp"))
    assert len(utt2spk) == 12 * 15  # ceil(0.75 * 20) per cluster when the speakers are recovered
    for utt, spk in utt2spk.items():
        assert utt == f"{spk}-{uniq[utt]}"
        assert feats[utt] == src_feats[uniq[utt]]
    assert set(read_kv(str(dest / "utt2dist"), float)) == set(utt2spk)
    assert len(read_table(str(dest / "spk2utt"))) == 12

    report = dict(line.split(" ", 1) for line in (report_dir / "cluster_report.txt").read_text().splitlines()
                  if not line.startswith("#"))
    assert float(report["truth_all.nmi"]) > 0.95
    assert float(report["truth_kept.purity"]) > 0.95
    assert int(report["selection.kept_utts"]) == len(utt2spk)
    assignments = (report_dir / "cluster_assignments.txt").read_text().splitlines()
    assert len(assignments) == 240 and sum(line.endswith(" 1") for line in assignments) == len(utt2spk)

    # Re-running gives the same directory.
    before = {name: (dest / name).read_text() for name in os.listdir(dest)}
    cluster_bin.main(args[1:])  # same options, in-process (saves a start-up)
    assert {name: (dest / name).read_text() for name in os.listdir(dest)} == before


def make_combined_dir(data, copies_of):
    """``<data>_combined``: the utterances of ``data`` and ``<utt>-<suffix>`` copies for the suffixes
    ``copies_of(i)`` of its i-th utterance, with feats.scp / utt2num_frames / utt2uniq (as combine_data)."""
    combined = data.parent / (data.name + "_combined")
    combined.mkdir()
    utt2spk, feats = read_kv(str(data / "utt2spk")), read_scp(str(data / "feats.scp"))
    tables = {"utt2spk": {}, "feats.scp": {}, "utt2num_frames": {}, "utt2uniq": {}}
    for i, utt in enumerate(sorted(utt2spk)):
        for new, value in [(utt, feats[utt])] + [(f"{utt}-{s}", f"/feats/aug_fbank.1.ark:{i}{s}")
                                                 for s in copies_of(i)]:
            tables["utt2spk"][new] = utt2spk[utt]
            tables["feats.scp"][new] = value
            tables["utt2num_frames"][new] = str(300 + i)
            tables["utt2uniq"][new] = utt
    spk2utt = {}
    for utt in sorted(tables["utt2spk"]):
        spk2utt.setdefault(tables["utt2spk"][utt], []).append(utt)
    tables["spk2utt"] = spk2utt
    for name, table in tables.items():
        write_table(str(combined / name), table)
    validate_data_dir(str(combined), need_feats=True)
    return combined


def test_copies_from_writes_combined_dir_with_grouped_copies(tmp_path):
    data, xvec = make_embedded_corpus(tmp_path)
    combined = make_combined_dir(data, lambda i: AUG_SUFFIXES[:i % 5])  # 0 to 4 copies
    dest, report_dir = tmp_path / "data" / "train_pl_r1", tmp_path / "exp" / "pl_r1"
    dest_combined = tmp_path / "data" / "train_pl_r1_combined"
    args = ["steps/cluster_embeddings.sh", "--num-clusters", "12", "--keep-fraction", "0.75",
            "--min-cluster-size", "3", "--device", "cpu", "--copies-from", str(combined),
            str(xvec), str(data), str(dest), str(report_dir)]
    proc = run_script(args)
    assert f"{dest_combined} (" in proc.stdout

    validate_data_dir(str(dest_combined), need_feats=True)
    run_script(["utils/validate_data_dir.sh", "--no-text", "--no-wav", str(dest_combined)])
    clean_spk, clean_dist = read_kv(str(dest / "utt2spk")), read_kv(str(dest / "utt2dist"))
    clean_uniq = read_kv(str(dest / "utt2uniq"))
    kept = {clean_uniq[new]: new for new in clean_spk}  # source utterance -> its id in dest
    src_groups = group_copies(DataDir(combined), list(read_scp(str(combined / "feats.scp"))))
    assert len(kept) == 12 * 15
    num_copies = sum(len(src_groups[utt]) for utt in kept)
    assert 0 < num_copies < len(kept) * 4

    utt2spk, uniq = read_kv(str(dest_combined / "utt2spk")), read_kv(str(dest_combined / "utt2uniq"))
    dist, feats = read_kv(str(dest_combined / "utt2dist")), read_scp(str(dest_combined / "feats.scp"))
    src_feats = read_scp(str(combined / "feats.scp"))
    assert len(utt2spk) == len(kept) + num_copies
    for new, spk in utt2spk.items():
        clean = kept[uniq[new]]  # the copy's clean utterance, as named in dest
        assert spk == clean_spk[clean] and dist[new] == clean_dist[clean]
        assert new.startswith(f"{spk}-{uniq[new]}") and feats[new] == src_feats[new[len(spk) + 1:]]
    assert group_copies(DataDir(dest_combined), list(feats)) == {
        new: [f"{clean_spk[new]}-{copy}" for copy in src_groups[utt]] for utt, new in kept.items()}
    report = (report_dir / "cluster_report.txt").read_text()
    assert f"selection.kept_copies {num_copies}\n" in report

    # Re-running gives the same directories.
    before = {path: path.read_text() for d in (dest, dest_combined) for path in d.iterdir()}
    cluster_bin.main(args[1:])
    assert {path: path.read_text() for d in (dest, dest_combined) for path in d.iterdir()} == before


def test_copies_from_errors_and_left_out_copies(tmp_path, capsys):
    data, xvec = make_embedded_corpus(tmp_path, n_spk=2, n_utt=4)
    combined = make_combined_dir(data, lambda i: ("reverb", "noise"))
    dest = tmp_path / "pl"
    args = ["--num-clusters", "2", "--keep-fraction", "1", "--min-cluster-size", "1", "--device", "cpu",
            "--copies-from", str(combined), str(xvec), str(data), str(dest), str(tmp_path / "report")]

    # A copy without features is left out, with a warning.
    lines = (combined / "utt2num_frames").read_text().splitlines(keepends=True)
    dropped = lines.pop(2).split()[0]
    assert dropped.endswith("-reverb")
    (combined / "utt2num_frames").write_text("".join(lines))
    cluster_bin.main(args)
    written = set(read_kv(str(tmp_path / "pl_combined" / "utt2uniq")))
    assert len(written) == 8 * 3 - 1 and not any(new.endswith(dropped) for new in written)
    assert "1 utterances have no entry in" in capsys.readouterr().err

    # A kept (here: every) utterance missing from the combined dir is an error naming the file; nothing written.
    lines = (combined / "feats.scp").read_text().splitlines(keepends=True)
    missing = lines.pop(0).split()[0]
    (combined / "feats.scp").write_text("".join(lines))
    dest, args[-2] = tmp_path / "pl2", str(tmp_path / "pl2")
    with pytest.raises(SystemExit) as exit_info:
        cluster_bin.main(args)
    message = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert f"cluster: error: {combined / 'feats.scp'}: " in message and f"'{missing}'" in message
    assert not dest.exists() and not (tmp_path / "pl2_combined").exists()

    # Copies the trainers could not group again once renamed (utt2copies names) are refused; corpus b has
    # the same utterance ids as the clustered one.
    other = make_combined_dir(make_embedded_corpus(tmp_path / "b", n_spk=2, n_utt=4)[0], lambda i: ("rev",))
    utts = sorted(read_kv(str(tmp_path / "b" / "data" / "train" / "utt2spk")))
    (other / "utt2copies").write_text("".join(f"{utt} {utt}-rev\n" for utt in utts))
    args[-2], args[-5] = str(tmp_path / "pl3"), str(other)
    with pytest.raises(SystemExit) as exit_info:
        cluster_bin.main(args)
    assert "could not be grouped" in capsys.readouterr().err and not (tmp_path / "pl3_combined").exists()


def test_cluster_cli_errors_name_the_file(tmp_path, capsys):
    data, xvec = make_embedded_corpus(tmp_path, n_spk=2, n_utt=3, bad_dim_line=4)
    with pytest.raises(SystemExit) as exit_info:
        cluster_bin.main(["--num-clusters", "2", "--device", "cpu", str(xvec), str(data), str(tmp_path / "pl"),
                          str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "xvector.scp:4:" in err and "dimension" in err
    assert not (tmp_path / "pl").exists()

    data2, xvec2 = make_embedded_corpus(tmp_path / "b", n_spk=2, n_utt=3)
    with pytest.raises(SystemExit) as exit_info:
        cluster_bin.main(["--num-clusters", "7", "--device", "cpu", str(xvec2), str(data2), str(tmp_path / "pl"),
                          str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert "xvector.scp" in err and "more than the 6" in err

    open(xvec2 / "xvector.scp", "w").close()
    with pytest.raises(SystemExit) as exit_info:
        cluster_bin.main(["--num-clusters", "2", "--device", "cpu", str(xvec2), str(data2), str(tmp_path / "pl"),
                          str(tmp_path / "report")])
    assert "xvector.scp: no vectors" in capsys.readouterr().err


def test_script_usage_and_missing_input(tmp_path):
    proc = run_script(["steps/cluster_embeddings.sh"], check=False)
    assert proc.returncode == 1 and "e.g.:" in proc.stderr
    proc = run_script(["steps/cluster_embeddings.sh", str(tmp_path), str(tmp_path), str(tmp_path / "d"),
                       str(tmp_path / "r")], check=False)
    assert proc.returncode == 1 and "xvector.scp" in proc.stderr


def test_pseudo_label_library_function(tmp_path):
    """pyspk.cluster.pseudo_label without the entry point: the report it returns matches the written data dir."""
    data, xvec = make_embedded_corpus(tmp_path, n_spk=4, n_utt=10)
    options = PseudoLabelOptions(num_clusters=4, keep_fraction=0.5, min_cluster_size=2)
    sections = pseudo_label(str(xvec), str(data), str(tmp_path / "pl"), str(tmp_path / "report"), options,
                            torch.device("cpu"), ref_utt2spk=str(data / "utt2spk"))
    utt2spk = read_kv(str(tmp_path / "pl" / "utt2spk"))
    assert sections["selection"]["kept_utts"] == len(utt2spk) == 20  # half of each 10-member cluster
    assert sections["selection"]["kept_clusters"] == len(set(utt2spk.values())) == 4
    assert sections["truth_all"]["nmi"] > 0.95 and sections["settings"]["keep_fraction"] == 0.5
    with pytest.raises(ValueError, match="--keep-fraction must be in"):
        pseudo_label(str(xvec), str(data), str(tmp_path / "pl2"), str(tmp_path / "r2"),
                     PseudoLabelOptions(num_clusters=4, keep_fraction=0.0), torch.device("cpu"))
    assert not (tmp_path / "pl2").exists()
