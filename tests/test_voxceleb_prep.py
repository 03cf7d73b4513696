"""egs/voxceleb/v1 data preparation on a tiny fake corpus in the exact VoxCeleb layout."""

import os
import shutil

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT, run_script

from pyspk.data.datadir import DataDir, read_trials

RECIPE = os.path.join(ROOT, "egs", "voxceleb", "v1")
# speaker -> (gender, set); id1027x are test speakers as in VoxCeleb1.
VOX1_SPEAKERS = {"id10001": ("m", "dev"), "id10002": ("f", "dev"), "id10003": ("m", "dev"),
                 "id10270": ("m", "test"), "id10271": ("f", "test")}
VIDEOS = ["x6uYqmx31kE", "8jEAjG6SegY", "a-b_c9"]  # YouTube ids may hold '-' and '_'
VOX2_SPEAKERS = {"id00012": "m", "id00015": "f", "id00016": "m"}


def make_vox1(root, with_meta=True):
    """VoxCeleb1 as unpacked from vox1_dev_wav.zip + vox1_test_wav.zip, plus meta and cleaned lists."""
    rng = np.random.default_rng(0)
    rels = []
    for spk in VOX1_SPEAKERS:
        for video in VIDEOS[:2]:
            for seg in ("00001", "00002"):
                path = os.path.join(root, "wav", spk, video, seg + ".wav")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                sf.write(path, 0.1 * rng.standard_normal(1600), 16000, subtype="PCM_16")
                rels.append(f"{spk}/{video}/{seg}.wav")
    if with_meta:
        with open(os.path.join(root, "vox1_meta.csv"), "w") as f:
            f.write("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n")
            for i, (spk, (gender, part)) in enumerate(VOX1_SPEAKERS.items()):
                f.write(f"{spk}\tCeleb_{i}\t{gender}\tUSA\t{part}\n")
    test = [r for r in rels if VOX1_SPEAKERS[r.split("/")[0]][1] == "test"]
    lists = {
        "veri_test2.txt": [(1, test[0], test[1]), (0, test[0], test[4]), (1, test[5], test[6]), (0, test[7], test[2])],
        "list_test_all2.txt": [(1, rels[0], rels[3]), (0, rels[0], rels[8]), (0, test[1], rels[2])],
        "list_test_hard2.txt": [(0, rels[4], rels[9]), (1, rels[10], rels[11])],
    }
    for name, lines in lists.items():
        with open(os.path.join(root, name), "w") as f:
            f.writelines(f"{label} {a} {b}\n" for label, a, b in lines)
    return rels, lists


def make_vox2(root):
    """VoxCeleb2 dev as unpacked from vox2_dev_aac.zip (m4a files; content never decoded here)."""
    for spk in VOX2_SPEAKERS:
        for video in VIDEOS:
            for seg in ("00001", "00002", "00003"):
                path = os.path.join(root, "dev", "aac", spk, video, seg + ".m4a")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(b"\x00\x00\x00\x18ftypM4A ")
    with open(os.path.join(root, "vox2_meta.csv"), "w") as f:
        f.write("VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \n")
        f.writelines(f"{spk} ,n00{i} ,{g} ,dev \n" for i, (spk, g) in enumerate(VOX2_SPEAKERS.items()))


def utt_of(rel):
    return rel[:-len(".wav")].replace("/", "-")


def run_local(args, check=True):
    return run_script(["python", *args], cwd=RECIPE, check=check)


def assert_sorted_consistent(data_dir):
    for name in ("wav.scp", "utt2spk", "spk2utt"):
        with open(os.path.join(data_dir, name), "rb") as f:
            keys = [line.split(b" ", 1)[0] for line in f]
        assert keys == sorted(keys) and len(set(keys)) == len(keys), name
    data = DataDir(data_dir)
    assert all(utt.startswith(spk + "-") for utt, spk in data.utt2spk().items())
    assert set(data.wav_scp()) == set(data.utt2spk())


def test_voxceleb1_dirs_and_trials(tmp_path):
    root = str(tmp_path / "VoxCeleb1")
    _rels, lists = make_vox1(root)
    data = str(tmp_path / "data")
    proc = run_local(["local/make_voxceleb1.py", root, data])
    assert "VoxCeleb1: 20 utterances, 5 speakers (2 test)" in proc.stderr

    all_dir, test_dir, dev_dir = (os.path.join(data, d) for d in ("voxceleb1", "voxceleb1_test", "voxceleb1_dev"))
    for d in (all_dir, test_dir, dev_dir):
        assert_sorted_consistent(d)
    wav_scp = DataDir(all_dir).wav_scp()
    assert len(wav_scp) == 20
    assert wav_scp["id10270-x6uYqmx31kE-00001"] == os.path.join(root, "wav", "id10270", "x6uYqmx31kE", "00001.wav")
    assert set(DataDir(test_dir).spk2utt()) == {"id10270", "id10271"}
    assert set(DataDir(dev_dir).spk2utt()) == {"id10001", "id10002", "id10003"}
    assert len(DataDir(test_dir).utt2spk()) == 8 and len(DataDir(dev_dir).utt2spk()) == 12
    with open(os.path.join(all_dir, "spk2gender")) as f:
        assert dict(line.split() for line in f) == {s: g for s, (g, _) in VOX1_SPEAKERS.items()}

    # Each official line maps, in order, to "<enroll-utt> <test-utt> target|nontarget".
    expected = {name: [(utt_of(a), utt_of(b), label == 1) for label, a, b in lines] for name, lines in lists.items()}
    assert read_trials(os.path.join(test_dir, "trials")) == expected["veri_test2.txt"]
    assert read_trials(os.path.join(all_dir, "trials_o")) == expected["veri_test2.txt"]
    assert read_trials(os.path.join(all_dir, "trials_e")) == expected["list_test_all2.txt"]
    assert read_trials(os.path.join(all_dir, "trials_h")) == expected["list_test_hard2.txt"]
    with open(os.path.join(test_dir, "trials")) as f:
        assert f.readline() == "id10270-x6uYqmx31kE-00001 id10270-x6uYqmx31kE-00002 target\n"
    for d in (all_dir, test_dir, dev_dir):
        run_script(["utils/validate_data_dir.sh", "--no-text", "--no-feats", d])


def test_voxceleb1_without_meta_takes_test_speakers_from_the_o_list(tmp_path):
    root = str(tmp_path / "VoxCeleb1")
    make_vox1(root, with_meta=False)
    data = str(tmp_path / "data")
    run_local(["local/make_voxceleb1.py", "--lists", "o", root, data])
    assert set(DataDir(os.path.join(data, "voxceleb1_test")).spk2utt()) == {"id10270", "id10271"}
    assert not os.path.exists(os.path.join(data, "voxceleb1", "trials_e"))
    assert not os.path.exists(os.path.join(data, "voxceleb1", "spk2gender"))


def test_voxceleb1_errors_name_the_problem(tmp_path):
    root = str(tmp_path / "VoxCeleb1")
    rels, _ = make_vox1(root)
    data = str(tmp_path / "data")
    os.remove(os.path.join(root, "wav", *rels[-1].split("/")))  # referenced by veri_test2.txt line 4
    proc = run_local(["local/make_voxceleb1.py", root, data], check=False)
    assert proc.returncode == 1
    assert f"veri_test2.txt:4: '{rels[-1]}' is not in the corpus" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(os.path.join(data, "voxceleb1"))  # nothing written before the check

    os.remove(os.path.join(root, "list_test_hard2.txt"))
    proc = run_local(["local/make_voxceleb1.py", root, data], check=False)
    assert proc.returncode == 1 and "list_test_hard2.txt: no such trial list" in proc.stderr
    proc = run_local(["local/make_voxceleb1.py", str(tmp_path / "missing"), data], check=False)
    assert proc.returncode == 1 and "missing/wav: no such directory" in proc.stderr


def test_voxceleb2_m4a_pipes(tmp_path):
    root = str(tmp_path / "VoxCeleb2")
    make_vox2(root)
    out = str(tmp_path / "data" / "voxceleb2_dev")
    proc = run_local(["local/make_voxceleb2.py", root, "dev", out])
    assert "VoxCeleb2 dev: 27 utterances, 3 speakers" in proc.stderr
    assert_sorted_consistent(out)
    with open(os.path.join(out, "wav.scp")) as f:
        lines = f.read().splitlines()
    assert len(lines) == 27

    def pipe(utt, spk, video):
        path = os.path.join(root, "dev", "aac", spk, video, "00001.m4a")
        return f"{utt} ffmpeg -v 8 -i {path} -f wav -acodec pcm_s16le - |"

    assert lines[0] == pipe("id00012-8jEAjG6SegY-00001", "id00012", "8jEAjG6SegY")  # C order: digits first
    assert pipe("id00016-a-b_c9-00001", "id00016", "a-b_c9") in lines
    with open(os.path.join(out, "spk2gender")) as f:
        assert dict(line.split() for line in f) == VOX2_SPEAKERS
    run_script(["utils/validate_data_dir.sh", "--no-text", "--no-feats", out])

    # A copy converted to wav is read directly.
    wav_root = str(tmp_path / "VoxCeleb2wav")
    src = os.path.join(root, "dev", "aac", "id00015", "x6uYqmx31kE")
    dst = os.path.join(wav_root, "dev", "wav", "id00015", "x6uYqmx31kE")
    os.makedirs(dst)
    for name in os.listdir(src):
        shutil.copy(os.path.join(src, name), os.path.join(dst, name.replace(".m4a", ".wav")))
    run_local(["local/make_voxceleb2.py", wav_root, "dev", str(tmp_path / "wavdir")])
    assert DataDir(str(tmp_path / "wavdir")).wav_scp()["id00015-x6uYqmx31kE-00002"] == os.path.join(dst, "00002.wav")
    proc = run_local(["local/make_voxceleb2.py", root, "test", str(tmp_path / "x")], check=False)
    assert proc.returncode == 1 and "neither test/aac nor test/wav exists" in proc.stderr


def make_recipe_copy(tmp_path):
    """The recipe under a scratch root, so that run.sh writes its data/ there, not into the repository."""
    root = tmp_path / "pyspk"
    (root / "egs" / "voxceleb").mkdir(parents=True)
    for name in ("path.sh", "utils", "steps", "tools", "conf"):
        os.symlink(os.path.join(ROOT, name), root / name)
    recipe = root / "egs" / "voxceleb" / "v1"
    shutil.copytree(RECIPE, recipe, symlinks=True, ignore=shutil.ignore_patterns("data", "exp"))
    return str(recipe)


def test_run_sh_stage_1_prepares_everything_and_fails_loudly_without_corpus(tmp_path):
    recipe = make_recipe_copy(tmp_path)
    vox1, vox2 = str(tmp_path / "VoxCeleb1"), str(tmp_path / "VoxCeleb2")
    make_vox1(vox1)
    make_vox2(vox2)
    proc = run_script(["./run.sh", "--stop-stage", "1", "--vox1-root", vox1, "--vox2-root", vox2], cwd=recipe)
    assert "download skipped" in proc.stdout
    for d in ("voxceleb2_dev", "voxceleb1", "voxceleb1_test", "voxceleb1_dev"):
        assert os.path.isfile(os.path.join(recipe, "data", d, "spk2utt"))
    assert os.path.isfile(os.path.join(recipe, "data", "voxceleb1", "trials_h"))

    proc = run_script(["./run.sh", "--stage", "1", "--stop-stage", "1", "--vox1-root", vox1,
                       "--vox2-root", str(tmp_path / "nowhere")], cwd=recipe, check=False)
    assert proc.returncode == 1
    assert "VoxCeleb2 dev" in proc.stdout and "is missing or empty" in proc.stdout


@pytest.mark.parametrize("script", ["local/download_voxceleb.sh", "local/download_musan_rirs.sh", "run.sh"])
def test_scripts_show_usage(script):
    proc = run_script([f"./{script}", "--help"], cwd=RECIPE)
    assert "e.g.:" in proc.stdout + proc.stderr
