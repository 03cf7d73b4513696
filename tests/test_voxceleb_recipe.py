"""egs/voxceleb/v1 end to end (stages 1-7 and on) on a tiny tree in the exact VoxCeleb layout.

VoxCeleb1 as wav, VoxCeleb2 dev as m4a made with ffmpeg (decoded again through the
ffmpeg pipes of wav.scp), the official meta-file headers and the three cleaned
trial lists (from test_voxceleb_prep), MUSAN and RIRS_NOISES trees with a few
generated files; tiny configs. Result lines for VoxCeleb1-O, -E and -H appear.
"""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT, make_fake_musan, make_fake_rirs, run_script, synth_voice
from test_voxceleb_prep import VIDEOS, VOX1_SPEAKERS, VOX2_SPEAKERS, make_recipe_copy, make_vox1, make_vox2

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (tools/install.sh)")


def voice_of(spk):
    """Speaker-specific pitch and formants, so that each speaker sounds alike across files."""
    rng = np.random.default_rng(int(spk[2:]))
    return rng.uniform(90, 250), rng.uniform([300, 900, 2000], [900, 2000, 3200])


def give_voices(vox1, vox2):
    """Replace the placeholder audio of make_vox1/make_vox2 by speech-like signals (VoxCeleb2: real m4a)."""
    rng = np.random.default_rng(1)
    for spk in VOX1_SPEAKERS:
        for dirpath, _, names in os.walk(os.path.join(vox1, "wav", spk)):
            for name in names:
                sf.write(os.path.join(dirpath, name), synth_voice(rng, *voice_of(spk), 1.5), 16000, subtype="PCM_16")
    for spk in VOX2_SPEAKERS:
        for video in VIDEOS:
            for dirpath, _, names in os.walk(os.path.join(vox2, "dev", "aac", spk, video)):
                for name in names:
                    wav = os.path.join(dirpath, name[:-len(".m4a")] + ".wav")
                    sf.write(wav, synth_voice(rng, *voice_of(spk), 2.0), 16000, subtype="PCM_16")
                    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", wav, "-c:a", "aac", "-b:a", "64k",
                                    os.path.join(dirpath, name)], check=True)
                    os.remove(wav)


def add_medium_room(rir_dir):
    """The recipe's reverb draws from small and medium rooms: list the small-room RIRs as medium too."""
    small = os.path.join(rir_dir, "simulated_rirs", "smallroom", "rir_list")
    medium = os.path.join(rir_dir, "simulated_rirs", "mediumroom")
    os.makedirs(medium)
    with open(small) as f, open(os.path.join(medium, "rir_list"), "w") as out:
        out.write(f.read().replace("--room-id smallroom", "--room-id mediumroom"))


@pytest.fixture(scope="module")
def voxceleb_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vox")
    recipe = make_recipe_copy(tmp)
    vox1, vox2 = str(tmp / "VoxCeleb1"), str(tmp / "VoxCeleb2")
    make_vox1(vox1)
    make_vox2(vox2)
    give_voices(vox1, vox2)
    rirs = make_fake_rirs(str(tmp))
    add_medium_room(rirs)
    musan = make_fake_musan(str(tmp))
    args = ["./run.sh", "--stage", "1", "--stop-stage", "8", "--vox1-root", vox1, "--vox2-root", vox2,
            "--musan-root", musan, "--rirs-root", rirs, "--nj", "1",
            "--ssl-config", os.path.join(ROOT, "conf", "dino_tiny.yaml"),
            "--classifier-config", os.path.join(ROOT, "conf", "classifier_tiny.yaml"),
            "--rounds", "1", "--num-clusters", "3", "--min-cluster-size", "2", "--plda-lda-dim", "0"]
    proc = run_script(args, cwd=recipe)
    return recipe, args, proc


def results(recipe):
    with open(os.path.join(recipe, "exp", "results.txt")) as f:
        return {line.split()[0].split("=", 1)[1] for line in f}


def test_every_stage_runs_and_scores_o_e_h(voxceleb_run):
    recipe, _, proc = voxceleb_run
    systems = results(recipe)
    for system in ("fbank_mean_std_cosine", "untrained_cosine", "dino_tiny_cosine", "pl_dino_r1_cosine",
                   "pl_dino_r1_plda", "supervised_upper_bound_cosine", "supervised_upper_bound_plda"):
        assert {f"{system}_{t}" for t in "oeh"} <= systems, system
    # The sizes meant for VoxCeleb are capped, with a warning, on a tree this small.
    assert "--num-gpus 8 but 0 GPU(s) found: training with 1 process(es)" in proc.stderr
    assert "--num-clusters 3 is more than a tenth" in proc.stderr
    # The m4a files were decoded through ffmpeg pipes, and every utterance has features.
    with open(os.path.join(recipe, "data", "voxceleb2_dev", "wav.scp")) as f:
        assert all(" ffmpeg " in line and line.rstrip().endswith("|") for line in f)
    with open(os.path.join(recipe, "data", "voxceleb2_dev", "feats.scp")) as f:
        assert len(f.readlines()) == len(VOX2_SPEAKERS) * len(VIDEOS) * 3
    # Training drew on the MUSAN/RIRS copies, and rounds re-extracted their own pseudo-label dir.
    assert os.path.isfile(os.path.join(recipe, "data", "voxceleb2_dev_combined", "feats.scp"))
    assert os.path.isfile(os.path.join(recipe, "exp", "pl_dino_r1", "xvectors_voxceleb2_dev_pl_dino_r1", "xvector.scp"))


def test_rerun_of_finished_stages_does_nothing(voxceleb_run):
    recipe, args, _ = voxceleb_run
    final = os.path.join(recipe, "exp", "pl_dino_r1", "final.pt")
    mtime = os.path.getmtime(final)
    before = Path(recipe, "exp", "results.txt").read_text()
    proc = run_script([*args[:2], "2", *args[3:]], cwd=recipe)
    assert "round 1/1 is finished" in proc.stdout
    assert os.path.getmtime(final) == mtime
    assert Path(recipe, "exp", "results.txt").read_text() == before


def test_online_aug_trains_from_voxceleb2_converted_to_flac(voxceleb_run, tmp_path):
    """--online-aug true: stage 1 converts the m4a to flac once, and training reads the flac dir."""
    _, args, _ = voxceleb_run
    recipe = make_recipe_copy(tmp_path)
    stop = args.index("--stop-stage") + 1
    proc = run_script([*args[:stop], "4", *args[stop + 1:], "--online-aug", "true"], cwd=recipe)
    assert "converting data/voxceleb2_dev (m4a through ffmpeg) to flac" in proc.stdout
    converted = os.path.join(recipe, "data", "voxceleb2_dev_flac")
    with open(os.path.join(converted, "wav.scp")) as f:
        paths = [line.split()[1] for line in f]
    assert len(paths) == len(VOX2_SPEAKERS) * len(VIDEOS) * 3
    assert all(p.endswith(".flac") and sf.info(os.path.join(recipe, p)).format == "FLAC" for p in paths)
    assert "on data/voxceleb2_dev_flac (raw audio, augmented on the device)" in proc.stdout
    assert os.path.isfile(os.path.join(recipe, "exp", "dino_tiny", "final.pt"))

    proc = run_script([*args[:stop], "1", *args[stop + 1:], "--online-aug", "true"], cwd=recipe)
    assert "nothing to do" in proc.stdout
