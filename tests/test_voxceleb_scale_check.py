"""egs/voxceleb/v1/local/scale_check.sh: its mechanisms at a tiny size (never its timings).

The size options make the stand-in corpus, the stand-in layout passes the recipe's own
stage 1 and validation (with and without features), every measured stage has a table
row, the scratch dir goes at the end, and a stage over the memory bound is stopped.
"""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, run_script

RECIPE = os.path.join(ROOT, "egs", "voxceleb", "v1")
SCRIPT = os.path.join(RECIPE, "local", "scale_check.sh")
HELPER = os.path.join(RECIPE, "local", "scale_check.py")
TINY = ["--vox2-speakers", "6", "--vox2-utts", "120", "--vox1-speakers", "4", "--vox1-utts", "48",
        "--trials-o", "10", "--trials-e", "30", "--trials-h", "20", "--nj", "2"]

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (tools/install.sh)")


def read_table(work):
    with open(os.path.join(work, "scale_check.tsv")) as f:
        header, *rows = [line.rstrip("\n").split("\t") for line in f]
    return header, rows


def test_tiny_sizes_pass_the_recipes_own_validation(tmp_path):
    work = str(tmp_path / "work")
    proc = run_script([SCRIPT, *TINY, "--stop-stage", "3", "--keep-scratch", "true", work])
    assert "Done" in proc.stdout
    header, rows = read_table(work)
    assert header == ["stage", "size", "seconds", "peak_tree_pss_gib", "max_process_rss_gib"]
    stages = [row[0] for row in rows]
    assert stages[0].startswith("stage 1: local/make_voxceleb2.py") and rows[0][1] == "120 + 48 utts, trials 10/30/20"
    for name in ("augment_data_dir merge (the four lists)", "utils/combine_data.sh", "utils/fix_data_dir.sh (combined)",
                 "utils/split_data.sh (combined, 2 jobs)", "utils/validate_data_dir.sh with feats.scp (combined)"):
        assert name in stages, name
    assert all(float(row[2]) >= 0 and float(row[3]) >= 0 for row in rows)
    data = os.path.join(work, "scratch", "pyspk", "egs", "voxceleb", "v1", "data")

    def lines(*path):
        with open(os.path.join(data, *path)) as f:
            return f.read().splitlines()

    wav = lines("voxceleb2_dev", "wav.scp")
    assert len(wav) == 120 and all(" ffmpeg -v 8 -i " in line and line.endswith("|") for line in wav)
    assert len(lines("voxceleb2_dev", "spk2utt")) == 6
    assert len(lines("voxceleb1", "utt2spk")) == 48 and len(lines("voxceleb1", "spk2utt")) == 4
    assert [len(lines("voxceleb1", f"trials_{x}")) for x in "oeh"] == [10, 30, 20]
    combined = lines("voxceleb2_dev_combined", "feats.scp")
    assert len(combined) == 5 * 120 and any(line.split()[0].endswith("-babble") for line in combined)
    assert len({line.split()[1] for line in combined}) <= 200  # entries point into a few stored matrices
    assert os.path.isdir(os.path.join(data, "voxceleb2_dev_combined", "split2"))


def test_the_scratch_dir_and_the_corpus_go_at_the_end(tmp_path):
    work, corpus = str(tmp_path / "work"), tmp_path / "corpus"
    corpus.mkdir()
    run_script([SCRIPT, *TINY, "--stop-stage", "0", "--corpus-dir", str(corpus), work])
    assert os.listdir(work) == ["log"] and os.listdir(corpus) == []  # nothing of the stand-in data is left


def test_usage_and_a_stage_over_the_memory_bound_is_stopped(tmp_path):
    proc = run_script([SCRIPT], check=False)
    assert proc.returncode == 1 and "Usage:" in proc.stderr and "--vox2-utts" in proc.stderr
    table = str(tmp_path / "table.tsv")
    proc = subprocess.run([sys.executable, HELPER, "measure", "--name", "hog", "--table", table,
                           "--max-memory-gib", "0.05", "--poll-seconds", "0.05", "--",
                           sys.executable, "-c", "x = bytearray(200_000_000); import time; time.sleep(30)"],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "over --max-memory-gib 0.05: stopped" in proc.stderr
    assert not os.path.exists(table)
