"""Pseudo-label selection and the pseudo-labelled Kaldi data directory.

Selection keeps, in every cluster, the ``keep_fraction`` of its members
closest to the centroid (at least one), or the members whose posterior of
their own cluster reaches a threshold (a mixture of spherical Gaussians at
the centres, :func:`cluster_posteriors`); then at most ``max_cluster_size``
of each cluster, the most confident first, and drops clusters left with
fewer than ``min_cluster_size`` members: noisy utterances at cluster borders
and tiny clusters would teach the network wrong or useless classes, and a
few huge clusters (merged speakers) would dominate the classes.

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

With augmented copies (a ``<src>_combined`` dir from steps/augment_data_dir.sh
holding ``<utt>`` and ``<utt>-reverb``, ``<utt>-noise`` ...), a second dir
holds every kept utterance together with its copies, grouped as the trainers
group them (pyspk.train.data.group_copies): a copy gets its clean
utterance's cluster as speaker, the id ``<cluster>-<utt>-<suffix>`` (so the
same rule groups it again), its clean utterance's distance, and as utt2uniq
the clean utterance's utt2uniq value; feats.scp and the other per-utterance
files come from the combined dir.
"""

import logging
import os
import shutil
import tempfile

import numpy as np
import torch

from pyspk.data.datadir import DataDir, DataDirError, c_sort_key, read_scp, write_table
from pyspk.data.validate import file_spec, table_files, validate_data_dir
from pyspk.fileutil import atomic_open
from pyspk.train.data import AUG_SUFFIXES, group_copies

logger = logging.getLogger(__name__)

# Copied as they are (not keyed tables).
VERBATIM_FILES = ("frame_shift",)
# Per-utterance files whose values are utterance ids: meaningless once the utterances are renamed.
NOT_CARRIED = ("utt2copies",)


def _rank_in_cluster(labels, badness):
    """0-based rank of each point within its cluster by increasing ``badness`` (ties: earlier index first)."""
    order = np.lexsort((np.arange(len(labels)), badness, labels))
    sorted_labels = labels[order]
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels)) - np.searchsorted(sorted_labels, sorted_labels, side="left")
    return rank


def _check_sizes(min_cluster_size, max_cluster_size):
    if min_cluster_size < 1:
        raise ValueError(f"minimum cluster size must be at least 1, got {min_cluster_size}")
    if max_cluster_size and max_cluster_size < min_cluster_size:
        raise ValueError(f"maximum cluster size ({max_cluster_size}) is below the minimum ({min_cluster_size})")


def _limit_sizes(labels, keep, rank, min_cluster_size, max_cluster_size):
    """``keep`` with at most ``max_cluster_size`` (0: any) per cluster, best ranks first, and clusters
    left with fewer than ``min_cluster_size`` dropped."""
    if max_cluster_size:
        # Rank among the kept members only.
        kept_rank = _rank_in_cluster(labels, np.where(keep, rank, len(labels) + rank))
        keep = keep & (kept_rank < max_cluster_size)
    kept_sizes = np.bincount(labels[keep], minlength=int(labels.max()) + 1)
    return keep & (kept_sizes >= min_cluster_size)[labels]


def select_confident(labels, distances, keep_fraction, min_cluster_size, max_cluster_size=0):
    """Boolean mask of the utterances to keep, nearest to their centroid first.

    Per cluster of size n, the ``ceil(keep_fraction * n)`` members nearest to
    the centroid are kept (ties: the earlier index first), at most
    ``max_cluster_size`` (0: no limit); clusters with fewer kept members than
    ``min_cluster_size`` are dropped entirely.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep fraction must be in (0, 1], got {keep_fraction}")
    _check_sizes(min_cluster_size, max_cluster_size)
    labels = np.asarray(labels, dtype=np.int64)
    sizes = np.bincount(labels)
    # The small epsilon keeps e.g. 0.7 * 10 = 7.000000000000001 from rounding up to 8.
    n_keep = np.ceil(keep_fraction * sizes - 1e-9).astype(np.int64)
    rank = _rank_in_cluster(labels, np.asarray(distances))
    return _limit_sizes(labels, rank < n_keep[labels], rank, min_cluster_size, max_cluster_size)


def select_by_posterior(labels, posteriors, threshold, min_cluster_size, max_cluster_size=0):
    """Boolean mask of the utterances whose posterior of their own cluster is at least ``threshold``.

    Cluster sizes are then limited as in :func:`select_confident`, the
    members with the highest posteriors kept first.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"posterior threshold must be in [0, 1), got {threshold}")
    _check_sizes(min_cluster_size, max_cluster_size)
    labels = np.asarray(labels, dtype=np.int64)
    posteriors = np.asarray(posteriors, dtype=np.float64)
    rank = _rank_in_cluster(labels, -posteriors)
    return _limit_sizes(labels, posteriors >= threshold, rank, min_cluster_size, max_cluster_size)


def cluster_posteriors(x, centers, labels, block_rows=8192):
    """Posterior of each row's own cluster under a mixture of spherical Gaussians at the ``centers``.

    The mixture is the one the clustering implies: weights the cluster
    sizes, one variance shared by all clusters and dimensions (its maximum
    likelihood value, the mean squared distance to the own centre per
    dimension). A point between two centres gets about 0.5, a point deep in
    its cluster about 1.
    """
    x = torch.as_tensor(x, dtype=torch.float32)
    centers = torch.as_tensor(centers, dtype=torch.float32)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    sizes = torch.bincount(labels, minlength=centers.shape[0]).double()
    own_sq = ((x - centers[labels]) ** 2).sum(1).double()
    variance = max(float(own_sq.sum()) / (x.shape[0] * x.shape[1]), 1e-12)
    log_prior = torch.log(sizes.clamp_min(1e-300) / sizes.sum())
    centers_sq = (centers * centers).sum(1)
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for start in range(0, x.shape[0], block_rows):
        xb = x[start:start + block_rows]
        sq = torch.addmm(centers_sq.unsqueeze(0), xb, centers.t(), alpha=-2.0).double() + (xb * xb).sum(1, keepdim=True)
        log_joint = log_prior - sq.clamp_min(0.0) / (2 * variance)
        own = log_joint.gather(1, labels[start:start + block_rows].unsqueeze(1)).squeeze(1)
        out[start:start + block_rows] = torch.exp(own - torch.logsumexp(log_joint, dim=1))
    return out.numpy()


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
        if name in NOT_CARRIED:
            continue
        if kind == "utt" or (kind == "reco" and not has_segments):
            tables[name] = read_scp(src.file(name))
    return tables


def _recording_tables(src):
    """``{name: {recording: value}}`` for wav.scp / reco2* when the source has segments."""
    if not src.has("segments"):
        return {}
    return {name: read_scp(src.file(name)) for name in table_files(src.path) if file_spec(name).kind == "reco"}


def build_tables(src_dir, utts, speakers, distances, uniq=None):
    """The tables of the pseudo-label data dir, ``{file name: {key: value}}``.

    ``utts``: source utterance ids to write; ``speakers``: their cluster ids;
    ``distances``: their distances to the centroid; ``uniq``: their utt2uniq
    values (default: the source's utt2uniq, else the source ids).
    """
    src = DataDir(src_dir)
    new_ids = [f"{spk}-{utt}" for utt, spk in zip(utts, speakers, strict=True)]
    tables = {name: {new: table[utt] for new, utt in zip(new_ids, utts, strict=True)}
              for name, table in _per_utt_tables(src).items()}
    if uniq is not None:
        tables["utt2uniq"] = dict(zip(new_ids, uniq, strict=True))
    tables.setdefault("utt2uniq", dict(zip(new_ids, utts, strict=True)))
    tables["utt2spk"] = dict(zip(new_ids, speakers, strict=True))
    tables["utt2dist"] = {new: f"{dist:.6f}" for new, dist in zip(new_ids, distances, strict=True)}
    if "segments" in tables:
        recordings = {value.split()[0] for value in tables["segments"].values()}
        for name, table in _recording_tables(src).items():
            tables[name] = {reco: value for reco, value in table.items() if reco in recordings}
    spk2utt = {}
    for new in sorted(new_ids, key=c_sort_key):
        spk2utt.setdefault(tables["utt2spk"][new], []).append(new)
    tables["spk2utt"] = spk2utt
    return tables


def write_pseudo_label_dir(src_dir, dest_dir, utts, speakers, distances, uniq=None, check=None):
    """Write the pseudo-label data dir ``dest_dir`` whole, then validate it, then put it in place.

    Arguments as for :func:`build_tables`; ``check(path)``, when given, runs
    on the finished, valid directory before it is put in place. The directory
    is built under a temporary name next to ``dest_dir`` and replaces it only
    once complete and valid, so a failed or killed run leaves the previous
    ``dest_dir`` (if any) untouched. Returns the utt2uniq table written.
    """
    src_dir, dest_dir = os.path.normpath(src_dir), os.path.normpath(dest_dir)
    if os.path.exists(dest_dir) and os.path.samefile(src_dir, dest_dir):
        raise DataDirError(dest_dir, 0, "the destination is the source data directory")
    if os.path.isdir(dest_dir) and os.listdir(dest_dir) and not os.path.isfile(os.path.join(dest_dir, "utt2spk")):
        raise DataDirError(dest_dir, 0, "exists and is not a data directory; refusing to replace it")
    tables = build_tables(src_dir, utts, speakers, distances, uniq)
    parent = os.path.dirname(os.path.abspath(dest_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dest_dir)}.", dir=parent)
    try:
        utt2uniq = tables["utt2uniq"]
        for name in list(tables):  # each freed once written: validation reads the dir again
            write_table(os.path.join(tmp, name), tables.pop(name))
        for name in VERBATIM_FILES:
            if os.path.isfile(os.path.join(src_dir, name)):
                shutil.copyfile(os.path.join(src_dir, name), os.path.join(tmp, name))
        validate_data_dir(tmp)
        if check is not None:
            check(tmp)
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
    return utt2uniq


class CopySource:
    """The clean utterances of a combined data dir and their augmented copies.

    Only utterances with an entry in every per-utterance file of the dir
    count (a copy whose features failed is left out, see ``notes``); they are
    grouped by :func:`pyspk.train.data.group_copies`, as the trainers do.
    """

    def __init__(self, path, suffixes=AUG_SUFFIXES):
        data = DataDir(path)
        self.path = data.path
        self.suffixes = tuple(suffixes)
        present = set(data.utt2spk())
        self.absent_from = {}  # utterance -> the file that lacks it
        self.notes = []
        for name, table in _per_utt_tables(data).items():
            absent = present.difference(table)
            if absent:
                self.notes.append(f"{len(absent)} utterances have no entry in {data.file(name)}")
                self.absent_from.update(dict.fromkeys(absent, data.file(name)))
                present -= absent
        self.groups = group_copies(data, sorted(present, key=c_sort_key), self.suffixes)
        self.copy_of = {copy: clean for clean, copies in self.groups.items() for copy in copies}

    def check_clean(self, utts):
        """Raise a DataDirError naming the file when the dir lacks an utterance of ``utts`` or holds
        it only as a copy of another."""
        missing = [utt for utt in utts if utt not in self.groups]
        if missing:
            utt = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            if utt in self.copy_of:
                raise DataDirError(self.path, 0, f"kept utterance '{utt}'{more} is an augmented copy of "
                                                 f"'{self.copy_of[utt]}' there, not a clean utterance")
            where = self.absent_from.get(utt, os.path.join(self.path, "utt2spk"))
            raise DataDirError(where, 0, f"no entry for kept utterance '{utt}'{more}; --copies-from must be the "
                                         "combined (clean + augmented) version of the clustered data dir")

    def expand(self, utts):
        """``(members, owner)``: ``utts`` each followed by its copies; ``owner[i]``: index in ``utts``
        of the clean utterance of ``members[i]``."""
        self.check_clean(utts)
        members, owner = [], []
        for i, utt in enumerate(utts):
            group = [utt] + self.groups[utt]
            members.extend(group)
            owner.extend([i] * len(group))
        return members, np.array(owner, dtype=np.int64)


def write_combined_dir(copies, dest_dir, utts, speakers, distances, uniq):
    """Write ``dest_dir``: the kept ``utts`` and their copies from ``copies`` (a :class:`CopySource`).

    ``speakers``, ``distances`` and ``uniq`` (utt2uniq values) are those of
    the clean utterances; their copies share them. Checks before putting the
    directory in place that group_copies on it finds the same groups.
    Returns the number of copies written.
    """
    members, owner = copies.expand(utts)
    speakers, distances, uniq = np.asarray(speakers), np.asarray(distances), np.asarray(uniq)
    clean_of = {f"{speakers[i]}-{utt}": utt for i, utt in enumerate(utts)}
    expected = {new: sorted(f"{speakers[i]}-{c}" for c in copies.groups[utt])
                for i, (new, utt) in enumerate(zip(clean_of, utts, strict=True))}

    def check_groups(path):
        data = DataDir(path)
        found = group_copies(data, list(data.utt2spk()), copies.suffixes)
        if {k: sorted(v) for k, v in found.items()} != expected:
            # A copy taken for a clean utterance also leaves its own clean utterance's group short.
            wrong = next(new for new in expected if sorted(found.get(new, [])) != expected[new])
            raise DataDirError(copies.path, 0, f"the copies of '{clean_of[wrong]}' are not named "
                                               f"'<utt>-<{'|'.join(copies.suffixes)}>', so the copies in "
                                               f"{dest_dir} could not be grouped with their utterance again")

    write_pseudo_label_dir(copies.path, dest_dir, members, speakers[owner], distances[owner], uniq[owner],
                           check=check_groups)
    return len(members) - len(utts)


def write_assignments(path, utts, speakers, distances, keep):
    """``cluster_assignments.txt``: ``<utt> <cluster> <distance> <kept 0|1>`` for every clustered utterance."""
    order = sorted(range(len(utts)), key=lambda i: c_sort_key(utts[i]))
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{utts[i]} {speakers[i]} {distances[i]:.6f} {int(keep[i])}\n" for i in order)
