"""Data-directory operations with the semantics of Kaldi's utils/: fix, subset, split, combine, copy.

Every keyed table of a data dir is carried along (see ``validate.file_spec``
for which files are per-utterance, per-speaker or per-recording): an
operation chooses utterances, and each table keeps the entries of those
utterances, of their speakers, and of their recordings. utt2spk is primary;
spk2utt is always rebuilt from it. Lines keep their text after the key
(wav.scp commands, transcripts); outputs are sorted in C-locale order and
each file is written atomically.

Functions return a list of human-readable messages (what was kept, filtered,
combined) and raise DataDirError (file:line) on bad input.
"""

import bisect
import contextlib
import fcntl
import itertools
import os
import random
import shutil

from pyspk.data.datadir import (DataDirError, c_sort_key, c_sorted, format_table, gc_paused, iter_lines, read_text,
                                write_table)
from pyspk.data.validate import FileSpec, file_spec, table_files

# Files copied verbatim by copy_data_dir (as Kaldi's).
_VERBATIM_FILES = ("frame_shift", "stm", "glm", "ctm")


def _read_rows(path, spec, lenient):
    """Read ``{key: rest-of-line}``; strict: raise on a bad line; lenient: drop it (keeping the first of duplicates).

    Returns ``(rows, notes)`` where notes describe what a lenient read dropped.
    """
    text = read_text(path)
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    parts = [line.split(None, 1) for line in lines]
    if spec.max_fields or spec.min_fields > 2:
        counts = [len(line.split()) for line in lines]
    else:
        counts = list(map(len, parts))  # 0, 1 or 2: enough to check a minimum of 1 or 2 fields
    keys = [p[0] if p else "" for p in parts]
    check = None
    if lenient and spec.check_value is not None:
        values = [p[1] if len(p) == 2 else "" for p in parts]
        if spec.all_good is None or not spec.all_good(values):
            check = spec.check_value
    if not lines:
        return {}, []
    if (min(counts) >= max(spec.min_fields, 1) and (not spec.max_fields or max(counts) <= spec.max_fields)
            and check is None and len(set(keys)) == len(keys)):  # a clean file: no line-by-line pass
        if min(counts) == 2 and not _has_trailing_space(text):
            return dict(parts), []
        return dict(zip(keys, [p[1].rstrip() if len(p) == 2 else "" for p in parts])), []
    rows = {}
    dropped = {"empty lines": 0, "duplicate keys": 0, "malformed lines": 0}
    for lineno, (line, p, n) in enumerate(zip(lines, parts, counts), 1):
        if not p:
            if not lenient:
                raise DataDirError(path, lineno, "empty line")
            dropped["empty lines"] += 1
            continue
        if p[0] in rows:
            if not lenient:
                raise DataDirError(path, lineno, f"duplicate key '{p[0]}'")
            dropped["duplicate keys"] += 1
            continue
        error = None
        if n < spec.min_fields or (spec.max_fields and n > spec.max_fields):
            error = f"expected {spec.field_count()} fields, got {n}"
        elif check is not None:
            error = check(line.split())
        if error:
            if not lenient:
                raise DataDirError(path, lineno, error)
            dropped["malformed lines"] += 1
            continue
        rows[p[0]] = p[1].rstrip() if len(p) == 2 else ""
    notes = [f"{n} {what[:-1] if n == 1 else what}" for what, n in dropped.items() if n]
    return rows, notes


def _has_trailing_space(text):
    return "\r" in text or " \n" in text or "\t\n" in text or text[-1:].isspace() and text[-1:] != "\n"


class DataTables:
    """The keyed tables of a data dir in memory: ``tables[name] = {key: rest}``, ``kinds[name]`` in utt/spk/reco.

    ``extra_files`` maps further file names to a kind ("utt" or "spk"); those
    missing from the directory are skipped. With ``lenient``, bad lines are
    dropped (and described in ``notes``) instead of raising.
    """

    def __init__(self, path, lenient=False, extra_files=None):
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise DataDirError(self.path, 0, "no such data directory")
        if not os.path.isfile(os.path.join(self.path, "utt2spk")):
            raise DataDirError(os.path.join(self.path, "utt2spk"), 0, "no such file")
        specs = {"utt2spk": file_spec("utt2spk")}
        specs.update((name, file_spec(name)) for name in table_files(self.path))
        for name, kind in (extra_files or {}).items():
            if os.path.isfile(os.path.join(self.path, name)) and name not in ("utt2spk", "spk2utt"):
                specs.setdefault(name, FileSpec(kind, 2))
        self.has_segments = "segments" in specs
        self.tables, self.kinds, self.notes = {}, {}, []
        for name, spec in specs.items():
            rows, notes = _read_rows(os.path.join(self.path, name), spec, lenient)
            self.tables[name] = rows
            self.kinds[name] = "utt" if spec.kind == "reco" and not self.has_segments else spec.kind
            if notes:
                self.notes.append(f"{name}: dropped {', '.join(notes)}")
        self.utt2spk = {utt: rest.split()[0] for utt, rest in self.tables["utt2spk"].items()}

    def utts(self):
        """Utterance ids in C-sorted order."""
        return c_sorted(self.utt2spk)

    def spk2utt(self):
        """Speaker -> sorted utterances, speakers in order of first appearance in sorted utt2spk."""
        spk2utt = {}
        for utt in self.utts():
            spk2utt.setdefault(self.utt2spk[utt], []).append(utt)
        return spk2utt

    def recording(self, utt):
        return self.tables["segments"][utt].split(None, 1)[0] if self.has_segments else utt

    def _recordings(self, utts):
        if not self.has_segments:
            return utts
        segments = self.tables["segments"]
        return {segments[u].split(None, 1)[0] for u in utts}

    def select(self, utts, utt_map=None, spk_map=None):
        """Tables restricted to ``utts``, their speakers and recordings; keys renamed by the optional maps."""
        utts = set(utts)
        if len(utts) == len(self.utt2spk):
            speakers = set(self.utt2spk.values())
        else:
            speakers = set(map(self.utt2spk.__getitem__, utts))
        wanted = {"utt": utts, "spk": speakers, "reco": self._recordings(utts)}
        rename = {"utt": utt_map, "spk": spk_map, "reco": None}
        selected = {}
        for name, rows in self.tables.items():
            keep, new_key = wanted[self.kinds[name]], rename[self.kinds[name]]
            everything = rows.keys() <= keep
            keys = rows.keys() if everything else rows.keys() & keep
            if new_key:
                selected[name] = dict(zip(map(new_key, keys), map(rows.__getitem__, keys)))
            else:
                selected[name] = rows if everything else dict(zip(keys, map(rows.__getitem__, keys)))
        if spk_map:
            selected["utt2spk"] = {utt: spk_map(spk) for utt, spk in selected["utt2spk"].items()}
        return selected

    def partition(self, parts):
        """``select`` for each list of utterances in ``parts`` (a speaker or recording goes to every part using it)."""
        utt_part = {u: i for i, utts in enumerate(parts) for u in utts}
        owners = {"spk": {}, "reco": {}}
        for spk, i in {(self.utt2spk[u], i) for u, i in utt_part.items()}:
            owners["spk"].setdefault(spk, []).append(i)
        if self.has_segments:
            segments = self.tables["segments"]
            for reco, i in {(segments[u].split(None, 1)[0], i) for u, i in utt_part.items()}:
                owners["reco"].setdefault(reco, []).append(i)
        selected = [{} for _ in parts]
        for name, rows in self.tables.items():
            kind = self.kinds[name]
            outs = [{} for _ in parts]
            if kind == "utt":
                for key, value in rows.items():
                    i = utt_part.get(key)
                    if i is not None:
                        outs[i][key] = value
            else:
                owner = owners[kind]
                for key, value in rows.items():
                    for i in owner.get(key, ()):
                        outs[i][key] = value
            for tables, out in zip(selected, outs):
                tables[name] = out
        return selected


def _spk2utt_rows(utt2spk_rows):
    spk2utt = {}
    for utt in c_sorted(utt2spk_rows):
        spk2utt.setdefault(utt2spk_rows[utt].split()[0], []).append(utt)
    return {spk: " ".join(utts) for spk, utts in spk2utt.items()}


def _is_data_file(name):
    return name == "spk2utt" or name == "utt2spk" or file_spec(name) is not None


def _set_aside_stale(dest, written, messages):
    """Move data files of ``dest`` that this operation did not write into ``dest/.backup``."""
    for name in sorted(os.listdir(dest)):
        path = os.path.join(dest, name)
        if name not in written and os.path.isfile(path) and _is_data_file(name):
            os.makedirs(os.path.join(dest, ".backup"), exist_ok=True)
            os.replace(path, os.path.join(dest, ".backup", name))
            messages.append(f"moved stale {path} to {dest}/.backup/")


def _write_tables(dest, selected):
    """Write ``selected`` tables and the derived spk2utt into ``dest``; returns the names written."""
    os.makedirs(dest, exist_ok=True)
    for name, rows in selected.items():
        write_table(os.path.join(dest, name), rows)
    write_table(os.path.join(dest, "spk2utt"), _spk2utt_rows(selected["utt2spk"]))
    return set(selected) | {"spk2utt"}


def _check_different(src, dest):
    if os.path.exists(dest) and os.path.samefile(src, dest):
        raise DataDirError(dest, 0, f"destination is the source directory {src}")


def _speaker_order_warning(utt2spk_rows, path):
    speakers = [utt2spk_rows[utt].split()[0] for utt in c_sorted(utt2spk_rows)]
    keys = speakers if all(map(str.isascii, speakers)) else [c_sort_key(s) for s in speakers]
    if all(a <= b for a, b in zip(keys, keys[1:])):
        return None
    i = next(i for i in range(1, len(keys)) if keys[i] < keys[i - 1])
    return (f"warning: {path}/utt2spk is not sorted by speaker ('{speakers[i]}' after '{speakers[i - 1]}'), which "
            "no fix can change: Kaldi's validate_data_dir.sh rejects this dir; make speaker ids prefixes of "
            "utterance ids (or validate with --no-spk-sort)")


# ----------------------------------------------------------------------------- fix

@gc_paused()
def fix_data_dir(path, utt_extra_files=(), spk_extra_files=()):
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
    by_kind = {"utt": [], "spk": [], "reco": []}
    for name, kind in data.kinds.items():
        by_kind[kind].append(data.tables[name])
    speakers = set(data.utt2spk.values())
    for rows in by_kind["spk"]:
        speakers &= rows.keys()
    recordings = None
    if data.has_segments:
        recordings = {rest.split()[0] for rest in data.tables["segments"].values()}
        for rows in by_kind["reco"]:
            recordings &= rows.keys()
    utts = set(data.utt2spk)
    for rows in by_kind["utt"]:
        utts &= rows.keys()
    if len(speakers) < len(set(data.utt2spk.values())):
        utts = {u for u in utts if data.utt2spk[u] in speakers}
    if recordings is not None:
        utts = {u for u in utts if data.recording(u) in recordings}
    if not utts:
        raise DataDirError(path, 0, "no utterances remained: not proceeding further")

    selected = data.select(utts)
    selected["spk2utt"] = _spk2utt_rows(selected["utt2spk"])
    backup = os.path.join(path, ".backup")
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


def choose_utterances(data, mode, num=None, id_list=None, seed=123):
    """Utterances of DataTables ``data`` picked like Kaldi's subset_data_dir.sh.

    ``mode``: "even" (``num`` evenly spaced), "first", "last", "shortest" (by utt2dur or
    utt2num_frames), "per_spk" (``num`` evenly spaced per speaker), "speakers" (random whole
    speakers, seeded, until ``num`` utterances), "utt_list" / "spk_list" (ids read from the
    first field of each line of file ``id_list``).
    """
    utts = data.utts()
    if mode in ("even", "first", "last", "shortest", "per_spk", "speakers") and (num is None or num <= 0):
        raise ValueError(f"number of utterances must be a positive integer, got {num}")
    if mode in ("even", "first", "last", "shortest") and num > len(utts):
        raise DataDirError(os.path.join(data.path, "utt2spk"), 0,
                           f"cannot subset to {num} utterances: it has only {len(utts)}")
    if mode == "even":
        return [utts[i] for i in _evenly_spaced(len(utts), num)]
    if mode == "first":
        return utts[:num]
    if mode == "last":
        return utts[len(utts) - num:]
    if mode == "shortest":
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
    if mode == "per_spk":
        chosen = []
        for spk_utts in data.spk2utt().values():
            step = max(1, len(spk_utts) // num)
            chosen.extend(spk_utts[::step][:num])
        return chosen
    if mode == "speakers":
        spk2utt = data.spk2utt()
        speakers = list(spk2utt)
        random.Random(seed).shuffle(speakers)
        chosen = []
        for spk in speakers:
            if len(chosen) >= num:
                break
            chosen.extend(spk2utt[spk])
        return chosen
    if mode == "utt_list":
        return [u for u in _read_id_list(id_list) if u in data.utt2spk]
    if mode == "spk_list":
        wanted = set(_read_id_list(id_list))
        return [u for u in utts if data.utt2spk[u] in wanted]
    raise ValueError(f"unknown subset mode '{mode}'")


@gc_paused()
def subset_data_dir(src, dest, mode="even", num=None, id_list=None, seed=123):
    """Write into ``dest`` the part of data dir ``src`` chosen by ``choose_utterances``."""
    src, dest = os.fspath(src), os.fspath(dest)
    _check_different(src, dest)
    data = DataTables(src)
    utts = choose_utterances(data, mode, num, id_list, seed)
    if not utts:
        raise DataDirError(src, 0, "no utterances selected")
    written = _write_tables(dest, data.select(utts))
    messages = []
    _set_aside_stale(dest, written, messages)
    messages.append(f"reducing #utt from {len(data.utt2spk)} to {len(set(utts))}")
    return messages


# ----------------------------------------------------------------------------- split

def _balanced_cuts(counts, num_parts):
    """End positions (exclusive) of ``num_parts`` contiguous, non-empty groups of ``counts`` with near-equal sums."""
    cum = list(itertools.accumulate(counts))
    n, total = len(cum), cum[-1]
    ends = []
    previous = 0
    for k in range(1, num_parts):
        target = total * k / num_parts
        after = bisect.bisect_left(cum, target)  # the first group end whose sum reaches the target
        before_sum = cum[after - 1] if after > 0 else 0
        cut = after + 1 if cum[after] - target <= target - before_sum else after
        previous = min(max(cut, previous + 1), n - (num_parts - k))
        ends.append(previous)
    return ends + [n]


def split_dir_name(path, num_splits, per_utt=False):
    return os.path.join(os.fspath(path), f"split{num_splits}{'utt' if per_utt else ''}")


def _split_up_to_date(path, split_root, num_splits):
    sources = [n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n)) and _is_data_file(n)]
    allowed = set(sources) | {"spk2utt"}  # always written, even when the source lacks it
    for i in range(1, num_splits + 1):
        part = os.path.join(split_root, str(i))
        if not os.path.isdir(part):
            return False
        for name in sources:
            target = os.path.join(part, name)
            if not os.path.isfile(target) or os.path.getmtime(target) < os.path.getmtime(os.path.join(path, name)):
                return False
        if any(_is_data_file(n) and n not in allowed for n in os.listdir(part)):
            return False
    return True


@contextlib.contextmanager
def _split_lock(path):
    """Serialise concurrent splits of one directory (without a lock when the directory is read-only)."""
    try:
        handle = open(os.path.join(path, ".split_lock"), "a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@gc_paused()
def split_data_dir(path, num_splits, per_utt=False):
    """Kaldi's split_data.sh: ``path/split<N>[utt]/{1..N}``; whole speakers per part unless ``per_utt``.

    Parts are contiguous in sorted order (utterances, or speakers by first utterance) with
    near-equal utterance counts. Does nothing when the parts are newer than the sources.
    Returns ``(split_root, messages)``.
    """
    path = os.fspath(path)
    if num_splits < 1:
        raise ValueError(f"number of splits must be positive, got {num_splits}")
    split_root = split_dir_name(path, num_splits, per_utt)
    with _split_lock(path):
        if _split_up_to_date(path, split_root, num_splits):
            return split_root, []
        data = DataTables(path)
        messages = []
        for name in ("feats.scp", "text"):
            if name in data.tables and len(data.tables[name]) != len(data.utt2spk):
                messages.append(f"warning: #lines of (utt2spk, {name}) is ({len(data.utt2spk)}, "
                                f"{len(data.tables[name])}); you can use utils/fix_data_dir.sh {path} to fix this")
        if per_utt:
            groups = [[u] for u in data.utts()]
            unit = "utterances"
        else:
            groups = list(data.spk2utt().values())
            unit = "speakers"
        if len(groups) < num_splits:
            raise DataDirError(os.path.join(path, "utt2spk"), 0,
                               f"cannot split {len(groups)} {unit} into {num_splits} parts"
                               + ("" if per_utt else " (use --per-utt to split speakers)"))
        ends = _balanced_cuts([len(g) for g in groups], num_splits)
        starts = [0] + ends[:-1]
        parts = [[u for group in groups[start:end] for u in group] for start, end in zip(starts, ends)]
        for i, selected in enumerate(data.partition(parts), 1):
            part = os.path.join(split_root, str(i))
            written = _write_tables(part, selected)
            for name in os.listdir(part):
                if name not in written and _is_data_file(name):
                    os.remove(os.path.join(part, name))
    return split_root, messages


# ----------------------------------------------------------------------------- combine

@gc_paused()
def combine_data_dirs(dest, srcs, extra_files=(), skip_fix=False):
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
        _check_different(src, dest)
    extra = {name: "utt" for name in extra_files}
    datas = [DataTables(src, extra_files=extra) for src in srcs]
    messages = []
    names = sorted(set().union(*(d.tables for d in datas)), key=c_sort_key)
    combined = {}
    for name in names:
        have = [name in d.tables for d in datas]
        if not all(have) and name not in ("utt2uniq", "segments"):
            messages.append(f"not combining {name}: not present in all source directories")
            continue
        rows, origin = {}, {}
        for data in datas:
            part = data.tables.get(name)
            if part is None:
                part = _stand_in(data, name)
            kind = data.kinds.get(name, "utt")
            for key, value in part.items():
                if key in rows and (kind == "utt" or rows[key] != value):
                    what = {"utt": "utterance", "spk": "speaker", "reco": "recording"}[kind]
                    raise DataDirError(os.path.join(data.path, name), 0,
                                       f"{what} '{key}' is also in {origin[key]}/{name}"
                                       + ("" if kind == "utt" else " with a different value"))
                rows[key] = value
                origin.setdefault(key, data.path)
        combined[name] = rows
        messages.append(f"combined {name}")
    os.makedirs(dest, exist_ok=True)
    written = _write_tables(dest, combined)
    _set_aside_stale(dest, written, messages)
    if not skip_fix:
        messages.extend(fix_data_dir(dest))
    return messages


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
def copy_data_dir(src, dest, utt_prefix="", utt_suffix="", spk_prefix="", spk_suffix=""):
    """Kaldi's copy_data_dir.sh: copy ``src`` to ``dest``, renaming utterances and speakers.

    Values (wav.scp, feats.scp ...) are kept. With a new utterance name and no utt2uniq in
    ``src``, utt2uniq maps new ids to the old ones. Data files of ``dest`` that ``src`` lacks
    are moved to ``dest/.backup``.
    """
    src, dest = os.fspath(src), os.fspath(dest)
    _check_different(src, dest)
    data = DataTables(src)
    rename_utts = bool(utt_prefix or utt_suffix)
    utt_map = (lambda u: f"{utt_prefix}{u}{utt_suffix}") if rename_utts else None
    spk_map = (lambda s: f"{spk_prefix}{s}{spk_suffix}") if (spk_prefix or spk_suffix) else None
    selected = data.select(data.utt2spk, utt_map, spk_map)
    if rename_utts and "utt2uniq" not in data.tables:
        selected["utt2uniq"] = {utt_map(u): u for u in data.utt2spk}
    written = _write_tables(dest, selected)
    for name in _VERBATIM_FILES:
        if os.path.isfile(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(dest, name))
            written.add(name)
    messages = []
    _set_aside_stale(dest, written, messages)
    messages.append(f"copied data from {src} to {dest}")
    return messages
