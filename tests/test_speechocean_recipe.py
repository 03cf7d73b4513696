"""egs/speechocean762/v1, the 16 kHz read-speech recipe, on speechocean762 of ../shared/data (all of it, or a few
speakers), and its scaling study's nested training subsets."""

import csv
import os
from collections import Counter

import pytest
from conftest import ROOT, link_recipe, run_script, shared_corpus

from pyspk.data.datadir import DataDir, read_trials
from pyspk.features.audio import read_audio

RECIPE = os.path.join(ROOT, "egs", "speechocean762", "v1")
CORPUS = shared_corpus("speechocean762", module_level=True)


def corpus_rows():
    with open(os.path.join(CORPUS, "utts.tsv"), newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        return header, list(reader)


def write_corpus(path, header, rows):
    """A corpus dir with these utts.tsv rows, its audio/ linked to the shared one."""
    os.makedirs(path)
    os.symlink(os.path.join(CORPUS, "audio"), os.path.join(path, "audio"))
    with open(os.path.join(path, "utts.tsv"), "w") as f:
        f.write("\n".join("\t".join(row) for row in [header, *rows]) + "\n")
    return str(path)


def utt_info():
    """``{utt id of the recipe: (speaker, group, text)}`` from the corpus table; group is age group and gender."""
    header, rows = corpus_rows()
    col = {name: i for i, name in enumerate(header)}
    return {f"{r[col['speaker']]}-{r[col['utt']]}": (r[col["speaker"]], (r[col["age_group"]], r[col["gender"]]),
                                                    r[col["text"]]) for r in rows}


def few_speakers_corpus(path, per_group, utts_per_speaker):
    """The first ``per_group`` speakers of each age group x gender, ``utts_per_speaker`` utterances each."""
    header, rows = corpus_rows()
    col = {name: i for i, name in enumerate(header)}
    chosen, taken = {}, Counter()
    keep = []
    for r in rows:
        group, spk = (r[col["age_group"]], r[col["gender"]]), r[col["speaker"]]
        if spk not in chosen and sum(1 for s in chosen if chosen[s] == group) < per_group:
            chosen[spk] = group
        if spk in chosen and taken[spk] < utts_per_speaker:
            taken[spk] += 1
            keep.append(r)
    return write_corpus(path, header, keep)


def prepare(corpus, data, *options, check=True):
    return run_script([os.path.join(RECIPE, "local", "data.sh"), *options, corpus, str(data)],
                      cwd=os.path.dirname(str(data)), check=check)


def test_data_prep_holds_out_a_balanced_test_set_and_lists_cross_text_and_hard_trials(tmp_path):
    data = tmp_path / "data"
    proc = prepare(CORPUS, data)
    assert "train 3190 utterances of 152 speakers, test 995 of 48" in proc.stderr
    info = utt_info()
    train, test = DataDir(str(data / "train")).utt2spk(), DataDir(str(data / "test")).utt2spk()
    # Every utterance is used once; no speaker is in both sets; 12 test speakers per age group x gender.
    assert set(train) | set(test) == set(info) and not set(train) & set(test)
    assert not set(train.values()) & set(test.values())
    groups = Counter(info[u][1] for u in {next(u for u in test if test[u] == s) for s in set(test.values())})
    assert set(groups.values()) == {12} and len(groups) == 4
    # The pipe decodes the Opus file to 16 kHz.
    utt = next(iter(test))
    samples, rate = read_audio(DataDir(str(data / "test")).wav_scp()[utt])
    assert rate == 16000 and len(samples) > 16000
    lists = {name: read_trials(str(data / "test" / name)) for name in ("trials", "trials_hard")}
    for trials in lists.values():
        assert all((info[e][0] == info[t][0]) == is_target for e, t, is_target in trials)
        targets = [(e, t) for e, t, x in trials if x]
        assert targets and all(info[e][2] and info[t][2] and info[e][2] != info[t][2] for e, t in targets)
    assert all(info[e][1] == info[t][1] for e, t, x in lists["trials_hard"] if not x)
    assert any(info[e][1] != info[t][1] for e, t, x in lists["trials"] if not x)
    assert ({frozenset((e, t)) for e, t, x in lists["trials"] if x}
            == {frozenset((e, t)) for e, t, x in lists["trials_hard"] if x})
    # Same options: nothing rewritten.
    mtime = os.path.getmtime(data / "test" / "trials")
    assert "nothing to do" in prepare(CORPUS, data).stdout and os.path.getmtime(data / "test" / "trials") == mtime


def test_training_subsets_are_nested_balanced_and_fixed(tmp_path):
    data = tmp_path / "data"
    prepare(CORPUS, data)
    (tmp_path / "again").mkdir()
    prepare(CORPUS, tmp_path / "again" / "data")
    order = (data / "train_speaker_order").read_text().split()
    assert order == (tmp_path / "again" / "data" / "train_speaker_order").read_text().split()  # seeded
    assert sorted(order) == sorted(set(DataDir(str(data / "train")).utt2spk().values()))
    info = utt_info()
    group_of = {spk: group for spk, group, _ in info.values()}
    assert set(Counter(group_of[s] for s in order[:100]).values()) == {25}
    # Stand-ins for the pipeline's augmented copies: one "-reverb" copy per utterance (utt2uniq to its clean one).
    train = DataDir(str(data / "train"))
    combined = data / "train_combined"
    combined.mkdir()
    copies = {f"{u}-reverb": u for u in train.utt2spk()}
    for name, table in (("wav.scp", train.wav_scp()), ("utt2spk", train.utt2spk())):
        rows = {**table, **{copy: table[u] for copy, u in copies.items()}}
        (combined / name).write_text("".join(f"{k} {rows[k]}\n" for k in sorted(rows)))
    uniq = {**{u: u for u in train.utt2spk()}, **copies}
    (combined / "utt2uniq").write_text("".join(f"{k} {uniq[k]}\n" for k in sorted(uniq)))
    subsets = {}
    for n in (50, 100):
        dest = data / f"train_{n}spk"
        run_script([os.path.join(RECIPE, "local", "subset_train.sh"), str(n), str(data / "train_speaker_order"),
                    str(data / "train"), str(dest)], cwd=str(tmp_path))
        subsets[n] = set(DataDir(str(dest)).utt2spk().values())
        assert subsets[n] == set(order[:n])
        with_copies = DataDir(str(data / f"train_{n}spk_combined")).utt2spk()
        assert set(with_copies) == {c for u in DataDir(str(dest)).utt2spk() for c in (u, f"{u}-reverb")}
    assert subsets[50] < subsets[100]
    proc = run_script([os.path.join(RECIPE, "local", "subset_train.sh"), "50", str(data / "train_speaker_order"),
                       str(data / "train"), str(data / "train_50spk")], cwd=str(tmp_path))
    assert "nothing to do" in proc.stdout
    proc = run_script([os.path.join(RECIPE, "local", "subset_train.sh"), "153", str(data / "train_speaker_order"),
                       str(data / "train"), str(data / "train_153spk")], cwd=str(tmp_path), check=False)
    assert proc.returncode == 1 and "153 speakers asked for" in proc.stderr


@pytest.mark.parametrize("fault,message", [
    ("columns", "expected 9 tab-separated columns, got 8"),
    ("gender", "unknown gender 'x'"),
    ("audio", "no such audio file"),
])
def test_bad_corpus_rows_name_the_file_and_line(tmp_path, fault, message):
    header, rows = corpus_rows()
    col = {name: i for i, name in enumerate(header)}
    rows = [list(r) for r in rows[:30]]
    if fault == "columns":
        rows[6] = rows[6][:-1]
    elif fault == "gender":
        rows[6][col["gender"]] = "x"
    else:
        rows[6][col["path"]] = "audio/9999/missing.opus"
    corpus = write_corpus(tmp_path / "corpus", header, rows)
    proc = prepare(corpus, tmp_path / "data", check=False)
    assert proc.returncode == 1 and "utts.tsv:8: " in proc.stderr and message in proc.stderr
    assert not os.path.exists(tmp_path / "data" / "train")


def test_scaling_study_runs_the_recipe_on_a_subset_of_a_few_speakers(tmp_path):
    """The driver at one size, stopped after SSL training: run.sh --train-speakers 4 (of 8), the results collected
    and plotted (embeddings, the rounds, the bound and the stored copies are the pipeline's, tested with the other
    recipes)."""
    root = link_recipe(tmp_path, RECIPE)
    corpus = few_speakers_corpus(tmp_path / "corpus", per_group=4, utts_per_speaker=4)
    tiny = " ".join(["--corpus", corpus, "--test-speakers", "8", "--nj", "1", "--stop-stage", "4",
                     "--ssl-config", os.path.join(ROOT, "conf", "dino_tiny.yaml"),
                     "--classifier-config", os.path.join(ROOT, "conf", "classifier_tiny.yaml")])
    proc = run_script([os.path.join(root, "local", "scaling_study.sh"), "--sizes", "4", "--run-opts", tiny,
                       "--ssl-system", "fbank_mean_std_cosine"], cwd=str(tmp_path))
    assert "Done (stages 1..4)" in proc.stdout
    # Features of all 8 training speakers; the subset takes its 4 speakers' share of them, and DINO trains on it.
    feats = DataDir(os.path.join(root, "data", "train")).feats_scp()
    subset = DataDir(os.path.join(root, "data", "train_4spk"))
    assert len(set(subset.utt2spk().values())) == 4 and subset.feats_scp().items() < feats.items()
    with open(os.path.join(root, "exp_4spk", "dino_tiny", "log", "train.log")) as f:
        assert "16 training utterances" in f.read()
    scaling = tmp_path / "recipe" / "exp_scaling"
    collected = (scaling / "results.txt").read_text().splitlines()
    assert [line.split()[:2] for line in collected] == [["train_speakers=4", "system=fbank_mean_std_cosine"],
                                                         ["train_speakers=4", "system=fbank_mean_std_cosine_hard"]]
    assert "| 4 | fbank_mean_std_cosine |" in (scaling / "gains_hard.txt").read_text()
    assert os.path.getsize(scaling / "scaling.png") > 0


def test_scaling_plot_tabulates_the_gains_over_ssl_per_size(tmp_path):
    results = tmp_path / "results.txt"
    eers = {"dino_cosine": (10.0, 8.0), "pl_dino_r2_plda": (9.0, 6.0), "untrained_cosine": (40.0, 40.0)}
    results.write_text("".join(f"train_speakers={n} system={system}{suffix} EER={eer[i] * (2 if suffix else 1)}% "
                               f"trials=t\n" for i, n in enumerate((50, 100)) for system, eer in eers.items()
                               for suffix in ("", "_hard")))
    proc = run_script(["python", os.path.join(RECIPE, "local", "plot_scaling.py"), "--gains", str(tmp_path / "g.txt"),
                       str(results), str(tmp_path / "s.png")])
    assert "| 50 | pl_dino_r2_plda | 9.00% | +10.0% |" in proc.stdout
    assert "| 100 | pl_dino_r2_plda | 6.00% | +25.0% |" in proc.stdout
    assert "untrained" not in proc.stdout and "_hard" not in proc.stdout
    assert (tmp_path / "g.txt").read_text().strip() == proc.stdout.strip() and (tmp_path / "s.png").stat().st_size
    proc = run_script(["python", os.path.join(RECIPE, "local", "plot_scaling.py"), "--ssl-system", "memo_cosine",
                       str(results), str(tmp_path / "s.png")], check=False)
    assert proc.returncode == 1 and "no memo_cosine lines" in proc.stderr


def test_eer_bootstrap_resamples_speakers(tmp_path):
    utts = [f"s{s}-u{u}" for s in range(6) for u in range(4)]
    (tmp_path / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in utts))
    pairs = [(a, b) for i, a in enumerate(utts) for b in utts[i + 1:]]
    # Speaker s5's targets score low: the EER is 1/6 of the targets' worth, and a resample may leave s5 out.
    lines = [(a, b, a[:2] == b[:2], (0.2 if a.startswith("s5") else 0.9) if a[:2] == b[:2] else 0.5) for a, b in pairs]
    (tmp_path / "trials").write_text("".join(f"{a} {b} {'target' if t else 'nontarget'}\n" for a, b, t, _ in lines))
    (tmp_path / "scores").write_text("".join(f"{a} {b} {s}\n" for a, b, _, s in lines))
    proc = run_script(["python", os.path.join(RECIPE, "local", "bootstrap_eer.py"), "--resamples", "200",
                       *(str(tmp_path / f) for f in ("utt2spk", "trials", "scores"))])
    assert "EER 16.67%, 90% interval over 6 speakers 0.00-" in proc.stdout
