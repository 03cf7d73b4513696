"""pyspk.data.datadir: reading/writing Kaldi data-dir files."""

import os
from pathlib import Path

import pytest

from pyspk.data.datadir import (
    DataDir,
    DataDirError,
    c_sort_key,
    c_sorted,
    format_table,
    iter_raw_lines,
    read_kv,
    read_scp,
    read_table,
    read_trials,
    spk2utt_to_utt2spk,
    utt2spk_to_spk2utt,
    write_table,
    write_trials,
)


def write(path, text, mode="w"):
    with open(path, mode) as f:
        f.write(text)
    return str(path)


def test_c_sort_key_is_byte_order():
    keys = ["b", "B", "a-1", "a_1", "a", "\u00e9", "Z"]
    assert sorted(keys, key=c_sort_key) == ["B", "Z", "a", "a-1", "a_1", "b", "\u00e9"]


def test_c_sorted_matches_byte_order_with_raw_bytes():
    keys = [b"a\xff", b"a\xc3\xa9", b"b", b"a"]
    decoded = [k.decode("utf-8", "surrogateescape") for k in keys]
    assert [k.encode("utf-8", "surrogateescape") for k in c_sorted(decoded)] == sorted(keys)
    assert c_sorted(["b", "a\u00e9", "a"]) == ["a", "a\u00e9", "b"]


def test_iter_raw_lines_keeps_carriage_returns(tmp_path):
    path = write(tmp_path / "f", "a 1\r\nb\r2\nc")
    assert list(iter_raw_lines(path)) == [(1, "a 1\r", True), (2, "b\r2", True), (3, "c", False)]


def test_write_table_sorted_and_read_back(tmp_path):
    path = str(tmp_path / "utt2spk")
    write_table(path, {"u_b": "s2", "u-a": "s1", "U": ["s", 3]})
    assert Path(path).read_text() == "U s 3\nu-a s1\nu_b s2\n"
    assert read_table(path, 2) == {"U": ["s", "3"], "u-a": ["s1"], "u_b": ["s2"]}
    assert [n for n in os.listdir(tmp_path)] == ["utt2spk"]  # no temp file left


def test_format_table_bare_key_for_empty_value():
    assert format_table({"b": "", "a": "x y"}) == "a x y\nb\n"


def test_read_kv_errors_name_file_and_line(tmp_path):
    path = write(tmp_path / "utt2num_frames", "a 10\nb x\n")
    with pytest.raises(DataDirError, match=r"utt2num_frames:2: bad value 'x'"):
        read_kv(path, int)
    path = write(tmp_path / "utt2spk", "a s\n\nb s\n")
    with pytest.raises(DataDirError, match=r"utt2spk:2: empty line"):
        read_kv(path)
    path = write(tmp_path / "dup", "a s\na t\n")
    with pytest.raises(DataDirError, match=r"dup:2: duplicate key 'a'"):
        read_kv(path)
    with pytest.raises(DataDirError, match=r"nonexistent: no such file"):
        read_kv(str(tmp_path / "nonexistent"))


def test_read_table_field_count_messages(tmp_path):
    path = write(tmp_path / "t", "a 1 2 3\n")
    with pytest.raises(DataDirError, match=r"t:1: expected 2 to 3 fields, got 4"):
        read_table(path, 2, 3)
    with pytest.raises(DataDirError, match=r"t:1: expected 2 fields, got 4"):
        read_table(path, 2, 2)


def test_read_scp_keeps_inner_spaces_and_pipes(tmp_path):
    path = write(tmp_path / "wav.scp", "a sox x.wav -t wav - |\nb /x/b.wav\r\n")
    assert read_scp(path) == {"a": "sox x.wav -t wav - |", "b": "/x/b.wav"}
    path = write(tmp_path / "bad.scp", "a x\n   \n")
    with pytest.raises(DataDirError, match=r"bad.scp:2: empty line"):
        read_scp(path)
    path = write(tmp_path / "bad2.scp", "a\n")
    with pytest.raises(DataDirError, match=r"bad2.scp:1: expected '<key> <value>'"):
        read_scp(path)


def test_non_utf8_bytes_survive_round_trip(tmp_path):
    path = write(tmp_path / "text", b"u1 caf\xe9\nu0 ok\n", "wb")
    table = read_table(path, 1)
    out = str(tmp_path / "text.out")
    write_table(out, {k: v for k, v in table.items()})
    assert Path(out).read_bytes() == b"u0 ok\nu1 caf\xe9\n"


def test_utt2spk_spk2utt_round_trip():
    utt2spk = {"s2-b": "s2", "s1-b": "s1", "s1-a": "s1"}
    spk2utt = utt2spk_to_spk2utt(utt2spk)
    assert spk2utt == {"s1": ["s1-a", "s1-b"], "s2": ["s2-b"]}
    assert spk2utt_to_utt2spk(spk2utt) == utt2spk


def test_trials_round_trip_and_errors(tmp_path):
    path = str(tmp_path / "trials")
    trials = [("e1", "t1", True), ("e1", "t2", False)]
    write_trials(path, trials)
    assert Path(path).read_text() == "e1 t1 target\ne1 t2 nontarget\n"
    assert read_trials(path) == trials
    write(path, "e1 t1 target\ne1 t2 maybe\n")
    with pytest.raises(DataDirError, match=r"trials:2: third field"):
        read_trials(path)


def test_datadir_accessors(tmp_path):
    write(tmp_path / "utt2spk", "s1-a s1\ns1-b s1\n")
    write(tmp_path / "spk2utt", "s1 s1-a s1-b\n")
    write(tmp_path / "segments", "s1-a rec 0 1.5\ns1-b rec 1.5 3\n")
    write(tmp_path / "utt2num_frames", "s1-a 150\ns1-b 150\n")
    data = DataDir(tmp_path)
    assert data.utts() == ["s1-a", "s1-b"]
    assert data.spk2utt() == {"s1": ["s1-a", "s1-b"]}
    assert data.segments() == {"s1-a": ("rec", 0.0, 1.5), "s1-b": ("rec", 1.5, 3.0)}
    assert data.utt2num_frames() == {"s1-a": 150, "s1-b": 150}
    assert data.has("utt2spk") and not data.has("feats.scp")
    with pytest.raises(DataDirError, match="data directory does not exist"):
        DataDir(tmp_path / "missing")
