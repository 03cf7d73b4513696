"""Embedding extraction: chunking, batching, VAD, failures, and steps/extract_embeddings.sh."""

import itertools
import os
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from conftest import run_script

from pyspk.backend.embeddings import read_kaldi_object
from pyspk.bin import extract_embeddings as extract_bin
from pyspk.models import build_model, save_backbones
from pyspk.models.extract import chunk_plan, extract_embeddings, iter_features, job_share

FEAT_DIM = 40
MODEL_CFG = {"name": "ecapa", "feat_dim": FEAT_DIM, "embed_dim": 16, "channels": 32, "scale": 4,
             "se_channels": 8, "attention_channels": 8, "mfa_channels": 48}


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(seed=0):
    torch.manual_seed(seed)
    model = build_model(MODEL_CFG)
    model(torch.randn(4, 50, FEAT_DIM))  # non-trivial BatchNorm running statistics
    return model.eval()


def embed(model, feats):
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(feats, dtype=np.float32))[None])[0].numpy().astype(np.float64)


def make_feats_dir(root, lengths, seed=0, vad=False):
    """A data dir with feats.scp (+ utt2spk, spk2utt, optional vad.scp); returns (dir, {utt: feats})."""
    rng = np.random.default_rng(seed)
    data = os.path.join(root, "data")
    os.makedirs(data, exist_ok=True)
    feats = {}
    for i, length in enumerate(lengths):
        utt = f"spk{i % 3}-utt{i:02d}"
        feats[utt] = (rng.standard_normal((length, FEAT_DIM)) + rng.standard_normal(FEAT_DIM)).astype(np.float32)
    with kaldiio.WriteHelper(f"ark,scp:{data}/feats.ark,{data}/feats.scp") as writer:
        for utt in sorted(feats):
            writer(utt, feats[utt])
    if vad:
        with kaldiio.WriteHelper(f"ark,scp:{data}/vad.ark,{data}/vad.scp") as writer:
            for utt in sorted(feats):
                writer(utt, (rng.random(len(feats[utt])) > 0.3).astype(np.float32))
    with open(os.path.join(data, "utt2spk"), "w") as f:
        for utt in sorted(feats):
            f.write(f"{utt} {utt.split('-')[0]}\n")
    with open(os.path.join(data, "spk2utt"), "w") as f:
        for spk in sorted({utt.split("-")[0] for utt in feats}):
            f.write(f"{spk} {' '.join(u for u in sorted(feats) if u.startswith(spk + '-'))}\n")
    return data, feats


def read_scp_lines(data, name):
    with open(os.path.join(data, name)) as f:
        return dict(line.split(maxsplit=1) for line in f.read().splitlines())


def test_chunk_plan():
    assert chunk_plan(80, 100, 30) == [(0, 80, 1.0)]
    assert chunk_plan(100, 100, 30) == [(0, 100, 1.0)]
    # A 50-frame tail: one more full chunk ending at the last frame, weighted by its new frames.
    assert chunk_plan(250, 100, 30) == [(0, 100, 1.0), (100, 100, 1.0), (150, 100, 0.5)]
    # A tail shorter than min_chunk_size is dropped.
    assert chunk_plan(215, 100, 30) == [(0, 100, 1.0), (100, 100, 1.0)]
    with pytest.raises(ValueError):
        chunk_plan(215, 100, 200)


def test_job_share_covers_all_items_once():
    items = [f"u{i}" for i in range(10)]
    shares = [job_share(items, job, 3) for job in (1, 2, 3)]
    assert list(itertools.chain.from_iterable(shares)) == items and all(shares)
    with pytest.raises(ValueError):
        job_share(items, 4, 3)


def test_chunked_extraction_equals_weighted_mean_of_chunk_embeddings():
    model = make_model()
    rng = np.random.default_rng(1)
    long_utt = rng.standard_normal((250, FEAT_DIM)).astype(np.float32)
    mid_utt = rng.standard_normal((70, FEAT_DIM)).astype(np.float32)
    short_utt = rng.standard_normal((12, FEAT_DIM)).astype(np.float32)
    got = dict(extract_embeddings(model, [("a", long_utt), ("b", mid_utt), ("c", short_utt)],
                                  chunk_size=100, min_chunk_size=30, batch_size=2))
    expected_long = (embed(model, long_utt[:100]) + embed(model, long_utt[100:200])
                     + 0.5 * embed(model, long_utt[150:250])) / 2.5
    np.testing.assert_allclose(got["a"], expected_long, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["b"], embed(model, mid_utt), rtol=1e-4, atol=1e-5)
    padded = np.concatenate([short_utt, short_utt, short_utt[:6]])  # repeated to 30 frames
    np.testing.assert_allclose(got["c"], embed(model, padded), rtol=1e-4, atol=1e-5)
    assert all(v.dtype == np.float32 and v.shape == (16,) for v in got.values())


def test_batching_across_utterances_does_not_change_embeddings():
    model = make_model()
    rng = np.random.default_rng(2)
    utts = [(f"u{i}", rng.standard_normal((n, FEAT_DIM)).astype(np.float32)) for i, n in
            enumerate([300, 100, 100, 64, 240, 100])]
    one_by_one = list(extract_embeddings(model, utts, 100, 30, batch_size=1, buffer_chunks=1))
    batched = list(extract_embeddings(model, utts, 100, 30, batch_size=8))
    assert [u for u, _ in batched] == [u for u, _ in utts]
    for (_, a), (_, b) in zip(one_by_one, batched, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_iter_features_applies_vad_and_counts_failures(tmp_path):
    data, feats = make_feats_dir(str(tmp_path), [50, 60, 70], vad=True)
    feats_scp = read_scp_lines(data, "feats.scp")
    vad_scp = read_scp_lines(data, "vad.scp")
    vad = kaldiio.load_scp(os.path.join(data, "vad.scp"))
    feats_scp["missing-utt"] = feats_scp[sorted(feats)[0]].rsplit(":", 1)[0] + ":999999"
    failed = []
    utts = [*sorted(feats), "missing-utt", "absent-utt"]
    got = dict(iter_features(feats_scp, utts, FEAT_DIM, vad_scp, failed))
    assert sorted(got) == sorted(feats)
    for utt in feats:
        np.testing.assert_array_equal(got[utt], feats[utt][vad[utt] > 0.5])
    assert [utt for utt, _ in failed] == ["missing-utt", "absent-utt"]
    wrong_dim = []
    assert not list(iter_features(feats_scp, sorted(feats), FEAT_DIM + 1, None, wrong_dim))
    assert len(wrong_dim) == 3 and "feature dim" in wrong_dim[0][1]


def test_extract_cli_backbone_choice_and_vad(tmp_path):
    data, feats = make_feats_dir(str(tmp_path), [40, 130, 90], vad=True)
    teacher, student = make_model(0), make_model(1)
    model_file = str(tmp_path / "final.pt")
    save_backbones(model_file, {"teacher": teacher, "student": student}, default="teacher")
    vad = kaldiio.load_scp(os.path.join(data, "vad.scp"))
    common = ["--chunk-size", "100", "--min-chunk-size", "30", "--device", "cpu"]
    for backbone, model in (("teacher", teacher), ("student", student)):
        out = str(tmp_path / backbone)
        argv = ["extract", *common, "--use-vad", "true", "--backbone", backbone, model_file, data, out]
        with pytest.raises(SystemExit) as exit_info:
            extract_bin.main(argv)
        assert exit_info.value.code == 0
        got = kaldiio.load_scp(os.path.join(out, "xvector.1.scp"))
        expected = dict(extract_embeddings(model, [(u, feats[u][vad[u] > 0.5]) for u in sorted(feats)], 100, 30))
        assert sorted(got) == sorted(feats)
        for utt in feats:
            np.testing.assert_allclose(got[utt], expected[utt], rtol=1e-5, atol=1e-6)
    with pytest.raises(SystemExit) as exit_info:
        extract_bin.main(["extract", *common, "--backbone", "ema", model_file, data, str(tmp_path / "x")])
    assert exit_info.value.code == 1


def test_extract_embeddings_script(tmp_path):
    lengths = [40, 150, 230, 95, 60, 120, 80, 20, 310]
    data, feats = make_feats_dir(str(tmp_path), lengths)
    bad_utt = "spk1-utt04"
    with open(tmp_path / "corrupt.ark", "wb") as f:
        f.write(b"spk1-utt04 \0BFM garbage")
    scp = read_scp_lines(data, "feats.scp")
    scp[bad_utt] = f"{tmp_path}/corrupt.ark:11"
    with open(os.path.join(data, "feats.scp"), "w") as f:
        f.writelines(f"{utt} {scp[utt]}\n" for utt in sorted(scp))
    model = make_model()
    model_file = str(tmp_path / "final.pt")
    save_backbones(model_file, {"teacher": model, "student": make_model(1)}, default="teacher")
    out = str(tmp_path / "xvectors")
    args = ["steps/extract_embeddings.sh", "--nj", "2", "--chunk-size", "100", "--min-chunk-size", "30",
            "--device", "cpu"]

    proc = run_script([*args, "--max-fail-fraction", "0.2", model_file, data, out])
    assert "Done 8, failed 1" in proc.stdout
    logs = "".join(Path(out, "log", f"extract.{n}.log").read_text() for n in (1, 2))
    assert f"{bad_utt}: failed" in logs and "Done" in logs

    good = sorted(u for u in feats if u != bad_utt)
    with open(os.path.join(out, "xvector.scp")) as f:
        assert [line.split()[0] for line in f] == good
    xvectors = kaldiio.load_scp(os.path.join(out, "xvector.scp"))
    expected = dict(extract_embeddings(model, [(u, feats[u]) for u in good], 100, 30))
    for utt in good:
        assert xvectors[utt].dtype == np.float32 and xvectors[utt].shape == (16,)
        np.testing.assert_allclose(xvectors[utt], expected[utt], rtol=1e-5, atol=1e-6)

    spk_xvectors = kaldiio.load_scp(os.path.join(out, "spk_xvector.scp"))
    assert sorted(spk_xvectors) == ["spk0", "spk1", "spk2"]
    with open(os.path.join(out, "num_utts.ark")) as f:
        num_utts = dict(line.split() for line in f)
    for spk in spk_xvectors:
        utts = [u for u in good if u.startswith(spk + "-")]
        assert int(num_utts[spk]) == len(utts)
        np.testing.assert_allclose(spk_xvectors[spk], np.mean([xvectors[u] for u in utts], axis=0), rtol=1e-5,
                                   atol=1e-6)
    # mean.vec, as Kaldi's extract_xvectors.sh: the mean that scoring's --mean-dir takes without reading them all.
    np.testing.assert_allclose(read_kaldi_object(os.path.join(out, "mean.vec")),
                               np.mean([xvectors[u] for u in good], axis=0), rtol=1e-5, atol=1e-6)

    proc = run_script([*args, "--max-fail-fraction", "0.2", model_file, data, out])
    assert "nothing to do" in proc.stdout

    # 1 of 9 failed is more than the default --max-fail-fraction 0.05.
    with pytest.raises(SystemExit) as exit_info:
        extract_bin.main(["merge", "--num-jobs", "2", data, out])
    assert exit_info.value.code == 1


def test_script_reports_bad_inputs(tmp_path):
    data, _ = make_feats_dir(str(tmp_path), [40, 50])
    out = str(tmp_path / "xvectors")
    proc = run_script(["steps/extract_embeddings.sh", str(tmp_path / "no.pt"), data, out], check=False)
    assert proc.returncode == 1 and "no such file" in proc.stderr
    torch.save({"model": {}}, tmp_path / "plain.pt")
    proc = run_script(["steps/extract_embeddings.sh", "--nj", "1", str(tmp_path / "plain.pt"), data, out], check=False)
    assert proc.returncode == 1
    assert "extraction job 1 failed" in proc.stderr and "not a backbone file" in proc.stderr
    assert not os.path.exists(os.path.join(out, "xvector.scp"))
