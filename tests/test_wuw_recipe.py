"""egs/wuw/v1, the 8 kHz telephone recipe, on WUW Corpus II of ../shared/data (all of it, or a few calls)."""

import csv
import os
import shutil
from collections import defaultdict

import numpy as np
import pytest
from conftest import ROOT, link_recipe, run_script, shared_corpus

from pyspk.data.datadir import DataDir, read_kv, read_trials
from pyspk.features.audio import read_audio

RECIPE = os.path.join(ROOT, "egs", "wuw", "v1")
CORPUS = shared_corpus("wuw_corpus_ii", module_level=True)
# A handful of calls: three named callers with two calls each (one is held out), one named caller
# with one call held out and one training, two unnamed calls; each in a name group of its own.
FEW_SPEAKERS = ("wuw001", "wuw020", "wuw026", "wuw002", "wuw003")
FEW_UNNAMED = 2


def corpus_rows():
    with open(os.path.join(CORPUS, "utts.tsv"), newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        return header, list(reader)


def write_corpus(path, header, rows):
    """A corpus dir with these utts.tsv rows, its calls/ linked to the shared one."""
    os.makedirs(path)
    os.symlink(os.path.join(CORPUS, "calls"), os.path.join(path, "calls"))
    with open(os.path.join(path, "utts.tsv"), "w") as f:
        f.write("\n".join("\t".join(row) for row in [header, *rows]) + "\n")
    return str(path)


def few_calls_corpus(path):
    header, rows = corpus_rows()
    col = {name: i for i, name in enumerate(header)}
    unnamed = sorted({r[col["session"]] for r in rows if r[col["named"]] == "0"})[:FEW_UNNAMED]
    keep = [r for r in rows if r[col["speaker"]] in FEW_SPEAKERS or r[col["session"]] in unnamed]
    return write_corpus(path, header, keep)


def utt_info(corpus):
    """``{utt id of the recipe: (speaker, name_group, named, call)}`` from the corpus table."""
    header, rows = corpus_rows()
    col = {name: i for i, name in enumerate(header)}
    info = {}
    for r in rows:
        suffix = "kw" if r[col["utt_type"]] == "keyword" else r[col["utt"]].rsplit("_", 1)[1]
        info[f"{r[col['speaker']]}-{r[col['session']]}-{suffix}"] = (
            r[col["speaker"]], r[col["name_group"]], r[col["named"]] == "1", r[col["session"]])
    return info


def test_data_prep_holds_out_named_callers_and_keeps_targets_cross_call(tmp_path):
    data = tmp_path / "data"
    proc = run_script([os.path.join(RECIPE, "local", "data.sh"), CORPUS, str(data)], cwd=str(tmp_path))
    assert "train 862 utterances of 93 speakers (34 named), test 468 of 38" in proc.stderr
    info = utt_info(CORPUS)
    train, named, test = (DataDir(str(data / part)) for part in ("train", "train_named", "test"))
    train_utts, test_utts = train.utt2spk(), test.utt2spk()
    # Every utterance is used once; held-out speakers are named and share no name group with training.
    assert set(train_utts) | set(test_utts) == set(info) and not set(train_utts) & set(test_utts)
    assert all(info[u][2] for u in test_utts)
    assert not {info[u][1] for u in test_utts} & {info[u][1] for u in train_utts}
    assert any(not info[u][2] for u in train_utts)  # unnamed calls train
    assert set(named.utt2spk()) == {u for u in train_utts if info[u][2]}
    # Each utterance's call and its phone type (the channel diagnostics'); one call is one phone.
    header, rows = corpus_rows()
    col = {name: i for i, name in enumerate(header)}
    phone_of_call = {r[col["session"]]: r[col["phonetype"]] for r in rows}
    for part in (train, test):
        phones = read_kv(os.path.join(part.path, "utt2phonetype"))
        assert phones == {u: phone_of_call[info[u][3]] for u in part.utt2spk()}
    calls = defaultdict(set)
    for u in test_utts:
        calls[info[u][0]].add(info[u][3])
    assert sum(len(c) > 1 for c in calls.values()) >= 13
    # A call's five keywords make one utterance; the pipe decodes mu-law at 8 kHz.
    kw = next(u for u in test_utts if u.endswith("-kw"))
    samples, rate = read_audio(test.wav_scp()[kw])
    assert rate == 8000 and test.wav_scp()[kw].count(" -t ul -r 8000 -c 1 ") == 5
    one = read_audio(test.wav_scp()[kw.replace("-kw", "-006")])[0]
    assert len(one) > 8000 and np.abs(samples).max() > 0
    for name, cross_call in (("trials_crosscall", True), ("trials", False)):
        trials = read_trials(str(data / "test" / name))
        targets = [(e, t) for e, t, x in trials if x]
        assert all(info[e][0] == info[t][0] for e, t in targets)
        assert all(info[e][1] != info[t][1] for e, t, x in trials if not x)  # non-targets across name groups
        assert all(info[e][3] != info[t][3] for e, t in targets) == cross_call
        per_speaker = np.unique([info[e][0] for e, _ in targets], return_counts=True)[1]
        assert per_speaker.max() <= 0.2 * len(targets) + 1
    # Same options: nothing rewritten.
    mtime = os.path.getmtime(data / "test" / "trials")
    proc = run_script([os.path.join(RECIPE, "local", "data.sh"), CORPUS, str(data)], cwd=str(tmp_path))
    assert "nothing to do" in proc.stdout and os.path.getmtime(data / "test" / "trials") == mtime


@pytest.mark.parametrize("fault,message", [
    ("columns", "expected 13 tab-separated columns, got 12"),
    ("phonetype", "unknown phonetype 'satphone'"),
    ("audio", "no such audio file"),
])
def test_bad_corpus_rows_name_the_file_and_line(tmp_path, fault, message):
    header, rows = corpus_rows()
    col = {name: i for i, name in enumerate(header)}
    rows = [list(r) for r in rows[:30]]
    if fault == "columns":
        rows[6] = rows[6][:-1]
    elif fault == "phonetype":
        rows[6][col["phonetype"]] = "satphone"
    else:
        rows[6][col["path"]] = "calls/99999/missing.ulaw"
    corpus = write_corpus(tmp_path / "corpus", header, rows)
    proc = run_script([os.path.join(RECIPE, "local", "data.sh"), corpus, str(tmp_path / "data")],
                      cwd=str(tmp_path), check=False)
    assert proc.returncode == 1 and "utts.tsv:8: " in proc.stderr and message in proc.stderr
    assert not os.path.exists(tmp_path / "data" / "train")


def test_extra_training_data_is_resampled_to_8k_in_the_pipe(tmp_path):
    """--extra-train with --extra-channel resample: another corpus's data dir joins the training pool at 8 kHz,
    its ids prefixed; test and labels stay."""
    root = link_recipe(tmp_path, RECIPE)
    extra = tmp_path / "arabic"
    arabic = shared_corpus("arabic_speech_commands")
    run_script([os.path.join(ROOT, "egs", "arabic_commands", "v1", "local", "data.sh"), "--speakers", "4",
                "--test-speakers", "2", "--rounds", "2", arabic, str(extra)], cwd=str(tmp_path))
    corpus = few_calls_corpus(tmp_path / "corpus")
    proc = run_script(["./run.sh", "--stage", "1", "--stop-stage", "1", "--corpus", corpus, "--test-multicall", "1",
                       "--test-singlecall", "1", "--extra-train", str(extra / "train"), "--extra-channel", "resample"],
                      cwd=root)
    assert "Done (stages 1..1)" in proc.stdout
    pool = DataDir(os.path.join(root, "data", "train_extra"))
    wuw = DataDir(os.path.join(root, "data", "train")).utt2spk()
    arabic = DataDir(str(extra / "train")).utt2spk()
    assert set(pool.utt2spk()) == set(wuw) | {f"extra1-{u}" for u in arabic}
    entry = pool.wav_scp()[f"extra1-{next(iter(arabic))}"]
    assert entry.endswith("sox -t wav - -t wav -r 8000 - |")
    samples, rate = read_audio(entry)
    assert rate == 8000 and abs(len(samples) / rate - 4.0) < 0.1


def test_pooled_corpora_through_the_telephone_channel(tmp_path):
    """--extra-corpora: every speaker of the other corpora joins the pool through the telephone channel (the
    default --extra-channel), each corpus's ids prefixed with its name; their trial lists stay out."""
    root = link_recipe(tmp_path, RECIPE)
    corpus = few_calls_corpus(tmp_path / "corpus")
    shared_corpus("arabic_speech_commands")
    shared_corpus("speechocean762")
    proc = run_script(["./run.sh", "--stage", "1", "--stop-stage", "1", "--corpus", corpus, "--test-multicall", "1",
                       "--test-singlecall", "1", "--extra-corpora", "arabic_commands speechocean762",
                       "--extra-write-audio", "false"], cwd=root)
    assert "Done (stages 1..1)" in proc.stdout
    data = os.path.join(root, "data")
    pool = DataDir(os.path.join(data, "train_extra"))
    utt2spk, spk2utt = pool.utt2spk(), pool.spk2utt()
    wuw = DataDir(os.path.join(data, "train")).utt2spk()
    parts = {name: DataDir(os.path.join(data, f"{name}_all")).utt2spk()
             for name in ("arabic_commands", "speechocean762")}
    assert len({spk for spk in parts["arabic_commands"].values()}) == 20
    assert len({spk for spk in parts["speechocean762"].values()}) == 200
    expected = dict(wuw)
    for name, part in parts.items():
        expected.update({f"{name}-{u}": f"{name}-{s}" for u, s in part.items()})
    assert utt2spk == expected  # every utterance once, each corpus under its own prefix
    assert {u for us in spk2utt.values() for u in us} == set(utt2spk)
    assert all(utt2spk[u] == spk for spk, us in spk2utt.items() for u in us)
    assert len(spk2utt) == len(set(wuw.values())) + 220
    run_script(["utils/validate_data_dir.sh", "--no-feats", "--no-text", os.path.join(data, "train_extra")])
    assert not any(os.path.exists(os.path.join(data, "train_extra", f)) for f in ("trials", "trials_hard"))
    scp = pool.wav_scp()
    for name in parts:
        utt = next(u for u in scp if u.startswith(f"{name}-"))
        assert f"/python -m pyspk.bin.telephone_channel --seed 777 --codecs mulaw,alaw,gsm,amr-nb --utt-id {utt} " \
            in scp[utt]
        samples, rate = read_audio(scp[utt])
        assert rate == 8000 and len(samples) > 4000
    assert read_audio(scp[next(iter(wuw))])[1] == 8000  # the recipe's own calls unchanged


def test_recipe_runs_stages_1_to_8_on_a_few_calls(tmp_path):
    root = link_recipe(tmp_path, RECIPE)
    corpus = few_calls_corpus(tmp_path / "corpus")
    overrides = "model.feat_dim=64 data.use_vad=true"
    args = ["./run.sh", "--stage", "1", "--stop-stage", "8", "--corpus", corpus, "--test-multicall", "1",
            "--test-singlecall", "1", "--nj", "1", "--ssl", "dino",
            "--ssl-config", os.path.join(ROOT, "conf", "dino_tiny.yaml"), "--ssl-overrides", overrides,
            "--classifier-config", os.path.join(ROOT, "conf", "classifier_tiny.yaml"),
            "--classifier-overrides", overrides, "--rounds", "1", "--num-clusters", "4", "--adapt-set", "test"]
    proc = run_script(args, cwd=root)
    assert "Done (stages 1..8)" in proc.stdout
    with open(os.path.join(root, "exp", "results.txt")) as f:
        systems = {line.split()[0].split("=", 1)[1] for line in f}
    expected = {"fbank_mean_std_cosine", "fbank_mean_std_cosine_cal"}
    for system in ("untrained", "dino_tiny", "pl_dino_r1", "supervised_upper_bound"):  # the exp dirs' names
        expected |= {f"{system}_cosine", f"{system}_cosine_adapt"}
        if system != "untrained":  # calibrated (--calibrate true, the default)
            expected.add(f"{system}_cosine_cal")
        if system in ("pl_dino_r1", "supervised_upper_bound"):
            expected |= {f"{system}_plda", f"{system}_plda_adapt", f"{system}_plda_cal"}
    assert systems == {s + suffix for s in expected for suffix in ("", "_crosscall")}
    # Training saw 8 kHz copies; the upper bound trained on the named callers only.
    combined = DataDir(os.path.join(root, "data", "train_combined"))
    copy = next(u for u in combined.utt2spk() if u.endswith("-music"))
    assert read_audio(os.path.join(root, combined.wav_scp()[copy]))[1] == 8000
    named = DataDir(os.path.join(root, "data", "train_named_combined")).utt2spk()
    assert named and all(not spk.startswith("wuwx") for spk in named.values())
    assert set(named) < set(combined.utt2spk())
    assert os.path.isfile(os.path.join(root, "data", "train_named", "feats.scp"))
    # A round whose training finished (steps/train.sh's .done) but whose scoring did not is scored on
    # a re-run, not taken for finished.
    results = os.path.join(root, "exp", "results.txt")
    with open(results) as f:
        lines = [line for line in f if "pl_dino_r1_" not in line]
    with open(results, "w") as f:
        f.writelines(lines)
    os.remove(os.path.join(root, "exp", "pl_dino_r1", ".scored"))
    shutil.rmtree(os.path.join(root, "exp", "pl_dino_r1", "scores"))
    proc = run_script([*args[:2], "7", "--stop-stage", "7", *args[5:]], cwd=root)
    with open(results) as f:
        assert "pl_dino_r1_plda_crosscall" in f.read()
    assert os.path.isfile(os.path.join(root, "exp", "pl_dino_r1", ".done"))  # training was not redone
    assert "training already finished" in proc.stdout
