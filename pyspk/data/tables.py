"""The keyed tables of a Kaldi data dir in memory, as the data-dir operations (ops, split) use them.

Every keyed table of a data dir is carried along (see ``validate.file_spec``
for which files are per-utterance, per-speaker or per-recording): an
operation chooses utterances, and each table keeps the entries of those
utterances, of their speakers, and of their recordings. utt2spk is primary;
spk2utt is always rebuilt from it. Lines keep their text after the key
(wav.scp commands, transcripts); outputs are sorted in C-locale order and
each file is written atomically.
"""

import os
from collections.abc import Callable, Iterable, Mapping, Sequence

from pyspk.data.datadir import DataDirError, c_sorted, read_text, write_table
from pyspk.data.validate import FileSpec, file_spec, table_files
from pyspk.fileutil import PathLike

Rows = dict[str, str]  # key -> the rest of its line
Tables = dict[str, Rows]  # file name -> rows


def _read_rows(path, spec, lenient):
    """Read ``{key: rest-of-line}``; strict: raise on a bad line; lenient: drop it (keeping the first of duplicates).

    Returns ``(rows, notes)`` where notes describe what a lenient read dropped.
    """
    text = read_text(path)
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if not lines:
        return {}, []
    parts = [line.split(None, 1) for line in lines]
    # Fields per line; len(parts) is 0, 1 or 2: enough to check a minimum of 1 or 2 fields.
    counts = [len(line.split()) for line in lines] if spec.max_fields or spec.min_fields > 2 else list(map(len, parts))
    keys = [p[0] if p else "" for p in parts]
    check = None
    if lenient and spec.check_value is not None:
        values = [p[1] if len(p) == 2 else "" for p in parts]
        if spec.all_good is None or not spec.all_good(values):
            check = spec.check_value
    if (min(counts) >= max(spec.min_fields, 1) and (not spec.max_fields or max(counts) <= spec.max_fields)
            and check is None and len(set(keys)) == len(keys)):  # a clean file: no line-by-line pass
        if min(counts) == 2 and not _has_trailing_space(text):
            return dict(parts), []
        return dict(zip(keys, [p[1].rstrip() if len(p) == 2 else "" for p in parts], strict=True)), []
    return _read_rows_line_by_line(path, spec, lenient, check, lines, parts, counts)


def _read_rows_line_by_line(path, spec, lenient, check, lines, parts, counts):
    """``_read_rows`` for a file with a bad line: raise on it, or (``lenient``) drop it and say so."""
    rows = {}
    dropped = {"empty lines": 0, "duplicate keys": 0, "malformed lines": 0}
    for lineno, (line, p, n) in enumerate(zip(lines, parts, counts, strict=True), 1):
        if not p:
            error, what = "empty line", "empty lines"
        elif p[0] in rows:
            error, what = f"duplicate key '{p[0]}'", "duplicate keys"
        elif n < spec.min_fields or (spec.max_fields and n > spec.max_fields):
            error, what = f"expected {spec.field_count()} fields, got {n}", "malformed lines"
        else:
            error, what = (check(line.split()) if check is not None else None), "malformed lines"
        if error:
            if not lenient:
                raise DataDirError(path, lineno, error)
            dropped[what] += 1
            continue
        rows[p[0]] = p[1].rstrip() if len(p) == 2 else ""
    notes = [f"{n} {what[:-1] if n == 1 else what}" for what, n in dropped.items() if n]
    return rows, notes


def _has_trailing_space(text):
    return "\r" in text or " \n" in text or "\t\n" in text or (text[-1:].isspace() and text[-1:] != "\n")


class DataTables:
    """The keyed tables of a data dir in memory: ``tables[name] = {key: rest}``, ``kinds[name]`` in utt/spk/reco.

    ``extra_files`` maps further file names to a kind ("utt" or "spk"); those
    missing from the directory are skipped. With ``lenient``, bad lines are
    dropped (and described in ``notes``) instead of raising.
    """

    def __init__(self, path: PathLike, lenient: bool = False, extra_files: Mapping[str, str] | None = None):
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
        self.tables: Tables = {}
        self.kinds: dict[str, str] = {}
        self.notes: list[str] = []
        for name, spec in specs.items():
            rows, notes = _read_rows(os.path.join(self.path, name), spec, lenient)
            self.tables[name] = rows
            self.kinds[name] = "utt" if spec.kind == "reco" and not self.has_segments else spec.kind
            if notes:
                self.notes.append(f"{name}: dropped {', '.join(notes)}")
        self.utt2spk = {utt: rest.split()[0] for utt, rest in self.tables["utt2spk"].items()}

    def utts(self) -> list[str]:
        """Utterance ids in C-sorted order."""
        return c_sorted(self.utt2spk)

    def spk2utt(self) -> dict[str, list[str]]:
        """Speaker -> sorted utterances, speakers in order of first appearance in sorted utt2spk."""
        spk2utt = {}
        for utt in self.utts():
            spk2utt.setdefault(self.utt2spk[utt], []).append(utt)
        return spk2utt

    def recording(self, utt: str) -> str:
        """The recording of ``utt`` (the utterance itself without segments)."""
        return self.tables["segments"][utt].split(None, 1)[0] if self.has_segments else utt

    def _recordings(self, utts):
        if not self.has_segments:
            return utts
        segments = self.tables["segments"]
        return {segments[u].split(None, 1)[0] for u in utts}

    def select(self, utts: Iterable[str], utt_map: Callable[[str], str] | None = None,
               spk_map: Callable[[str], str] | None = None) -> Tables:
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
                selected[name] = dict(zip(map(new_key, keys), map(rows.__getitem__, keys), strict=True))
            else:
                selected[name] = rows if everything else dict(zip(keys, map(rows.__getitem__, keys), strict=True))
        if spk_map:
            selected["utt2spk"] = {utt: spk_map(spk) for utt, spk in selected["utt2spk"].items()}
        return selected

    def partition(self, parts: Sequence[Sequence[str]]) -> list[Tables]:
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
            for tables, out in zip(selected, outs, strict=True):
                tables[name] = out
        return selected


def spk2utt_rows(utt2spk_rows: Mapping[str, str]) -> Rows:
    """spk2utt rows (speaker -> space-separated sorted utterances) of utt2spk rows."""
    spk2utt = {}
    for utt in c_sorted(utt2spk_rows):
        spk2utt.setdefault(utt2spk_rows[utt].split()[0], []).append(utt)
    return {spk: " ".join(utts) for spk, utts in spk2utt.items()}


def is_data_file(name: str) -> bool:
    """Whether ``name`` is a keyed table of a data dir (utt2spk, spk2utt, or any file ``file_spec`` knows)."""
    return name in {"spk2utt", "utt2spk"} or file_spec(name) is not None


def set_aside_stale(dest: str, written: Iterable[str], messages: list[str]) -> None:
    """Move data files of ``dest`` that this operation did not write into ``dest/.backup``."""
    written = set(written)
    for name in sorted(os.listdir(dest)):
        path = os.path.join(dest, name)
        if name not in written and os.path.isfile(path) and is_data_file(name):
            os.makedirs(os.path.join(dest, ".backup"), exist_ok=True)
            os.replace(path, os.path.join(dest, ".backup", name))
            messages.append(f"moved stale {path} to {dest}/.backup/")


def write_tables(dest: str, selected: Tables) -> set[str]:
    """Write ``selected`` tables and the derived spk2utt into ``dest``; returns the names written."""
    os.makedirs(dest, exist_ok=True)
    for name, rows in selected.items():
        write_table(os.path.join(dest, name), rows)
    write_table(os.path.join(dest, "spk2utt"), spk2utt_rows(selected["utt2spk"]))
    return set(selected) | {"spk2utt"}


def check_different(src: PathLike, dest: PathLike) -> None:
    """Raise DataDirError when ``dest`` is the directory ``src``."""
    if os.path.exists(dest) and os.path.samefile(src, dest):
        raise DataDirError(dest, 0, f"destination is the source directory {src}")
