"""Pseudo-label selection and the pseudo-labelled Kaldi data directory.

Selection keeps, in every cluster, the ``keep_fraction`` of its members
closest to the centroid (at least one), then drops clusters left with fewer
than ``min_cluster_size`` members: noisy utterances at cluster borders and
tiny clusters would teach the network wrong or useless classes.

The output data dir follows Kaldi's rules: cluster ids are the speaker ids
(``pl0001`` ...) and, because Kaldi requires utt2spk sorted by utterance to be
sorted by speaker too (validate_data_dir.sh, fix_data_dir.sh, split_data.sh;
``--no-spk-sort`` does not lift the spk2utt order check), every utterance id
gets its cluster id as prefix: ``pl0001-<utt>``. Per-utterance files of the
source (feats.scp, vad.scp, utt2num_frames, utt2dur, wav.scp, segments ...)
are carried over under the new ids with their values unchanged, so
``feats.scp`` still points at the source's archives. ``utt2uniq`` maps every
new id back to the source utterance (Kaldi's meaning: the underlying
original), ``utt2dist`` holds the distance to the centroid. Per-speaker files
are not carried (the speakers are new).
"""

import logging
import os
import shutil
import tempfile

import numpy as np

from pyspk.data.datadir import DataDir, DataDirError, c_sort_key, read_scp, write_table
from pyspk.data.validate import file_spec, table_files, validate_data_dir
from pyspk.fileutil import atomic_open

logger = logging.getLogger(__name__)

# Copied as they are (not keyed tables).
VERBATIM_FILES = ("frame_shift",)


def select_confident(labels, distances, keep_fraction, min_cluster_size):
    """Boolean mask of the utterances to keep.

    Per cluster of size n, the ``ceil(keep_fraction * n)`` members nearest to
    the centroid are kept (ties: the earlier index first); clusters with fewer
    kept members than ``min_cluster_size`` are dropped entirely.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep fraction must be in (0, 1], got {keep_fraction}")
    if min_cluster_size < 1:
        raise ValueError(f"minimum cluster size must be at least 1, got {min_cluster_size}")
    labels = np.asarray(labels, dtype=np.int64)
    distances = np.asarray(distances)
    sizes = np.bincount(labels)
    # The small epsilon keeps e.g. 0.7 * 10 = 7.000000000000001 from rounding up to 8.
    n_keep = np.ceil(keep_fraction * sizes - 1e-9).astype(np.int64)
    order = np.lexsort((np.arange(len(labels)), distances, labels))
    sorted_labels = labels[order]
    first = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.arange(len(labels)) - first
    keep = np.zeros(len(labels), dtype=bool)
    keep[order] = rank < n_keep[sorted_labels]
    keep &= (n_keep >= min_cluster_size)[labels]
    return keep


def cluster_names(n_clusters, prefix="pl"):
    """Kaldi speaker ids for clusters 0..k-1: ``pl0001`` ... (fixed width, so C-order = numeric order)."""
    width = max(4, len(str(n_clusters)))
    return np.array([f"{prefix}{c + 1:0{width}d}" for c in range(n_clusters)])


def usable_utterances(src_dir, embedding_keys):
    """Utterances that have an embedding and an entry in every per-utterance file of ``src_dir``.

    Returns ``(utts, notes)``: the utterances in embedding order and
    human-readable notes on what was left out and why.
    """
    src = DataDir(src_dir)
    utt2spk = src.utt2spk()
    notes = []
    in_data = [utt for utt in embedding_keys if utt in utt2spk]
    if len(in_data) < len(embedding_keys):
        notes.append(f"{len(embedding_keys) - len(in_data)} embeddings have no utterance in {src.file('utt2spk')}")
    missing = len(utt2spk) - len(in_data)
    if missing:
        notes.append(f"{missing} utterances of {src.file('utt2spk')} have no embedding")
    for name, table in _per_utt_tables(src).items():
        kept = [utt for utt in in_data if utt in table]
        if len(kept) < len(in_data):
            notes.append(f"{len(in_data) - len(kept)} utterances have no entry in {src.file(name)}")
        in_data = kept
    return in_data, notes


def _per_utt_tables(src):
    """``{name: {utt: value}}`` for the source's per-utterance tables (wav.scp only without segments)."""
    has_segments = src.has("segments")
    tables = {}
    for name in table_files(src.path):
        kind = file_spec(name).kind
        if kind == "utt" or (kind == "reco" and not has_segments):
            tables[name] = read_scp(src.file(name))
    return tables


def _recording_tables(src):
    """``{name: {recording: value}}`` for wav.scp / reco2* when the source has segments."""
    if not src.has("segments"):
        return {}
    return {name: read_scp(src.file(name)) for name in table_files(src.path) if file_spec(name).kind == "reco"}


def build_tables(src_dir, utts, speakers, distances):
    """The tables of the pseudo-label data dir, ``{file name: {key: value}}``.

    ``utts``: source utterance ids to write; ``speakers``: their cluster ids;
    ``distances``: their distances to the centroid.
    """
    src = DataDir(src_dir)
    new_ids = [f"{spk}-{utt}" for utt, spk in zip(utts, speakers)]
    tables = {name: {new: table[utt] for new, utt in zip(new_ids, utts)}
              for name, table in _per_utt_tables(src).items()}
    tables.setdefault("utt2uniq", dict(zip(new_ids, utts)))
    tables["utt2spk"] = dict(zip(new_ids, speakers))
    tables["utt2dist"] = {new: f"{dist:.6f}" for new, dist in zip(new_ids, distances)}
    if "segments" in tables:
        recordings = {value.split()[0] for value in tables["segments"].values()}
        for name, table in _recording_tables(src).items():
            tables[name] = {reco: value for reco, value in table.items() if reco in recordings}
    spk2utt = {}
    for new in sorted(new_ids, key=c_sort_key):
        spk2utt.setdefault(tables["utt2spk"][new], []).append(new)
    tables["spk2utt"] = spk2utt
    return tables


def write_pseudo_label_dir(src_dir, dest_dir, utts, speakers, distances):
    """Write the pseudo-label data dir ``dest_dir`` whole, then validate it, then put it in place.

    The directory is built under a temporary name next to ``dest_dir`` and
    replaces it only once complete and valid, so a failed or killed run
    leaves the previous ``dest_dir`` (if any) untouched.
    """
    src_dir, dest_dir = os.path.normpath(src_dir), os.path.normpath(dest_dir)
    if os.path.exists(dest_dir) and os.path.samefile(src_dir, dest_dir):
        raise DataDirError(dest_dir, 0, "the destination is the source data directory")
    if os.path.isdir(dest_dir) and os.listdir(dest_dir) and not os.path.isfile(os.path.join(dest_dir, "utt2spk")):
        raise DataDirError(dest_dir, 0, "exists and is not a data directory; refusing to replace it")
    tables = build_tables(src_dir, utts, speakers, distances)
    parent = os.path.dirname(os.path.abspath(dest_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dest_dir)}.", dir=parent)
    try:
        for name, table in tables.items():
            write_table(os.path.join(tmp, name), table)
        for name in VERBATIM_FILES:
            if os.path.isfile(os.path.join(src_dir, name)):
                shutil.copyfile(os.path.join(src_dir, name), os.path.join(tmp, name))
        validate_data_dir(tmp)
        if os.path.isdir(dest_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(dest_dir)}.old.", dir=parent)
            os.replace(dest_dir, old)
            os.replace(tmp, dest_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, dest_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tables


def write_assignments(path, utts, speakers, distances, keep):
    """``cluster_assignments.txt``: ``<utt> <cluster> <distance> <kept 0|1>`` for every clustered utterance."""
    order = sorted(range(len(utts)), key=lambda i: c_sort_key(utts[i]))
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{utts[i]} {speakers[i]} {distances[i]:.6f} {int(keep[i])}\n" for i in order)
