"""Clustering diagnostics against true speaker labels (never used for training).

All measures are computed from the sparse contingency table (one row per
non-empty (true, predicted) pair), so a million points with thousands of
speakers and clusters cost a sort, not a dense k x k table.
"""

import os

import numpy as np

from pyspk.data.datadir import read_kv
from pyspk.fileutil import atomic_open


def label_codes(labels):
    """Integer codes 0..n-1 for arbitrary (string or int) labels."""
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    return codes.reshape(-1).astype(np.int64)


def contingency(labels_true, labels_pred):
    """Non-empty cells of the contingency table: (true code, pred code, count) arrays."""
    t, p = label_codes(labels_true), label_codes(labels_pred)
    if t.shape != p.shape:
        raise ValueError(f"label arrays differ in length: {t.size} vs {p.size}")
    n_pred = int(p.max()) + 1 if p.size else 0
    cells, counts = np.unique(t * n_pred + p, return_counts=True)
    return cells // max(n_pred, 1), cells % max(n_pred, 1), counts


def _entropy(counts):
    prob = counts[counts > 0] / counts.sum()
    return float(-(prob * np.log(prob)).sum())


def nmi(labels_true, labels_pred):
    """Normalised mutual information, arithmetic-mean normalisation (scikit-learn's default)."""
    t, p, n = contingency(labels_true, labels_pred)
    total = n.sum()
    if total == 0:
        raise ValueError("no labels to compare")
    row = np.bincount(t, weights=n)
    col = np.bincount(p, weights=n)
    h_true, h_pred = _entropy(row), _entropy(col)
    if h_true == 0.0 and h_pred == 0.0:
        return 1.0
    mutual = float((n / total * (np.log(n) + np.log(total) - np.log(row[t]) - np.log(col[p]))).sum())
    return min(1.0, max(0.0, mutual / ((h_true + h_pred) / 2)))


def purity(labels_true, labels_pred):
    """Fraction of points whose cluster's majority true label is their own."""
    _t, p, n = contingency(labels_true, labels_pred)
    best = np.zeros(int(p.max()) + 1, dtype=np.int64)
    np.maximum.at(best, p, n)
    return float(best.sum() / n.sum())


def clusters_per_class(labels_true, labels_pred):
    """Number of distinct clusters holding each true speaker's points."""
    t, _, _ = contingency(labels_true, labels_pred)
    return np.bincount(t)


def summarize(labels_true, labels_pred):
    """NMI, purity and clusters-per-speaker statistics as an ordered dict."""
    per_speaker = clusters_per_class(labels_true, labels_pred)
    return {
        "num_utts": len(labels_true),
        "num_speakers": len(per_speaker),
        "num_clusters": len(np.unique(np.asarray(labels_pred))),
        "nmi": nmi(labels_true, labels_pred),
        "purity": purity(labels_true, labels_pred),
        "inverse_purity": purity(labels_pred, labels_true),
        "clusters_per_speaker_mean": float(per_speaker.mean()),
        "clusters_per_speaker_median": float(np.median(per_speaker)),
    }


def session_splitting(labels_true, sessions, labels_pred):
    """How far the clusters split speakers along their recording sessions (calls, videos, rounds).

    Over the speakers with two or more sessions: ``sessions_in_largest`` is the
    share of their (speaker, session) pairs whose utterances lie mostly in the
    speaker's largest cluster (1.0: every session of a speaker is with the
    others), ``sessions_split_off`` the share lying wholly in one cluster that
    is not the speaker's largest (a cluster made of a speaker's session: the
    classifier would learn to tell the speaker's sessions apart).
    """
    t, s, p = label_codes(labels_true), label_codes(sessions), label_codes(labels_pred)
    if not t.size == s.size == p.size:
        raise ValueError(f"label arrays differ in length: {t.size}, {s.size}, {p.size}")
    n_pred = int(p.max()) + 1
    # The largest cluster of each speaker (ties: the lowest cluster code).
    spk_cells, spk_counts = np.unique(t * n_pred + p, return_counts=True)
    largest = np.full(int(t.max()) + 1, -1, dtype=np.int64)
    best = np.zeros(int(t.max()) + 1, dtype=np.int64)
    for cell, count in zip(spk_cells, spk_counts, strict=True):
        spk = cell // n_pred
        if count > best[spk]:
            best[spk], largest[spk] = count, cell % n_pred
    pairs = {}
    for spk, session, cluster in zip(t, s, p, strict=True):
        pairs.setdefault((spk, session), []).append(cluster)
    sessions_of = np.bincount(np.array([spk for spk, _ in pairs], dtype=np.int64), minlength=len(largest))
    multi = [(spk, clusters) for (spk, _), clusters in pairs.items() if sessions_of[spk] >= 2]
    if not multi:
        return {"multi_session_speakers": 0, "session_pairs": 0}
    in_largest = split_off = 0
    for spk, clusters in multi:
        codes, counts = np.unique(clusters, return_counts=True)
        in_largest += int(codes[np.argmax(counts)] == largest[spk])
        split_off += int(len(codes) == 1 and codes[0] != largest[spk])
    return {"multi_session_speakers": int((sessions_of >= 2).sum()), "session_pairs": len(multi),
            "sessions_in_largest": in_largest / len(multi), "sessions_split_off": split_off / len(multi)}


def between_share(x, groups):
    """Share of the total variance of the rows of ``x`` explained by ``groups``: between-group scatter / total
    (1.0: each group is one point; about (G - 1) / (N - 1) for G random groups of isotropic points)."""
    x = np.asarray(x, dtype=np.float64)
    codes = label_codes(groups)
    centred = x - x.mean(axis=0)
    total = float((centred ** 2).sum())
    if total == 0.0:
        return float("nan")  # nothing to explain (e.g. a single cluster)
    counts = np.bincount(codes)
    sums = np.zeros((counts.size, x.shape[1]))
    np.add.at(sums, codes, centred)
    return float(((sums ** 2).sum(axis=1) / counts).sum() / total)


CHANNEL_FACTORS = ("session", "phonetype")  # <data-dir>/utt2<factor>: calls (sessions) and phone types


def read_factors(data_dir, utts, names=CHANNEL_FACTORS, ref_utt2spk=None):
    """``{factor: labels of utts}`` of the ``<data_dir>/utt2<factor>`` files that exist (None where an utterance
    has none), with ``ref_utt2spk``'s speakers as ``speaker`` when any exists."""
    factors = {}
    for name in names:
        path = os.path.join(data_dir, f"utt2{name}")
        if os.path.isfile(path):
            table = read_kv(path)
            factors[name] = [table.get(utt) for utt in utts]
    if factors and ref_utt2spk:
        table = read_kv(ref_utt2spk)
        factors["speaker"] = [table.get(utt) for utt in utts]
    return factors


def channel_shares(x, clusters, factors):
    """How much of what separates embeddings, and their clusters, each factor (session, phone type, speaker) is.

    On the rows of ``x`` centred and length-normalised: ``<f>_share``, the share of the total variance between
    the groups of factor ``f`` (``factors``: ``{f: labels}``, None for an unknown label: left out), with
    ``<f>_share_chance``, that of as many random groups; with ``clusters``, ``clusters_share`` and
    ``<f>_share_of_clusters``, the share of the between-cluster variance (each row replaced by its cluster's
    mean) that lies between the groups of ``f``. A call is one caller, so ``session`` explains at least what
    ``speaker`` does: their difference is what separates one caller's calls, measured as ``multisession_*`` on
    the speakers with several sessions (with both factors).
    """
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = {"num_utts": len(x)}
    if clusters is not None:
        codes = label_codes(clusters)
        counts = np.bincount(codes)
        means = np.zeros((counts.size, x.shape[1]))
        np.add.at(means, codes, x)
        cluster_x = (means / counts[:, None])[codes]
        out["clusters_share"] = between_share(x, codes)
    for name, labels in factors.items():
        rows = np.array([label is not None for label in labels])
        known = np.asarray(labels, dtype=object)[rows]
        num_groups = len(set(known.tolist()))
        out[f"{name}_groups"] = num_groups
        out[f"{name}_share"] = between_share(x[rows], known)
        out[f"{name}_share_chance"] = (num_groups - 1) / max(int(rows.sum()) - 1, 1)
        if clusters is not None:
            out[f"{name}_share_of_clusters"] = between_share(cluster_x[rows], known)
    if "session" in factors and "speaker" in factors:
        out.update(_between_calls_of_one_speaker(x, factors["session"], factors["speaker"]))
    return out


def _between_calls_of_one_speaker(x, sessions, speakers):
    """On the speakers with several sessions only (a one-call speaker's share is its call's too): the shares
    between speakers and between sessions, and their difference, what separates one speaker's calls."""
    calls = {}
    for session, speaker in zip(sessions, speakers, strict=True):
        if session is not None and speaker is not None:
            calls.setdefault(speaker, set()).add(session)
    rows = np.array([spk is not None and ses is not None and len(calls[spk]) > 1
                     for ses, spk in zip(sessions, speakers, strict=True)])
    if not rows.any():
        return {}
    spk_share = between_share(x[rows], np.asarray(speakers, dtype=object)[rows])
    ses_share = between_share(x[rows], np.asarray(sessions, dtype=object)[rows])
    return {"multisession_speakers": sum(len(c) > 1 for c in calls.values()), "multisession_utts": int(rows.sum()),
            "multisession_speaker_share": spk_share, "multisession_session_share": ses_share,
            "multisession_within_speaker_share": ses_share - spk_share}


def format_value(value):
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4f}"
    return str(value)


def write_report(path, sections):
    """Write ``{section: {key: value}}`` as ``section.key value`` lines (grep/awk friendly)."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for section, items in sections.items():
            f.write(f"# {section}\n")
            for key, value in items.items():
                f.write(f"{section}.{key} {format_value(value)}\n")
