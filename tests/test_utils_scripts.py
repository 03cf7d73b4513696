"""Kaldi-compatible utils/: fix, split, subset, combine, copy data dirs; filter_scp.pl and the spk2utt filters."""

import gc
import itertools
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, make_wav_data_dir, no_traceback, run_script

from pyspk.data import ops
from pyspk.data.datadir import DataDirError, read_kv, read_scp, read_table
from pyspk.data.ops import copy_data_dir, fix_data_dir, subset_data_dir
from pyspk.data.split import _balanced_cuts, split_data_dir
from pyspk.data.tables import DataTables
from pyspk.data.validate import check_data_dir

# utterances per speaker; speaker ids are prefixes of utterance ids (Kaldi's convention)
COUNTS = {"spkA": 4, "spkB": 1, "spkC": 3, "spkD": 2, "spkE": 2}


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def make_dir(path, counts=COUNTS, feats=True, segments=False, prefix=""):
    """A data dir without audio: utt2spk, spk2utt, wav.scp, utt2dur [, feats.scp, utt2num_frames, segments]."""
    os.makedirs(path, exist_ok=True)
    utt2spk = {f"{prefix}{spk}-{i:02d}": f"{prefix}{spk}" for spk, n in counts.items() for i in range(n)}
    utts = sorted(utt2spk)
    write(f"{path}/utt2spk", "".join(f"{u} {utt2spk[u]}\n" for u in utts))
    spk2utt = {}
    for u in utts:
        spk2utt.setdefault(utt2spk[u], []).append(u)
    write(f"{path}/spk2utt", "".join(f"{s} {' '.join(us)}\n" for s, us in spk2utt.items()))
    write(f"{path}/utt2dur", "".join(f"{u} {1 + (i * 7) % 5}.5\n" for i, u in enumerate(utts)))
    if segments:
        write(f"{path}/segments", "".join(f"{u} rec-{utt2spk[u]} {i}.0 {i}.9\n" for i, u in enumerate(utts)))
        write(f"{path}/wav.scp", "".join(f"rec-{s} sox /c/{s}.flac -t wav - |\n" for s in spk2utt))
    else:
        write(f"{path}/wav.scp", "".join(f"{u} /c/{u}.wav\n" for u in utts))
    if feats:
        write(f"{path}/feats.scp", "".join(f"{u} /f/raw.ark:{10 * i}\n" for i, u in enumerate(utts)))
        write(f"{path}/utt2num_frames", "".join(f"{u} {100 + i}\n" for i, u in enumerate(utts)))
    return str(path)


def assert_valid(data, **need):
    report = check_data_dir(data, **need)
    assert report.ok, [str(p) for p in report.problems]


def utts_of(data):
    return list(read_kv(os.path.join(data, "utt2spk")))


# ----------------------------------------------------------------------------- perl filters

def run_filter(args, stdin):
    return subprocess.run(args, cwd=ROOT, input=stdin, capture_output=True, text=True,
                          env=dict(os.environ, LC_ALL="C"), check=False)


def test_utt2spk_spk2utt_filters_round_trip(tmp_path):
    utt2spk = "a-1 a\na-2 a\nb-1 b\nc-1 c\nc-2 c\n"
    spk2utt = run_filter(["utils/utt2spk_to_spk2utt.pl"], utt2spk)
    assert spk2utt.returncode == 0 and spk2utt.stdout == "a a-1 a-2\nb b-1\nc c-1 c-2\n"
    back = run_filter(["utils/spk2utt_to_utt2spk.pl"], spk2utt.stdout)
    assert back.stdout == utt2spk
    write(tmp_path / "utt2spk", "x-1 x\ny-1 y\nx-2 x\n")  # speakers keep their first-appearance order
    proc = run_filter(["utils/utt2spk_to_spk2utt.pl", str(tmp_path / "utt2spk")], "")
    assert proc.stdout == "x x-1 x-2\ny y-1\n"
    bad = run_filter(["utils/utt2spk_to_spk2utt.pl"], "a-1 a\na-2\n")
    assert bad.returncode != 0 and ":2: expected 'utt spk'" in bad.stderr
    bad = run_filter(["utils/spk2utt_to_utt2spk.pl"], "a a-1\nb\n")
    assert bad.returncode != 0 and ":2: expected 'spk utt1 utt2 ...'" in bad.stderr


def test_filter_scp(tmp_path):
    write(tmp_path / "ids", "b extra fields\nd\n")
    write(tmp_path / "in.scp", "a 1\nb 2 x\nc 3\nd 4\n")
    ids, scp = str(tmp_path / "ids"), str(tmp_path / "in.scp")
    assert run_filter(["utils/filter_scp.pl", ids, scp], "").stdout == "b 2 x\nd 4\n"
    assert run_filter(["utils/filter_scp.pl", "--exclude", ids, scp], "").stdout == "a 1\nc 3\n"
    assert run_filter(["utils/filter_scp.pl", ids], "d 9\nz 1\n").stdout == "d 9\n"
    write(tmp_path / "nums", "2\n4\n")
    assert run_filter(["utils/filter_scp.pl", "-f", "2", str(tmp_path / "nums"), scp], "").stdout == "b 2 x\nd 4\n"
    assert run_filter(["utils/filter_scp.pl", "-f", "3", ids, scp], "").returncode != 0
    assert run_filter(["utils/filter_scp.pl", "-f", "0", ids, scp], "").returncode != 0
    assert run_filter(["utils/filter_scp.pl"], "").returncode != 0


# ----------------------------------------------------------------------------- fix

def test_fix_data_dir_repairs_and_is_idempotent(tmp_path):
    data = make_dir(tmp_path / "d")
    with open(f"{data}/feats.scp") as f:
        feats = f.read().splitlines(keepends=True)
    # unsorted, a duplicate key, an empty line, and spkB-00 without features
    feats = [line for line in feats if not line.startswith("spkB-00")]
    write(f"{data}/feats.scp", "".join(reversed(feats)) + "\n" + feats[0].replace("raw", "dup"))
    write(f"{data}/spk2utt", "spkZ nobody\n")  # rebuilt from utt2spk anyway
    with open(f"{data}/utt2dur", "a") as f:
        f.write("spkZ-00 2.0\n")  # an utterance only in utt2dur
    with open(f"{data}/utt2num_frames") as f:
        text = f.read()
    assert "spkC-01 106\n" in text
    write(f"{data}/utt2num_frames", text.replace("spkC-01 106", "spkC-01 0"))  # bad value: utterance dropped
    proc = run_script(["utils/fix_data_dir.sh", data])
    assert "kept 10 utterances out of 12" in proc.stdout
    assert "feats.scp: dropped 1 empty line, 1 duplicate key" in proc.stdout
    assert_valid(data, need_feats=True, need_wav=True)
    assert "spkB" not in read_table(f"{data}/spk2utt")
    assert read_scp(f"{data}/feats.scp")["spkA-00"] == "/f/raw.ark:0"  # first of the duplicates kept
    assert sorted(os.listdir(f"{data}/.backup")) == ["feats.scp", "spk2utt", "utt2dur", "utt2num_frames",
                                                     "utt2spk", "wav.scp"]
    with open(f"{data}/.backup/spk2utt") as f:
        assert f.read() == "spkZ nobody\n"
    before = {name: os.stat(f"{data}/{name}").st_mtime_ns for name in os.listdir(data)}
    proc = run_script(["utils/fix_data_dir.sh", data])
    assert "kept all 10 utterances." in proc.stdout
    assert before == {name: os.stat(f"{data}/{name}").st_mtime_ns for name in os.listdir(data)}


def test_fix_data_dir_segments_and_speaker_files(tmp_path):
    data = make_dir(tmp_path / "d", segments=True, feats=False)
    with open(f"{data}/wav.scp") as f:
        wav = f.read()
    write(f"{data}/wav.scp", wav.replace("rec-spkD sox /c/spkD.flac -t wav - |\n", "") + "rec-unused /c/u.wav\n")
    write(f"{data}/spk2gender", "spkA m\nspkB f\nspkC m\nspkD f\n")  # spkE has no gender: dropped
    run_script(["utils/fix_data_dir.sh", data])
    assert_valid(data, need_wav=True)
    assert sorted(read_table(f"{data}/spk2utt")) == ["spkA", "spkB", "spkC"]
    assert sorted(read_scp(f"{data}/wav.scp")) == ["rec-spkA", "rec-spkB", "rec-spkC"]
    assert read_scp(f"{data}/wav.scp")["rec-spkA"] == "sox /c/spkA.flac -t wav - |"


def test_fix_data_dir_extra_files_and_nothing_left(tmp_path):
    data = make_dir(tmp_path / "d")
    write(f"{data}/myutts", "spkA-00 x\nspkC-02 y\n")
    run_script(["utils/fix_data_dir.sh", "--utt-extra-files", "myutts", data])
    assert utts_of(data) == ["spkA-00", "spkC-02"]
    write(f"{data}/feats.scp", "other 1\n")
    proc = run_script(["utils/fix_data_dir.sh", data], check=False)
    assert proc.returncode == 1 and "no utterances remained" in proc.stderr
    assert utts_of(data) == ["spkA-00", "spkC-02"]  # nothing written


# ----------------------------------------------------------------------------- split

def test_split_keeps_speakers_whole_and_is_up_to_date(tmp_path):
    data = make_dir(tmp_path / "d")
    run_script(["utils/split_data.sh", data, "3"])
    parts = [f"{data}/split3/{i}" for i in (1, 2, 3)]
    seen = []
    for part in parts:
        assert_valid(part, need_feats=True, need_wav=True)
        spk2utt = read_table(f"{part}/spk2utt")
        assert spk2utt
        for spk, utts in spk2utt.items():
            assert utts == [u for u in utts_of(data) if u.startswith(spk + "-")]  # the speaker's utterances, all
        seen += utts_of(part)
        assert sorted(read_scp(f"{part}/feats.scp")) == utts_of(part)
    assert seen == utts_of(data)  # parts are contiguous, in order, and cover everything
    stamps = [os.stat(f"{p}/utt2spk").st_mtime_ns for p in parts]
    proc = run_script(["utils/split_data.sh", data, "3"])
    assert "up to date" in proc.stdout
    assert stamps == [os.stat(f"{p}/utt2spk").st_mtime_ns for p in parts]
    os.remove(f"{data}/utt2num_frames")  # a changed source means a new split, stale files go
    os.utime(f"{data}/utt2spk")
    run_script(["utils/split_data.sh", data, "3"])
    assert not any(os.path.exists(f"{p}/utt2num_frames") for p in parts)


def test_split_per_utt_and_too_many_parts(tmp_path):
    data = make_dir(tmp_path / "d")
    run_script(["utils/split_data.sh", "--per-utt", data, "5"])
    sizes = [len(utts_of(f"{data}/split5utt/{i}")) for i in range(1, 6)]
    assert sizes == [3, 2, 2, 3, 2] or (sum(sizes) == 12 and max(sizes) - min(sizes) <= 1)
    proc = run_script(["utils/split_data.sh", data, "6"], check=False)
    assert proc.returncode == 1 and "cannot split 5 speakers into 6 parts" in proc.stderr
    assert run_script(["utils/split_data.sh", data, "0"], check=False).returncode == 1


def test_split_with_segments_splits_recordings(tmp_path):
    data = make_dir(tmp_path / "d", segments=True)
    split_root, _ = split_data_dir(data, 2)
    for i in (1, 2):
        part = f"{split_root}/{i}"
        assert_valid(part, need_wav=True)
        recordings = {fields[0] for fields in read_table(f"{part}/segments", 4, 4).values()}
        assert set(read_scp(f"{part}/wav.scp")) == recordings


def test_balanced_cuts():
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(1, 30, size=rng.integers(1, 40))
        parts = int(rng.integers(1, len(counts) + 1))
        ends = _balanced_cuts(counts, parts)
        assert len(ends) == parts and ends[-1] == len(counts)
        assert all(b > a for a, b in itertools.pairwise([0, *ends]))  # non-empty, increasing
    sums = np.add.reduceat(np.ones(100, int), [0, *_balanced_cuts(np.ones(100, int), 7)[:-1]])
    assert sums.max() - sums.min() <= 1


# ----------------------------------------------------------------------------- subset

SUBSETS = {
    "even": (4, ["spkA-01", "spkB-00", "spkC-02", "spkE-00"]),
    "first": (3, ["spkA-00", "spkA-01", "spkA-02"]),
    "last": (2, ["spkE-00", "spkE-01"]),
    "per_spk": (2, ["spkA-00", "spkA-02", "spkB-00", "spkC-00", "spkC-01", "spkD-00", "spkD-01", "spkE-00",
                    "spkE-01"]),
    "shortest": (2, ["spkA-00", "spkC-00"]),  # 1.5 s each, ties in sorted order
}


@pytest.mark.parametrize("mode", sorted(SUBSETS))
def test_subset_modes(tmp_path, mode):
    data = make_dir(tmp_path / "d")
    dest = str(tmp_path / "sub")
    num, expected = SUBSETS[mode]
    messages = subset_data_dir(data, dest, mode, num)
    assert utts_of(dest) == expected
    assert f"reducing #utt from 12 to {len(expected)}" in messages
    assert_valid(dest, need_feats=True, need_wav=True)


@pytest.mark.parametrize("flag,mode", [(None, "even"), ("--per-spk", "per_spk")])
def test_subset_script(tmp_path, flag, mode):
    data = make_dir(tmp_path / "d")
    dest = str(tmp_path / "sub")
    num, expected = SUBSETS[mode]
    proc = run_script(["utils/subset_data_dir.sh", *([flag] if flag else []), data, str(num), dest])
    assert utts_of(dest) == expected
    assert f"reducing #utt from 12 to {len(expected)}" in proc.stdout


def test_subset_lists_and_speakers(tmp_path):
    data = make_dir(tmp_path / "d", segments=True)
    write(tmp_path / "utts", "spkC-01\nspkA-03 whatever\nnot-there\n")
    write(tmp_path / "spks", "spkD\nspkB\n")
    run_script(["utils/subset_data_dir.sh", "--utt-list", str(tmp_path / "utts"), data, str(tmp_path / "u")])
    assert utts_of(str(tmp_path / "u")) == ["spkA-03", "spkC-01"]
    assert sorted(read_scp(str(tmp_path / "u/wav.scp"))) == ["rec-spkA", "rec-spkC"]
    subset_data_dir(data, str(tmp_path / "s"), "spk_list", id_list=str(tmp_path / "spks"))
    assert utts_of(str(tmp_path / "s")) == ["spkB-00", "spkD-00", "spkD-01"]
    subset_data_dir(data, str(tmp_path / "r"), "speakers", 5)
    spk2utt = read_table(str(tmp_path / "r/spk2utt"))
    assert len(utts_of(str(tmp_path / "r"))) >= 5 and all(len(u) == COUNTS[s] for s, u in spk2utt.items())
    for name in "usr":
        assert_valid(str(tmp_path / name), need_wav=True)


def test_subset_errors(tmp_path):
    data = make_dir(tmp_path / "d")
    proc = run_script(["utils/subset_data_dir.sh", data, "13", str(tmp_path / "x")], check=False)
    assert proc.returncode == 1 and "cannot subset to 13 utterances: it has only 12" in proc.stderr
    assert run_script(["utils/subset_data_dir.sh", data, "3"], check=False).returncode == 1
    assert run_script(["utils/subset_data_dir.sh", data, "x", str(tmp_path / "x")], check=False).returncode == 1
    os.remove(f"{data}/utt2dur")
    os.remove(f"{data}/utt2num_frames")
    proc = run_script(["utils/subset_data_dir.sh", "--shortest", data, "2", str(tmp_path / "x")], check=False)
    assert proc.returncode == 1 and "needs utt2dur or utt2num_frames" in proc.stderr


# ----------------------------------------------------------------------------- combine

def test_combine_data(tmp_path):
    a = make_dir(tmp_path / "a", {"spkA": 2, "spkB": 1})
    b = make_dir(tmp_path / "b", {"spkC": 2}, feats=False)
    write(f"{b}/utt2uniq", "spkC-00 orig0\nspkC-01 orig1\n")
    dest = str(tmp_path / "all")
    proc = run_script(["utils/combine_data.sh", dest, a, b])
    assert "not combining feats.scp: not present in all source directories" in proc.stdout
    assert utts_of(dest) == ["spkA-00", "spkA-01", "spkB-00", "spkC-00", "spkC-01"]
    assert read_kv(f"{dest}/utt2uniq") == {"spkA-00": "spkA-00", "spkA-01": "spkA-01", "spkB-00": "spkB-00",
                                           "spkC-00": "orig0", "spkC-01": "orig1"}
    assert not os.path.exists(f"{dest}/feats.scp")
    assert_valid(dest, need_wav=True)


def test_combine_frees_its_tables_before_fixing(tmp_path, monkeypatch):
    """fix_data_dir reads the combined dir again; the sources' tables are gone by then (at VoxCeleb2
    size, 5.5 M utterances, holding both took 11.8 GB)."""
    a = make_dir(tmp_path / "a", {"spkA": 2})
    b = make_dir(tmp_path / "b", {"spkB": 2})
    alive = []

    def fix(path):
        gc.collect()
        alive.extend(o for o in gc.get_objects() if isinstance(o, DataTables))
        return fix_data_dir(path)

    monkeypatch.setattr(ops, "fix_data_dir", fix)
    ops.combine_data_dirs(tmp_path / "all", [a, b])
    assert alive == [] and utts_of(str(tmp_path / "all")) == ["spkA-00", "spkA-01", "spkB-00", "spkB-01"]


def test_combine_fails_on_duplicate_utterance(tmp_path):
    a = make_dir(tmp_path / "a", {"spkA": 2})
    b = make_dir(tmp_path / "b", {"spkA": 1, "spkB": 1})
    proc = run_script(["utils/combine_data.sh", "--skip-fix", "true", str(tmp_path / "all"), a, b], check=False)
    assert proc.returncode == 1
    assert f"{b}/feats.scp: utterance 'spkA-00' is also in {a}/feats.scp" in proc.stderr
    proc = run_script(["utils/combine_data.sh", str(tmp_path / "all"), a, a], check=False)
    assert proc.returncode == 1 and "also in" in proc.stderr
    proc = run_script(["utils/combine_data.sh", a, a, b], check=False)
    assert proc.returncode == 1 and "destination is the source directory" in proc.stderr


def test_combine_segmented_with_unsegmented(tmp_path):
    a = make_dir(tmp_path / "a", {"spkA": 2}, segments=True, feats=False)
    b = make_dir(tmp_path / "b", {"spkB": 2}, feats=False)
    dest = str(tmp_path / "all")
    run_script(["utils/combine_data.sh", dest, a, b])
    assert_valid(dest, need_wav=True)
    duration = read_kv(f"{b}/utt2dur")["spkB-01"]
    assert read_table(f"{dest}/segments", 4, 4)["spkB-01"] == ["spkB-01", "0", duration]


# ----------------------------------------------------------------------------- copy

def test_copy_data_dir_with_prefixes(tmp_path):
    src = make_dir(tmp_path / "src", segments=True)
    dest = str(tmp_path / "dest")
    os.makedirs(dest)
    write(f"{dest}/text", "stale 1\n")
    proc = run_script(["utils/copy_data_dir.sh", "--utt-prefix", "rev1-", "--spk-prefix", "rev1-", src, dest])
    assert "Successfully validated" in proc.stdout
    assert utts_of(dest)[0] == "rev1-spkA-00"
    assert read_kv(f"{dest}/utt2spk")["rev1-spkA-00"] == "rev1-spkA"
    assert read_kv(f"{dest}/utt2uniq")["rev1-spkA-00"] == "spkA-00"
    assert read_scp(f"{dest}/feats.scp")["rev1-spkA-00"] == "/f/raw.ark:0"
    assert read_scp(f"{dest}/wav.scp") == read_scp(f"{src}/wav.scp")  # recordings keep their ids
    assert read_table(f"{dest}/segments", 4, 4)["rev1-spkA-00"] == ["rec-spkA", "0.0", "0.9"]
    assert os.path.exists(f"{dest}/.backup/text") and not os.path.exists(f"{dest}/text")


def test_copy_data_dir_plain_and_errors(tmp_path):
    src = make_dir(tmp_path / "src")
    dest = str(tmp_path / "dest")
    run_script(["utils/copy_data_dir.sh", src, dest])
    for name in ("utt2spk", "spk2utt", "wav.scp", "feats.scp", "utt2dur", "utt2num_frames"):
        with open(f"{src}/{name}") as f, open(f"{dest}/{name}") as g:
            assert f.read() == g.read()
    assert not os.path.exists(f"{dest}/utt2uniq")
    proc = run_script(["utils/copy_data_dir.sh", src, src], check=False)
    assert proc.returncode == 1 and "destination is the source directory" in proc.stderr
    proc = run_script(["utils/copy_data_dir.sh", "--spk-suffix", "z", "--validate-opts", "--no-spk-sort --no-wav",
                       src, str(tmp_path / "d3")])
    assert "validate_data_dir.sh --no-spk-sort --no-wav" in proc.stdout
    assert read_kv(f"{tmp_path}/d3/utt2spk")["spkA-00"] == "spkAz"
    proc = run_script(["utils/copy_data_dir.sh", "--bogus", "1", src, dest], check=False)
    assert proc.returncode == 1 and "invalid option --bogus" in proc.stderr


# ----------------------------------------------------------------------------- edge cases (Python API)

def test_strict_operations_name_bad_lines(tmp_path):
    data = make_dir(tmp_path / "d")
    with open(f"{data}/feats.scp", "a") as f:
        f.write("spkA-00 /f/again.ark:1\n")
    with pytest.raises(DataDirError, match=r"feats.scp:13: duplicate key 'spkA-00'"):
        subset_data_dir(data, str(tmp_path / "s"), "first", 2)
    write(f"{data}/feats.scp", "spkA-00 x\n\n")
    with pytest.raises(DataDirError, match=r"feats.scp:2: empty line"):
        split_data_dir(data, 2)
    os.remove(f"{data}/feats.scp")
    write(f"{data}/utt2dur", "spkA-00 1.0 2.0\n")
    with pytest.raises(DataDirError, match=r"utt2dur:1: expected 2 fields, got 3"):
        copy_data_dir(data, str(tmp_path / "c"))


def test_fix_normalises_dos_lines_bytes_and_bare_text(tmp_path):
    data = str(tmp_path / "d")
    os.makedirs(data)
    utts = [b"sp\xc3\xa9-1", b"sp\xc3\xa9-2", b"spz-1", b"sp\xff-1"]  # C order: spz < sp\xc3 < sp\xff
    spk = {u: u.split(b"-")[0] for u in utts}
    with open(f"{data}/utt2spk", "wb") as f:
        f.writelines(u + b" " + spk[u] + b"\r\n" for u in utts)
    with open(f"{data}/text", "wb") as f:
        f.writelines(u + (b"  hello  world \n" if i else b"\n") for i, u in enumerate(utts))
    messages = fix_data_dir(data)
    assert f"sorted {data}/utt2spk" in messages
    order = sorted(utts)
    with open(f"{data}/utt2spk", "rb") as f:
        assert f.read() == b"".join(u + b" " + spk[u] + b"\n" for u in order)
    with open(f"{data}/text", "rb") as f:
        assert f.read().splitlines()[:2] == [b"spz-1 hello  world", b"sp\xc3\xa9-1"]
    assert_valid(data, need_text=True)
    assert fix_data_dir(data)[-2:] == ["kept all 4 utterances.", f"old files are kept in {data}/.backup"]


def test_fix_warns_when_speakers_are_not_prefixes(tmp_path):
    data = make_dir(tmp_path / "d", {"a": 2, "b": 1})
    write(f"{data}/utt2spk", "a-00 zz\na-01 zz\nb-00 aa\n")
    messages = fix_data_dir(data)
    assert any("is not sorted by speaker ('aa' after 'zz')" in m for m in messages)
    assert read_table(f"{data}/spk2utt") == {"aa": ["b-00"], "zz": ["a-00", "a-01"]}
    assert check_data_dir(data, spk_sort=False).ok and not check_data_dir(data).ok


def test_random_speaker_subset_is_reproducible(tmp_path):
    data = make_dir(tmp_path / "d")
    first = subset_data_dir(data, str(tmp_path / "a"), "speakers", 4)
    assert subset_data_dir(data, str(tmp_path / "b"), "speakers", 4) == first
    assert utts_of(str(tmp_path / "a")) == utts_of(str(tmp_path / "b"))


# Faults of issue 14, item 14: data-dir scripts on awkward input ---------------------------
def test_copy_data_dir_takes_a_suffix_starting_with_a_dash(tmp_path):
    src = make_wav_data_dir(str(tmp_path / "src"), n_spk=2, n_utt=2)
    dest = str(tmp_path / "dest")
    proc = run_script(["utils/copy_data_dir.sh", "--utt-suffix", "-reverb", src, dest], check=False)
    assert proc.returncode == 0, proc.stderr
    utts = [line.split()[0] for line in Path(dest, "utt2spk").read_text().splitlines()]
    assert utts and all(u.endswith("-reverb") for u in utts)


def test_fix_data_dir_counts_a_dropped_malformed_line(tmp_path):
    data = make_wav_data_dir(str(tmp_path), n_spk=2, n_utt=3)
    utt2spk = os.path.join(data, "utt2spk")
    lines = Path(utt2spk).read_text().splitlines(keepends=True)
    lines[2] = lines[2].split()[0] + "\n"  # no speaker: malformed
    Path(utt2spk).write_text("".join(lines))
    proc = run_script(["utils/fix_data_dir.sh", data], check=False)
    assert proc.returncode == 0, proc.stderr
    no_traceback(proc)
    assert "kept 5 utterances out of 6" in proc.stdout
    assert "kept all" not in proc.stdout
    assert len(Path(utt2spk).read_text().splitlines()) == 5


def test_validate_rejects_spk2utt_out_of_utt2spk_order(tmp_path):
    data = make_wav_data_dir(str(tmp_path), n_spk=2, n_utt=3)
    spk2utt = os.path.join(data, "spk2utt")
    lines = Path(spk2utt).read_text().splitlines(keepends=True)
    spk, *utts = lines[0].split()
    lines[0] = " ".join([spk, utts[1], utts[0], *utts[2:]]) + "\n"
    Path(spk2utt).write_text("".join(lines))
    proc = run_script(["utils/validate_data_dir.sh", "--no-feats", "--no-text", data], check=False)
    assert proc.returncode == 1
    no_traceback(proc)
    assert (f"{spk2utt}:1: utterances of speaker '{spk}' are not in utt2spk order ('{utts[0]}' after "
            f"'{utts[1]}'") in proc.stderr


def test_fix_data_dir_on_utt2spk_not_sorted_by_speaker_says_kaldi_rejects_it(tmp_path):
    data = make_wav_data_dir(str(tmp_path), n_spk=2, n_utt=2)
    utt2spk = os.path.join(data, "utt2spk")
    lines = Path(utt2spk).read_text().splitlines(keepends=True)
    # Speakers that are not prefixes: the first utterances belong to the last speaker.
    swapped = {"spk000": "zz", "spk001": "aa"}
    Path(utt2spk).write_text("".join(f"{u} {swapped[s]}\n" for u, s in (line.split() for line in lines)))
    proc = run_script(["utils/fix_data_dir.sh", data], check=False)
    assert proc.returncode == 0, proc.stderr
    assert "is not sorted by speaker ('aa' after 'zz')" in proc.stdout
    assert "Kaldi's validate_data_dir.sh rejects this dir" in proc.stdout
    proc = run_script(["utils/validate_data_dir.sh", "--no-feats", "--no-text", data], check=False)
    assert proc.returncode == 1
    proc = run_script(["utils/validate_data_dir.sh", "--no-feats", "--no-text", "--no-spk-sort", data], check=False)
    assert proc.returncode == 0, proc.stderr
