"""Unreadable features through the real entry points: a truncated ark names its file and utterance, and a
training run ends with Kaldi's "Done N, failed M" in its log (issue 28).

A feats.scp entry pointing into a cut ark used to fail with a bare ``AssertionError:`` (an entry past the
end of the file) or ``cannot reshape array`` (one cut in its middle), naming neither the file nor the utterance.
"""

import os
import re
import sys
from pathlib import Path

import pytest
from conftest import ROOT, no_traceback, run_script

from pyspk.data.arkio import MatrixReadError, load_matrix
from pyspk.train.synthetic import make_feats_data_dir

CLASSIFIER_TINY = os.path.join(ROOT, "conf", "classifier_tiny.yaml")
DINO_TINY = os.path.join(ROOT, "conf", "dino_tiny.yaml")


def truncated_feats(path):
    """A 12-utterance feats dir whose ark is cut: its last entry wholly past the end, the one before cut in its
    middle. Returns (data dir, ark, {utt: rxspecifier} of the two cut utterances)."""
    data = make_feats_data_dir(path, n_spk=4, n_utt=3, min_frames=60, max_frames=100, feat_dim=80)
    entries = [line.split() for line in Path(data, "feats.scp").read_text().splitlines()]
    (cut_utt, cut_spec), (gone_utt, gone_spec) = entries[-2], entries[-1]
    ark = cut_spec.rsplit(":", 1)[0]
    os.truncate(ark, int(cut_spec.rsplit(":", 1)[1]) + 200)  # inside the last-but-one matrix
    return data, ark, {cut_utt: cut_spec, gone_utt: gone_spec}


def test_a_truncated_ark_names_the_file(tmp_path):
    _, ark, cut = truncated_feats(str(tmp_path / "feats"))
    cut_spec, gone_spec = cut.values()
    with pytest.raises(MatrixReadError) as gone:
        load_matrix(gone_spec)
    message = str(gone.value)
    assert f"cannot read '{gone_spec}'" in message and f"{ark} has {os.path.getsize(ark)} bytes" in message
    assert "truncated" in message
    with pytest.raises(MatrixReadError, match="truncated or corrupt"):
        load_matrix(cut_spec)


def test_training_counts_the_utterances_it_could_not_read(tmp_path):
    """steps/train.sh with a classifier config (loader workers capped to the cores, as every config's):
    each unreadable utterance is named with its file, and the log ends with the count."""
    data, ark, cut = truncated_feats(str(tmp_path / "feats"))
    exp = str(tmp_path / "exp")
    overrides = "data.num_workers=8 train.epochs=2 train.threads=1"
    proc = run_script(["steps/train.sh", "--device", "cpu", "--config", CLASSIFIER_TINY, "--overrides", overrides,
                       data, exp])
    log = Path(exp, "log", "train.log").read_text()
    for utt, spec in cut.items():
        assert f"utterance {utt}: cannot read features (cannot read '{spec}'" in log
    assert f"the entry starts at byte {cut[list(cut)[1]].rsplit(':', 1)[1]} but {ark} has" in log
    # 12 items read in each of 2 epochs (batches of 4); the class-balanced sampler draws with replacement,
    # so the cut utterances are passed over a varying number of times.
    done = re.search(r"Done (\d+) utterance reads, failed (\d+): (\d+) utterance\(s\) of (\S+) could not be read", log)
    assert done and (done[1], done[3], done[4]) == ("24", "2", f"{data}/feats.scp") and int(done[2]) >= 2, done
    assert ", ".join(sorted(cut)) + ";" in log[done.end():]
    assert "AssertionError" not in log + proc.stdout + proc.stderr
    cores = len(os.sched_getaffinity(0))
    if cores < 8:  # classifier configs go through the loader-worker cap too
        assert f"data.num_workers 8: {cores} loader worker(s)" in log


def test_training_of_readable_data_says_failed_0(tmp_path):
    data = make_feats_data_dir(str(tmp_path / "feats"), n_spk=4, n_utt=2, min_frames=60, max_frames=100,
                               feat_dim=80)
    exp = str(tmp_path / "exp")
    run_script([sys.executable, "-m", "pyspk.bin.train", "--config", DINO_TINY, "--device", "cpu", data, exp,
                "train.epochs=1", "train.threads=1"])
    assert "Done 8 utterance reads, failed 0" in Path(exp, "log", "train.log").read_text()


def test_extraction_names_the_truncated_file(tmp_path):
    data, ark, cut = truncated_feats(str(tmp_path / "feats"))
    model = str(tmp_path / "model.pt")
    run_script([sys.executable, "-m", "pyspk.bin.init_model", "--config", DINO_TINY, model])
    out = str(tmp_path / "xv")
    proc = run_script(["steps/extract_embeddings.sh", "--nj", "1", "--max-fail-fraction", "0.2", model, data, out])
    no_traceback(proc)
    log = Path(out, "log", "extract.1.log").read_text()
    for utt, spec in cut.items():
        assert f"{utt}: failed: cannot read '{spec}'" in log
    assert f"{ark} has {os.path.getsize(ark)} bytes" in log and "AssertionError" not in log
    assert "Done 10, failed 2" in proc.stdout + Path(out, "log", "merge.log").read_text()
