"""Data-dir validation: pyspk.data.validate and utils/validate_data_dir.sh on good and malformed dirs."""

import os
import re

import pytest
from conftest import run_script

from pyspk.bin import validate_data_dir as validate_bin
from pyspk.data.datadir import DataDirError
from pyspk.data.validate import check_data_dir, validate_data_dir

UTTS = [("s1-a", "s1"), ("s1-b", "s1"), ("s2-a", "s2"), ("s2-b", "s2"), ("s3-a", "s3")]


def lines(rows):
    return "".join(" ".join(map(str, row)) + "\n" for row in rows)


def good_files():
    spk2utt = {}
    for utt, spk in UTTS:
        spk2utt.setdefault(spk, []).append(utt)
    return {
        "utt2spk": lines(UTTS),
        "spk2utt": lines((spk, *utts) for spk, utts in spk2utt.items()),
        "text": lines((utt, "hello", "world") for utt, _ in UTTS),
        "wav.scp": lines((utt, f"/corpus/{utt}.wav") for utt, _ in UTTS),
        "feats.scp": lines((utt, f"/feats/raw.ark:{10 * i + 3}") for i, (utt, _) in enumerate(UTTS)),
        "vad.scp": lines((utt, f"/feats/vad.ark:{10 * i + 3}") for i, (utt, _) in enumerate(UTTS)),
        "utt2num_frames": lines((utt, 100 + i) for i, (utt, _) in enumerate(UTTS)),
        "utt2dur": lines((utt, 1.01 + i) for i, (utt, _) in enumerate(UTTS)),
        "utt2lang": lines((utt, "en") for utt, _ in UTTS),
        "utt2label": lines((utt, 7) for utt, _ in UTTS),
        "spk2gender": lines((spk, "f") for spk in spk2utt),
        "cmvn.scp": lines((spk, f"/feats/cmvn.ark:{i}") for i, spk in enumerate(spk2utt)),
    }


def make_dir(path, files):
    os.makedirs(path, exist_ok=True)
    for name, text in files.items():
        mode = "wb" if isinstance(text, bytes) else "w"
        with open(os.path.join(path, name), mode) as f:
            f.write(text)
    return str(path)


def segmented_files():
    files = good_files()
    files["segments"] = lines((utt, f"rec{utt[1]}", i, i + 1.5) for i, (utt, _) in enumerate(UTTS))
    files["wav.scp"] = lines((f"rec{n}", f"/corpus/rec{n}.wav") for n in (1, 2, 3))
    files["reco2dur"] = lines((f"rec{n}", 60.0) for n in (1, 2, 3))
    return files


def validate(data, *opts, check=False):
    return run_script(["utils/validate_data_dir.sh", *opts, data], check=check)


def test_good_dir_validates(tmp_path):
    data = make_dir(tmp_path / "d", good_files())
    proc = validate(data, check=True)
    assert f"Successfully validated data-directory {data}" in proc.stdout
    assert validate_data_dir(data, need_feats=True, need_wav=True, need_text=True) == []


def test_segmented_dir_validates(tmp_path):
    data = make_dir(tmp_path / "d", segmented_files())
    assert validate_data_dir(data, need_feats=True, need_wav=True, need_text=True) == []


def test_required_files(tmp_path):
    files = good_files()
    del files["text"], files["feats.scp"]
    data = make_dir(tmp_path / "d", files)
    proc = validate(data)
    assert proc.returncode == 1
    assert f"{data}/text: no such file (if this is by design, specify --no-text)" in proc.stderr
    assert f"{data}/feats.scp: no such file" in proc.stderr
    validate(data, "--no-text", "--no-feats", check=True)
    os.remove(os.path.join(data, "wav.scp"))
    assert validate(data, "--no-text", "--no-feats").returncode == 1
    validate(data, "--no-text", "--no-feats", "--no-wav", check=True)


def mutate(files, name, old, new):
    assert old in files[name], (name, old)
    files[name] = files[name].replace(old, new, 1)


def swap_lines(files, name, i, j):
    rows = files[name].splitlines(keepends=True)
    rows[i], rows[j] = rows[j], rows[i]
    files[name] = "".join(rows)


MALFORMED = {
    "unsorted utt2spk": (lambda f: swap_lines(f, "utt2spk", 1, 2), r"utt2spk:3: not sorted: 's1-b' after 's2-a'"),
    "duplicate key": (lambda f: mutate(f, "feats.scp", "s2-a /feats/raw.ark:23", "s1-b /feats/raw.ark:23"),
                      r"feats.scp:3: duplicate key 's1-b' \(first at line 2\)"),
    "utt2spk/spk2utt mismatch": (lambda f: (mutate(f, "spk2utt", "s1 s1-a s1-b", "s1 s1-a"),
                                            mutate(f, "spk2utt", "s2 s2-a", "s2 s1-b s2-a"))[0],
                                 r"spk2utt:2: utterance 's1-b' listed under 's2', but utt2spk line 2"),
    "utt missing from spk2utt": (lambda f: mutate(f, "spk2utt", "s2 s2-a s2-b", "s2 s2-a"),
                                 r"utt2spk:4: utterance 's2-b' of speaker 's2' is missing from spk2utt"),
    "missing feats entry": (lambda f: mutate(f, "feats.scp", "s1-b /feats/raw.ark:13\n", ""),
                            r"feats.scp: missing utterance 's1-b' \(listed at \S+/utt2spk:2\)"),
    "extra utt2lang entry": (lambda f: mutate(f, "utt2lang", "s3-a en\n", "s3-a en\ns4-a en\n"),
                             r"utt2lang:6: utterance 's4-a' is not in utt2spk"),
    "empty line": (lambda f: mutate(f, "wav.scp", "s1-b", "\ns1-b"), r"wav.scp:2: empty line"),
    "blank line in utt2spk": (lambda f: mutate(f, "utt2spk", "s2-a", "  \ns2-a"), r"utt2spk:3: empty line"),
    "utt2spk with 3 fields": (lambda f: mutate(f, "utt2spk", "s2-a s2", "s2-a s2 x"),
                              r"utt2spk:3: expected 2 fields, got 3"),
    "no final newline": (lambda f: f.update(text=f["text"].rstrip("\n")), r"text:5: last line has no newline"),
    "dos line ending": (lambda f: mutate(f, "utt2dur", "s2-a 3.01\n", "s2-a 3.01\r\n"),
                        r"utt2dur:3: carriage return"),
    "bad utt2num_frames zero": (lambda f: mutate(f, "utt2num_frames", "s2-a 102", "s2-a 0"),
                                r"utt2num_frames:3: value must be positive, got '0'"),
    "bad utt2num_frames float": (lambda f: mutate(f, "utt2num_frames", "s2-a 102", "s2-a 10.5"),
                                 r"utt2num_frames:3: '10.5' is not an integer"),
    "bad utt2dur": (lambda f: mutate(f, "utt2dur", "s1-b 2.01", "s1-b nan"), r"utt2dur:2: value must be positive"),
    "illegal text symbol": (lambda f: mutate(f, "text", "s2-b hello", "s2-b <s> hello"),
                            r"text:4: illegal symbol '<s>'"),
    "non-printable text": (lambda f: mutate(f, "text", "s2-b hello", "s2-b hel\x07lo"),
                           r"text:4: non-printable character"),
    "bad gender": (lambda f: mutate(f, "spk2gender", "s2 f", "s2 x"), r"spk2gender:2: gender must be 'm' or 'f'"),
    "cmvn speaker missing": (lambda f: mutate(f, "cmvn.scp", "s3 /feats/cmvn.ark:2\n", ""),
                             r"cmvn.scp: missing speaker 's3' \(listed at \S+/spk2utt:3\)"),
    "tilde in wav.scp": (lambda f: mutate(f, "wav.scp", "s2-a /corpus", "s2-a ~/corpus"),
                         r"wav.scp:3: do not use tilde"),
    "speaker not a prefix": (lambda f: f.update(utt2spk=f["utt2spk"].replace("s1-a s1", "s1-a s9"),
                                                spk2utt=f["spk2utt"].replace("s1 s1-a s1-b", "s1 s1-b")
                                                + "s9 s1-a\n",
                                                spk2gender=f["spk2gender"] + "s9 m\n",
                                                **{"cmvn.scp": f["cmvn.scp"] + "s9 /feats/cmvn.ark:9\n"}),
                             r"utt2spk:2: speaker 's1' comes after speaker 's9'"),
}

SEGMENTS_MALFORMED = {
    "segment end before start": (lambda f: mutate(f, "segments", "s1-b rec1 1 2.5", "s1-b rec1 2.5 1"),
                                 r"segments:2: end time 1 is not after start time 2.5"),
    "segment with 3 fields": (lambda f: mutate(f, "segments", "s1-a rec1 0 1.5", "s1-a rec1 0"),
                              r"segments:1: expected 4 fields, got 3"),
    "segment start not a number": (lambda f: mutate(f, "segments", "s1-a rec1 0 1.5", "s1-a rec1 x 1.5"),
                                   r"segments:1: start and end times must be numbers"),
    "segment recording not in wav.scp": (lambda f: mutate(f, "segments", "s3-a rec3", "s3-a rec4"),
                                         r"wav.scp: missing recording 'rec4' \(listed at \S+/segments:5\)"),
    "recording without segments": (lambda f: mutate(f, "wav.scp", "rec3 /corpus/rec3.wav\n",
                                                    "rec3 /corpus/rec3.wav\nrec5 /corpus/rec5.wav\n"),
                                   r"wav.scp:4: recording 'rec5' is not in segments"),
    "reco2dur missing recording": (lambda f: mutate(f, "reco2dur", "rec2 60.0\n", ""),
                                   r"reco2dur: missing recording 'rec2' \(listed at \S+/segments:3\)"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_dir_fails_naming_file_and_line(tmp_path, capsys, case):
    # The entry point in-process (the shell wrapper only forwards options; tested below).
    files = good_files()
    change, message = MALFORMED[case]
    change(files)
    data = make_dir(tmp_path / "d", files)
    with pytest.raises(SystemExit) as exit_info:
        validate_bin.main([data])
    assert exit_info.value.code == 1
    out = capsys.readouterr()
    assert "Successfully" not in out.out
    assert any(re.search(message, line) for line in out.err.splitlines()), out.err
    with pytest.raises(DataDirError):
        validate_data_dir(data, need_feats=True, need_wav=True, need_text=True)


@pytest.mark.parametrize("case", sorted(SEGMENTS_MALFORMED))
def test_malformed_segments_fail_naming_file_and_line(tmp_path, case):
    files = segmented_files()
    change, message = SEGMENTS_MALFORMED[case]
    change(files)
    data = make_dir(tmp_path / "d", files)
    report = check_data_dir(data)
    assert not report.ok
    assert any(re.search(message, str(p)) for p in report.problems), report.problems


def test_shell_wrapper_fails_naming_file_and_line(tmp_path):
    files = segmented_files()
    for case in ("bad utt2num_frames zero", "missing feats entry"):
        MALFORMED[case][0](files)
    SEGMENTS_MALFORMED["segment end before start"][0](files)
    proc = validate(make_dir(tmp_path / "d", files))
    assert proc.returncode == 1
    assert "Successfully" not in proc.stdout
    for message in (MALFORMED["bad utt2num_frames zero"][1], MALFORMED["missing feats entry"][1],
                    SEGMENTS_MALFORMED["segment end before start"][1]):
        assert re.search(message, proc.stderr), proc.stderr


def test_no_spk_sort_accepts_non_prefix_speakers(tmp_path):
    files = good_files()
    MALFORMED["speaker not a prefix"][0](files)
    data = make_dir(tmp_path / "d", files)
    assert validate(data).returncode == 1
    validate(data, "--no-spk-sort", check=True)


def test_segments_without_wav_scp(tmp_path):
    files = segmented_files()
    del files["wav.scp"]
    data = make_dir(tmp_path / "d", files)
    report = check_data_dir(data)
    assert any("segments file exists but there is no wav.scp" in str(p) for p in report.problems)


def test_first_problem_raised_with_count(tmp_path):
    files = good_files()
    files["feats.scp"] = files["feats.scp"].replace("s1-b /feats/raw.ark:13\n", "").replace("s2-b", "s2-c")
    data = make_dir(tmp_path / "d", files)
    with pytest.raises(DataDirError, match=r"feats.scp: missing utterance 's1-b' .* \(and 2 more problems"):
        validate_data_dir(data)


def test_problems_per_check_are_capped(tmp_path):
    files = good_files()
    files["utt2lang"] = "".join(f"x{i:03d} en\n" for i in range(50))
    report = check_data_dir(make_dir(tmp_path / "d", files))
    assert report.num_problems == 55  # 5 missing + 50 unknown
    assert len(report.problems) == 5


def test_one_speaker_is_a_warning(tmp_path):
    data = make_dir(tmp_path / "d", {"utt2spk": "s1-a s1\ns1-b s1\n", "spk2utt": "s1 s1-a s1-b\n"})
    report = check_data_dir(data)
    assert report.ok and "only one speaker" in report.warnings[0]


def test_missing_dir_and_utt2spk(tmp_path):
    proc = validate(str(tmp_path / "nope"))
    assert proc.returncode == 1 and "no such data directory" in proc.stderr
    data = make_dir(tmp_path / "d", {"spk2utt": "s1 s1-a\n"})
    proc = validate(data, "--no-text", "--no-wav", "--no-feats")
    assert proc.returncode == 1 and f"{data}/utt2spk: no such file" in proc.stderr


def test_usage_and_unknown_option():
    assert run_script(["utils/validate_data_dir.sh", "--help"]).returncode == 0
    proc = run_script(["utils/validate_data_dir.sh", "--bogus", "x"], check=False)
    assert proc.returncode == 1 and "unknown option --bogus" in proc.stderr
