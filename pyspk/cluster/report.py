"""Clustering diagnostics against true speaker labels (never used for training).

All measures are computed from the sparse contingency table (one row per
non-empty (true, predicted) pair), so a million points with thousands of
speakers and clusters cost a sort, not a dense k x k table.
"""

import numpy as np

from pyspk.fileutil import atomic_open


def _codes(labels):
    """Integer codes 0..n-1 for arbitrary (string or int) labels."""
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    return codes.reshape(-1).astype(np.int64)


def contingency(labels_true, labels_pred):
    """Non-empty cells of the contingency table: (true code, pred code, count) arrays."""
    t, p = _codes(labels_true), _codes(labels_pred)
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
    t, s, p = _codes(labels_true), _codes(sessions), _codes(labels_pred)
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
