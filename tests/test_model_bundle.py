"""Model bundles (steps/export_model.sh), the pyspk command and pyspk.load, TorchScript/ONNX export."""

import importlib.util
import os
import shutil
import subprocess
import sys

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from conftest import ROOT, make_wav_data_dir, no_traceback, run_script

import pyspk
from pyspk.backend.pipeline import train_plda_backend
from pyspk.bin import compute_fbank as compute_fbank_bin
from pyspk.bin import compute_vad as compute_vad_bin
from pyspk.bin import extract_embeddings as extract_bin
from pyspk.data.datadir import read_scp
from pyspk.features.audio import read_audio
from pyspk.features.fbank import FBANK_SPEC, FbankConfig, compute_fbank, prepare_waveform, read_kaldi_conf
from pyspk.models import build_model, load_backbone, save_backbones
from pyspk.models.bundle import FORMAT_VERSION, BundleError, read_model_file
from pyspk.models.export import export_onnx, export_torchscript, onnx_session
from pyspk.models.extract import write_vectors

pytestmark = pytest.mark.usefixtures("one_thread")

FBANK_CONF = os.path.join(ROOT, "conf", "fbank.conf")
VAD_CONF = os.path.join(ROOT, "conf", "vad.conf")
# conf/dino_tiny.yaml's backbone, and a tiny ECAPA, both on conf/fbank.conf's 80 bins.
BACKBONES = {
    "resnet_thin": {"name": "resnet_thin", "feat_dim": 80, "embed_dim": 32, "blocks": [1, 1], "base_width": 4},
    "ecapa": {"name": "ecapa", "feat_dim": 80, "embed_dim": 16, "channels": 32, "scale": 4, "se_channels": 8,
              "attention_channels": 8, "mfa_channels": 48},
}
CHUNK_SIZE, MIN_CHUNK_SIZE = 60, 30  # small, so the test utterances are embedded in several chunks


def make_backbone(kind, seed=0):
    torch.manual_seed(seed)
    model = build_model(BACKBONES[kind])
    model(torch.randn(4, 80, 80))  # BatchNorm running statistics that are not the identity
    return model.eval()


def run_cli(*args, check_rc=None):
    proc = subprocess.run([sys.executable, "-m", "pyspk", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, check=False, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    no_traceback(proc)
    return proc


def one_line_error(proc, *words):
    """The process failed with a single stderr line holding ``words``."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """An experiment dir as steps/sv_pipeline.sh leaves a pseudo-label round: final.pt, config.yaml,
    log/launch.log, xvectors_train, plda, ../results.txt; and a data dir of wavs."""
    root = tmp_path_factory.mktemp("bundle")
    data = make_wav_data_dir(str(root), n_spk=2, n_utt=2, min_sec=1.0, max_sec=2.5)
    exp = root / "exp" / "pl_dino_r1"
    (exp / "log").mkdir(parents=True)
    with open(os.path.join(ROOT, "conf", "classifier_tiny.yaml")) as f:
        config = yaml.safe_load(f)
    config["data"]["use_vad"] = True
    with open(exp / "config.yaml", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    save_backbones(exp / "final.pt", {"model": make_backbone("resnet_thin")}, "model",
                   extra={"config": config, "step": 6, "epoch": 2})
    (exp / "log" / "launch.log").write_text("# python -m pyspk.bin.train --config conf/classifier_tiny.yaml "
                                            "--device auto data/train_pl_dino_r1 exp/pl_dino_r1\n")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(8), 5)
    train_x = rng.standard_normal((40, 32)) + 3 * rng.standard_normal((8, 32))[labels]
    (exp / "xvectors_train").mkdir()
    write_vectors(exp / "xvectors_train" / "xvector.1.ark", exp / "xvectors_train" / "xvector.scp",
                  ((f"u{i:02d}", x) for i, x in enumerate(train_x)))
    train_plda_backend(train_x, labels).save(exp / "plda")
    (root / "exp" / "results.txt").write_text(
        "system=dino_tiny_cosine EER=30% minDCF(p=0.01)=1.0000 trials=data/test/trials\n"
        "system=pl_dino_r1_cosine EER=20% minDCF(p=0.01)=0.9000 trials=data/test/trials\n"
        "system=pl_dino_r1_plda_crosscall EER=21% minDCF(p=0.01)=0.9100 trials=data/test/trials_crosscall\n"
        "system=pl_dino_r11_cosine EER=25% minDCF(p=0.01)=0.9500 trials=data/test/trials\n")
    out = root / "exported"
    run_script(["steps/export_model.sh", "--chunk-size", str(CHUNK_SIZE), "--min-chunk-size", str(MIN_CHUNK_SIZE),
                str(exp), str(out)])
    return {"root": root, "data": data, "exp": exp, "bundle": out / "model.pt", "out": out, "train_x": train_x,
            "wavs": read_scp(os.path.join(data, "wav.scp"))}


def test_export_step_writes_bundle_and_model_card(experiment):
    out = experiment["out"]
    content = torch.load(out / "model.pt", weights_only=True)
    assert content["format_version"] == FORMAT_VERSION
    assert content["frontend"]["use_vad"] is True  # the training config's data.use_vad
    assert content["frontend"]["fbank"] == read_kaldi_conf(FBANK_CONF, FBANK_SPEC)
    assert (content["frontend"]["chunk_size"], content["frontend"]["min_chunk_size"]) == (CHUNK_SIZE, MIN_CHUNK_SIZE)
    np.testing.assert_allclose(content["backend"]["mean"].numpy(), experiment["train_x"].mean(axis=0), atol=1e-6)
    assert content["backend"]["plda"] is not None
    # The fbank.conf written beside it reads back to the same options.
    assert read_kaldi_conf(out / "fbank.conf", FBANK_SPEC) == content["frontend"]["fbank"]
    card = (out / "README.md").read_text()
    assert "# pl_dino_r1:" in card
    assert "system=pl_dino_r1_cosine EER=20%" in card and "system=pl_dino_r1_plda_crosscall" in card
    assert "pl_dino_r11" not in card and "system=dino_tiny_cosine" not in card
    assert "data/train_pl_dino_r1" in card and "6 steps (2 epochs)" in card and "objective: classifier" in card
    assert os.path.isfile(out / "log" / "export_model.log")
    # A bundle is a backbone file too: the recipe's extraction reads it as it reads final.pt.
    bundled, original = load_backbone(out / "model.pt"), load_backbone(experiment["exp"] / "final.pt")
    for key, value in original.state_dict().items():
        torch.testing.assert_close(bundled.state_dict()[key], value, rtol=0, atol=0)


def test_export_step_rejects_bad_options(experiment, tmp_path):
    proc = run_script(["steps/export_model.sh", "--use-vad", "maybe", str(experiment["exp"]), str(tmp_path)],
                      check=False)
    assert proc.returncode == 1 and "--use-vad must be auto, true or false" in proc.stderr
    proc = run_script(["steps/export_model.sh", str(tmp_path / "none"), str(tmp_path / "out")], check=False)
    assert proc.returncode == 1 and "no such file" in proc.stderr and "final.pt" in proc.stderr


def test_embed_equals_recipe_chain(experiment, tmp_path):
    """compute_fbank (uncompressed) -> compute_vad -> extract_embeddings --use-vad gives model.embed's vectors."""
    data = tmp_path / "data"
    shutil.copytree(experiment["data"], data)
    compute_fbank_bin.main(["--config", FBANK_CONF, "--compress", "false", str(data), str(data / "feats.ark"),
                            str(data / "feats.scp")])
    compute_vad_bin.main(["--config", VAD_CONF, "--fbank-config", FBANK_CONF, str(data), str(data / "vad.ark"),
                          str(data / "vad.scp")])
    with pytest.raises(SystemExit) as done:
        extract_bin.main(["extract", "--chunk-size", str(CHUNK_SIZE), "--min-chunk-size", str(MIN_CHUNK_SIZE),
                          "--use-vad", "true", "--device", "cpu", str(experiment["bundle"]), str(data),
                          str(tmp_path / "xv")])
    assert done.value.code == 0
    chain = dict(kaldiio.load_scp(str(tmp_path / "xv" / "xvector.1.scp")))
    model = pyspk.load(experiment["bundle"], device="cpu")
    utts = sorted(experiment["wavs"])
    assert sorted(chain) == utts
    batched = model.embed([experiment["wavs"][utt] for utt in utts])
    for utt, embedding in zip(utts, batched, strict=True):
        assert np.abs(embedding - chain[utt]).max() <= 1e-5
        assert np.abs(model.embed(experiment["wavs"][utt]) - chain[utt]).max() <= 1e-5
    # Samples in memory (float, as soundfile reads them) give the same embedding as the file.
    samples, rate = sf.read(experiment["wavs"][utts[0]], dtype="float32")
    assert np.abs(model.embed(samples, sample_rate=rate) - chain[utts[0]]).max() <= 1e-5


def test_audio_shorter_than_the_shortest_chunk_is_padded_with_a_message(experiment, tmp_path, caplog):
    model = pyspk.load(experiment["bundle"], device="cpu")
    samples, rate = sf.read(experiment["wavs"][sorted(experiment["wavs"])[0]], dtype="float32")
    short = samples[: int(0.2 * rate)]  # 20 frames at most, under the bundle's 30-frame shortest chunk
    with caplog.at_level("WARNING", logger="pyspk"):
        embedding = model.embed(short, sample_rate=rate)
    assert embedding.shape == (32,) and np.isfinite(embedding).all()
    message = caplog.text
    assert "shorter than the model's shortest chunk of 30 frames (0.30 s): padded by repeating it" in message
    assert "input 0:" in message and "voiced frames" in message


def test_bundle_round_trip_and_versions(experiment, tmp_path):
    model = pyspk.load(experiment["bundle"], device="cpu")
    assert (model.sample_rate, model.embed_dim, model.use_vad) == (16000, 32, True)
    assert model.device.type == "cpu" and next(model.backbone.parameters()).device.type == "cpu"
    content = torch.load(experiment["bundle"], weights_only=True)
    content["format_version"] = FORMAT_VERSION + 1
    torch.save(content, tmp_path / "future.pt")
    with pytest.raises(BundleError, match="format version 2"):
        read_model_file(tmp_path / "future.pt")
    # A trainer's final.pt still loads: as a backbone file, and with the fbank conf it was trained with.
    final = experiment["exp"] / "final.pt"
    assert read_model_file(final)["default_backbone"] == "model"
    with pytest.raises(BundleError, match="without its front-end"):
        pyspk.load(final)
    plain = pyspk.load(final, device="cpu", fbank_conf=FBANK_CONF)
    wav = experiment["wavs"][sorted(experiment["wavs"])[0]]
    assert plain.embed(wav).shape == (32,)


def test_import_pyspk_does_not_load_torch():
    proc = subprocess.run([sys.executable, "-c", "import sys, pyspk; print('torch' in sys.modules)"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_a_script_beside_a_clone_named_pyspk_imports_the_package(tmp_path):
    # The script's folder comes first on sys.path; the clone there has no __init__.py (tools/install.sh's .pth).
    os.symlink(ROOT, tmp_path / "pyspk")
    (tmp_path / "script.py").write_text("import pyspk\nprint(pyspk.load.__module__)\n")
    proc = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "pyspk"


def write_bad_inputs(directory):
    """Files each of which must fail with a one-line error: (name, words the error holds)."""
    (directory / "text.wav").write_text("not audio\n")
    (directory / "empty.wav").write_bytes(b"")
    sf.write(directory / "short.wav", np.zeros(100, dtype=np.float32), 16000)  # under one 400-sample frame
    return [("text.wav", "cannot read audio"), ("empty.wav", "empty file"), ("short.wav", "too short"),
            ("missing.wav", "no such file")]


def test_bad_inputs_fail_with_one_line(experiment, tmp_path):
    bundle = experiment["bundle"]
    for name, words in write_bad_inputs(tmp_path):
        one_line_error(run_cli("embed", bundle, tmp_path / name), name, words)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(bundle.read_bytes()[:5000])
    one_line_error(run_cli("embed", truncated, experiment["wavs"][sorted(experiment["wavs"])[0]]),
                   "truncated.pt", "cannot read the model file")
    content = torch.load(bundle, weights_only=True)
    content["format_version"] = 99
    torch.save(content, tmp_path / "future.pt")
    one_line_error(run_cli("score", tmp_path / "future.pt", tmp_path / "text.wav", tmp_path / "text.wav"),
                   "future.pt", "format version 99")


def test_wav_scp_reports_failures_and_embeds_the_rest(experiment, tmp_path):
    utts = sorted(experiment["wavs"])
    entries = {utt: experiment["wavs"][utt] for utt in utts}
    if shutil.which("sox"):
        entries[utts[0]] = f"sox {experiment['wavs'][utts[0]]} -t wav - |"  # a Kaldi pipe entry
    for name, _ in write_bad_inputs(tmp_path):
        entries[f"bad-{name}"] = str(tmp_path / name)
    (tmp_path / "wav.scp").write_text("".join(f"{key} {value}\n" for key, value in sorted(entries.items())))
    proc = run_cli("embed", "--wav-scp", tmp_path / "wav.scp", "--out", tmp_path / "emb.ark", experiment["bundle"],
                   check_rc=1)
    assert f"Done {len(utts)}, failed 4" in proc.stderr.splitlines()[-1]
    assert "bad-text.wav: cannot read audio" in proc.stderr
    embedded = dict(kaldiio.load_scp(str(tmp_path / "emb.scp")))
    assert sorted(embedded) == utts
    model = pyspk.load(experiment["bundle"], device="cpu")
    assert np.abs(embedded[utts[0]] - model.embed(experiment["wavs"][utts[0]])).max() <= 1e-5
    # numpy output: rows in input order, keys beside them.
    run_cli("embed", "--out", tmp_path / "emb.npy", experiment["bundle"], *[entries[u] for u in utts[1:]], check_rc=0)
    matrix = np.load(tmp_path / "emb.npy")
    assert matrix.shape == (len(utts) - 1, 32)
    assert (tmp_path / "emb.keys").read_text().split() == [entries[u] for u in utts[1:]]
    np.testing.assert_allclose(matrix, np.stack([embedded[u] for u in utts[1:]]), atol=1e-5)


def test_resampling_is_said_or_refused(experiment, tmp_path):
    samples, rate = sf.read(experiment["wavs"][sorted(experiment["wavs"])[0]], dtype="float32")
    sf.write(tmp_path / "a8k.wav", samples[::2], rate // 2, subtype="PCM_16")
    proc = run_cli("embed", experiment["bundle"], tmp_path / "a8k.wav", check_rc=0)
    assert proc.stderr.strip().splitlines() == [
        f"pyspk embed: resampling 8000 Hz audio to the model's 16000 Hz (first: {tmp_path / 'a8k.wav'}); "
        "--no-resample (resample_audio=False) makes it an error"]
    assert proc.stdout.startswith(f"{tmp_path / 'a8k.wav'}  [ ")
    one_line_error(run_cli("embed", "--no-resample", experiment["bundle"], tmp_path / "a8k.wav"),
                   "a8k.wav", "sample rate 8000 Hz, the model takes 16000 Hz")


def test_score_self_other_and_trials(experiment, tmp_path):
    bundle, wavs = experiment["bundle"], experiment["wavs"]
    utts = sorted(wavs)
    model = pyspk.load(bundle, device="cpu")
    same = float(run_cli("score", "--backend", "cosine", bundle, wavs[utts[0]], wavs[utts[0]], check_rc=0).stdout)
    other = float(run_cli("score", "--backend", "cosine", bundle, wavs[utts[0]], wavs[utts[-1]], check_rc=0).stdout)
    assert same == pytest.approx(1.0, abs=1e-5) and other < same
    assert other == pytest.approx(model.score(wavs[utts[0]], wavs[utts[-1]], backend="cosine"), abs=1e-5)
    plda_same = float(run_cli("score", bundle, wavs[utts[0]], wavs[utts[0]], check_rc=0).stdout)  # auto: PLDA
    assert plda_same == pytest.approx(model.score(wavs[utts[0]], wavs[utts[0]], backend="plda"), abs=1e-4)
    assert plda_same > model.score(wavs[utts[0]], wavs[utts[-1]], backend="plda")
    # A trials list straight from audio; a trial of an utterance that is not in wav.scp is skipped and counted.
    trials = [(utts[0], utts[1], "target"), (utts[0], utts[-1], "nontarget"), (utts[1], "absent", "nontarget")]
    (tmp_path / "trials").write_text("".join(" ".join(t) + "\n" for t in trials))
    proc = run_cli("score", "--backend", "cosine", "--wav-scp", os.path.join(experiment["data"], "wav.scp"),
                   "--trials", tmp_path / "trials", "--out", tmp_path / "scores", bundle, check_rc=1)
    assert "scored 2 of 3 trials" in proc.stderr
    lines = (tmp_path / "scores").read_text().splitlines()
    assert [line.split()[:2] for line in lines] == [list(t[:2]) for t in trials[:2]]
    for line in lines:
        enrol, test, score = line.split()
        assert float(score) == pytest.approx(model.score(wavs[enrol], wavs[test], backend="cosine"), abs=1e-5)


def real_features(wavs, lengths):
    """Fbank of real (test-fixture) speech, cut to ``lengths`` frames."""
    config = FbankConfig(read_kaldi_conf(FBANK_CONF, FBANK_SPEC))
    feats = []
    for wav, length in zip(wavs, lengths, strict=True):
        samples, rate = read_audio(wav)
        feats.append(torch.from_numpy(compute_fbank(prepare_waveform(samples, rate, config), config)[None, :length]))
    return feats


def require_onnxruntime():
    """onnx and onnxruntime (the export extra) or skip; under CI (CI=true, tools/install.sh ran) fail instead."""
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
        return
    if os.environ.get("CI") == "true":
        pytest.fail("onnx/onnxruntime missing: tools/install.sh installs the export extra")
    pytest.skip("onnx/onnxruntime not installed (pip install -e '.[export]')")


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_torchscript_and_onnx_match_the_backbone(experiment, tmp_path, kind):
    backbone = make_backbone(kind, seed=3)
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(3, 150, 80, generator=generator), torch.randn(1, 333, 80, generator=generator)]
    inputs += real_features(sorted(experiment["wavs"].values())[:2], (110, 240))
    with torch.inference_mode():
        expected = [backbone(feats).numpy() for feats in inputs]
    export_torchscript(backbone, tmp_path / "model.ts")
    scripted = torch.jit.load(tmp_path / "model.ts")
    with torch.inference_mode():
        for feats, want in zip(inputs, expected, strict=True):
            assert np.abs(scripted(feats).numpy() - want).max() <= 1e-4
    require_onnxruntime()
    export_onnx(backbone, tmp_path / "model.onnx")
    session = onnx_session(str(tmp_path / "model.onnx"))
    for feats, want in zip(inputs, expected, strict=True):
        assert np.abs(session.run(None, {"feats": feats.numpy()})[0] - want).max() <= 1e-4


def test_export_command(experiment, tmp_path):
    require_onnxruntime()
    proc = run_cli("export", "--torchscript", tmp_path / "m.ts", "--onnx", tmp_path / "m.onnx", experiment["bundle"],
                   check_rc=0)
    assert "wrote" in proc.stdout and os.path.isfile(tmp_path / "m.ts") and os.path.isfile(tmp_path / "m.onnx")
    one_line_error(run_cli("export", experiment["bundle"]), "--torchscript")


def test_bench_runs(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "embed_export.py"), "--models", "resnet_thin",
                           "--seconds", "3", "--repeats", "1", "--threads", "1"], cwd=tmp_path, capture_output=True,
                          text=True, check=False, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("resnet_thin  cpu"))
    assert row.count("x") >= 3
