"""Data-directory operations with the semantics of Kaldi's utils/: fix, subset, combine, copy.

The tables of a data dir are carried along as ``pyspk.data.tables`` describes;
splitting is in ``pyspk.data.split``. Functions return a list of human-readable
messages (what was kept, filtered, combined) and raise DataDirError (file:line)
on bad input.
"""

import itertools
import os
import random
import shutil
from collections.abc import Iterable, Sequence

from pyspk.data.datadir import (
    DataDirError,
    c_sort_key,
    c_sorted,
    format_table,
    gc_paused,
    iter_lines,
    read_text,
    write_table,
)
from pyspk.data.tables import (
    DataTables,
    check_different,
    set_aside_stale,
    spk2utt_rows,
    write_tables,
)
from pyspk.fileutil import PathLike

# Files copied verbatim by copy_data_dir (as Kaldi's).
_VERBATIM_FILES = ("frame_shift", "stm", "glm", "ctm")


def _speaker_order_warning(utt2spk_rows, path):
    speakers = [utt2spk_rows[utt].split()[0] for utt in c_sorted(utt2spk_rows)]
    keys = speakers if all(map(str.isascii, speakers)) else [c_sort_key(s) for s in speakers]
    if all(a <= b for a, b in itertools.pairwise(keys)):
        return None
    i = next(i for i in range(1, len(keys)) if keys[i] < keys[i - 1])
    return (f"warning: {path}/utt2spk is not sorted by speaker ('{speakers[i]}' after '{speakers[i - 1]}'), which "
            "no fix can change: Kaldi's validate_data_dir.sh rejects this dir; make speaker ids prefixes of "
            "utterance ids (or validate with --no-spk-sort)")


# ----------------------------------------------------------------------------- fix

def _utterances_in_every_table(data):
    """Utterances in every per-utterance table whose speaker and recording are in every per-speaker and
    per-recording table."""
    by_kind = {"utt": [], "spk": [], "reco": []}
    for name, kind in data.kinds.items():
        by_kind[kind].append(data.tables[name])
    speakers = set(data.utt2spk.values())
    for rows in by_kind["spk"]:
        speakers &= rows.keys()
    utts = set(data.utt2spk)
    for rows in by_kind["utt"]:
        utts &= rows.keys()
    if len(speakers) < len(set(data.utt2spk.values())):
        utts = {u for u in utts if data.utt2spk[u] in speakers}
    if data.has_segments:
        recordings = {rest.split()[0] for rest in data.tables["segments"].values()}
        for rows in by_kind["reco"]:
            recordings &= rows.keys()
        utts = {u for u in utts if data.recording(u) in recordings}
    return utts


def _rewrite_changed(path, selected, backup, messages):
    """Write the tables of ``selected`` that differ from the files in ``path``, backing up the old files."""
    for name, rows in selected.items():
        target = os.path.join(path, name)
        text = format_table(rows)
        old = None
        if os.path.isfile(target):
            with open(target, "rb") as f:
                old = f.read()
        if old == text.encode("utf-8", "surrogateescape"):
            continue
        if old is not None:
            os.makedirs(backup, exist_ok=True)
            shutil.copy2(target, os.path.join(backup, name))
            old_lines = old.count(b"\n") + (0 if old.endswith(b"\n") or not old else 1)
            if old_lines != len(rows):
                messages.append(f"filtered {target} from {old_lines} to {len(rows)} lines")
            else:
                messages.append(f"sorted {target}")
        write_table(target, rows)


@gc_paused()
def fix_data_dir(path: PathLike, utt_extra_files: Iterable[str] = (), spk_extra_files: Iterable[str] = ()) -> list[str]:
    """Kaldi's fix_data_dir.sh: keep the utterances present in every per-utterance file (with their
    speaker in every per-speaker file and their recording in every per-recording file), sort and
    de-duplicate everything, rebuild spk2utt. Changed files are first copied to ``path/.backup``.
    """
    path = os.fspath(path)
    extra = {name: "utt" for name in utt_extra_files}
    extra.update((name, "spk") for name in spk_extra_files)
    # Lines, not parsed entries: a malformed line dropped by the lenient read is an utterance lost.
    total = sum(1 for line in read_text(os.path.join(path, "utt2spk")).split("\n") if line.strip())
    data = DataTables(path, lenient=True, extra_files=extra)
    messages = list(data.notes)
    utts = _utterances_in_every_table(data)
    if not utts:
        raise DataDirError(path, 0, "no utterances remained: not proceeding further")

    selected = data.select(utts)
    selected["spk2utt"] = spk2utt_rows(selected["utt2spk"])
    backup = os.path.join(path, ".backup")
    _rewrite_changed(path, selected, backup, messages)
    if len(utts) == total:
        messages.append(f"kept all {total} utterances.")
    else:
        messages.append(f"kept {len(utts)} utterances out of {total}")
    warning = _speaker_order_warning(selected["utt2spk"], path)
    if warning:
        messages.append(warning)
    messages.append(f"old files are kept in {backup}")
    return messages


# ----------------------------------------------------------------------------- subset

def _evenly_spaced(n_items, n):
    """Indices of ``n`` items spread evenly over ``n_items`` (as Kaldi's subset_scp.pl intends)."""
    return [((2 * i + 1) * n_items) // (2 * n) for i in range(n)]


def _read_id_list(path):
    return [fields[0] for _, fields in iter_lines(path)]


def _shortest(data, utts, num):
    for name in ("utt2dur", "utt2num_frames"):
        if name in data.tables:
            lengths = data.tables[name]
            break
    else:
        raise DataDirError(data.path, 0, "--shortest needs utt2dur or utt2num_frames")
    missing = [u for u in utts if u not in lengths]
    if missing:
        raise DataDirError(os.path.join(data.path, name), 0, f"no length for utterance '{missing[0]}'")
    length = {u: float(lengths[u].split()[0]) for u in utts}
    return sorted(utts, key=length.__getitem__)[:num]  # stable: ties keep sorted order


def _per_speaker(data, num):
    chosen = []
    for spk_utts in data.spk2utt().values():
        step = max(1, len(spk_utts) // num)
        chosen.extend(spk_utts[::step][:num])
    return chosen


def _random_speakers(data, num, seed):
    spk2utt = data.spk2utt()
    speakers = list(spk2utt)
    random.Random(seed).shuffle(speakers)
    chosen = []
    for spk in speakers:
        if len(chosen) >= num:
            break
        chosen.extend(spk2utt[spk])
    return chosen


# How each subset mode taking a number picks ``num`` of the sorted utterances ``utts`` of ``data``.
_PICK_NUMBER = {
    "even": lambda data, utts, num, seed: [utts[i] for i in _evenly_spaced(len(utts), num)],
    "first": lambda data, utts, num, seed: utts[:num],
    "last": lambda data, utts, num, seed: utts[len(utts) - num:],
    "shortest": lambda data, utts, num, seed: _shortest(data, utts, num),
    "per_spk": lambda data, utts, num, seed: _per_speaker(data, num),
    "speakers": lambda data, utts, num, seed: _random_speakers(data, num, seed),
}


def choose_utterances(data: DataTables, mode: str, num: int | None = None, id_list: PathLike | None = None,
                      seed: int = 123) -> list[str]:
    """Utterances of DataTables ``data`` picked like Kaldi's subset_data_dir.sh.

    ``mode``: "even" (``num`` evenly spaced), "first", "last", "shortest" (by utt2dur or
    utt2num_frames), "per_spk" (``num`` evenly spaced per speaker), "speakers" (random whole
    speakers, seeded, until ``num`` utterances), "utt_list" / "spk_list" (ids read from the
    first field of each line of file ``id_list``).
    """
    if mode == "utt_list":
        return [u for u in _read_id_list(id_list) if u in data.utt2spk]
    if mode == "spk_list":
        wanted = set(_read_id_list(id_list))
        return [u for u in data.utts() if data.utt2spk[u] in wanted]
    if mode not in _PICK_NUMBER:
        raise ValueError(f"unknown subset mode '{mode}'")
    if num is None or num <= 0:
        raise ValueError(f"number of utterances must be a positive integer, got {num}")
    utts = data.utts()
    if mode in ("even", "first", "last", "shortest") and num > len(utts):
        raise DataDirError(os.path.join(data.path, "utt2spk"), 0,
                           f"cannot subset to {num} utterances: it has only {len(utts)}")
    return _PICK_NUMBER[mode](data, utts, num, seed)


@gc_paused()
def subset_data_dir(src: PathLike, dest: PathLike, mode: str = "even", num: int | None = None,
                    id_list: PathLike | None = None, seed: int = 123) -> list[str]:
    """Write into ``dest`` the part of data dir ``src`` chosen by ``choose_utterances``."""
    src, dest = os.fspath(src), os.fspath(dest)
    check_different(src, dest)
    data = DataTables(src)
    utts = choose_utterances(data, mode, num, id_list, seed)
    if not utts:
        raise DataDirError(src, 0, "no utterances selected")
    written = write_tables(dest, data.select(utts))
    messages = []
    set_aside_stale(dest, written, messages)
    messages.append(f"reducing #utt from {len(data.utt2spk)} to {len(set(utts))}")
    return messages


# ----------------------------------------------------------------------------- combine

@gc_paused()
def combine_data_dirs(dest: PathLike, srcs: Sequence[PathLike], extra_files: Iterable[str] = (),
                      skip_fix: bool = False) -> list[str]:
    """Kaldi's combine_data.sh: merge data dirs ``srcs`` into ``dest``.

    A file is combined when every source has it, except utt2uniq (identity where missing) and
    segments (whole-utterance segments from utt2dur where missing). A repeated utterance id is an
    error; a speaker or recording id may repeat only with the same line. Unless ``skip_fix``,
    ends with fix_data_dir. ``extra_files`` are further per-utterance files to combine.
    """
    dest = os.fspath(dest)
    if not srcs:
        raise ValueError("no source directories")
    for src in srcs:
        check_different(src, dest)
    messages = []
    combined = _combined_tables(srcs, {name: "utt" for name in extra_files}, messages)
    os.makedirs(dest, exist_ok=True)
    written = write_tables(dest, combined)
    # fix_data_dir reads the directory again: with the tables still held, a VoxCeleb2-sized combination
    # (5.5 M utterances) would need both in memory at once.
    del combined
    set_aside_stale(dest, written, messages)
    if not skip_fix:
        messages.extend(fix_data_dir(dest))
    return messages


def _combined_tables(srcs, extra, messages):
    """The tables of data dirs ``srcs`` merged (see :func:`combine_data_dirs`); notes go to ``messages``."""
    datas = [DataTables(src, extra_files=extra) for src in srcs]
    names = sorted(set().union(*(d.tables for d in datas)), key=c_sort_key)
    combined = {}
    for name in names:
        have = [name in d.tables for d in datas]
        if not all(have) and name not in ("utt2uniq", "segments"):
            messages.append(f"not combining {name}: not present in all source directories")
            continue
        rows = {}
        for i, data in enumerate(datas):
            part = data.tables.get(name)
            if part is None:
                part = _stand_in(data, name)
            kind = data.kinds.get(name, "utt")
            for key, value in part.items():
                if key in rows and (kind == "utt" or rows[key] != value):
                    what = {"utt": "utterance", "spk": "speaker", "reco": "recording"}[kind]
                    first = next(d for d in datas[:i] if key in d.tables.get(name, d.utt2spk))
                    raise DataDirError(os.path.join(data.path, name), 0,
                                       f"{what} '{key}' is also in {first.path}/{name}"
                                       + ("" if kind == "utt" else " with a different value"))
                rows[key] = value
        combined[name] = rows
        messages.append(f"combined {name}")
    return combined


def _stand_in(data, name):
    """utt2uniq or segments for a source without them: identity / whole-utterance segments."""
    if name == "utt2uniq":
        return {utt: utt for utt in data.utt2spk}
    if "utt2dur" not in data.tables:
        raise DataDirError(os.path.join(data.path, "utt2dur"), 0,
                           "other sources have segments; this one needs utt2dur to make them")
    return {utt: f"{utt} 0 {dur.split()[0]}" for utt, dur in data.tables["utt2dur"].items()}


# ----------------------------------------------------------------------------- copy

@gc_paused()
def copy_data_dir(src: PathLike, dest: PathLike, utt_prefix: str = "", utt_suffix: str = "", spk_prefix: str = "",
                  spk_suffix: str = "") -> list[str]:
    """Kaldi's copy_data_dir.sh: copy ``src`` to ``dest``, renaming utterances and speakers.

    Values (wav.scp, feats.scp ...) are kept. With a new utterance name and no utt2uniq in
    ``src``, utt2uniq maps new ids to the old ones. Data files of ``dest`` that ``src`` lacks
    are moved to ``dest/.backup``.
    """
    src, dest = os.fspath(src), os.fspath(dest)
    check_different(src, dest)
    data = DataTables(src)
    rename_utts = bool(utt_prefix or utt_suffix)
    utt_map = (lambda u: f"{utt_prefix}{u}{utt_suffix}") if rename_utts else None
    spk_map = (lambda s: f"{spk_prefix}{s}{spk_suffix}") if (spk_prefix or spk_suffix) else None
    selected = data.select(data.utt2spk, utt_map, spk_map)
    if rename_utts and "utt2uniq" not in data.tables:
        selected["utt2uniq"] = {utt_map(u): u for u in data.utt2spk}
    written = write_tables(dest, selected)
    for name in _VERBATIM_FILES:
        if os.path.isfile(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(dest, name))
            written.add(name)
    messages = []
    set_aside_stale(dest, written, messages)
    messages.append(f"copied data from {src} to {dest}")
    return messages
