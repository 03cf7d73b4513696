"""DET curve and target/non-target score histogram as PNG files (matplotlib, Agg backend)."""

from collections.abc import Mapping
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

from pyspk.fileutil import PathLike, atomic_path
from pyspk.metrics import det_curve

DET_TICKS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4]
MAX_CURVE_POINTS = 4000


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _probit(p):
    inv_cdf = NormalDist().inv_cdf
    return np.array([inv_cdf(v) for v in np.clip(p, 1e-5, 1 - 1e-5).tolist()])


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def plot_det(curves: Mapping[str, tuple[ArrayLike, ArrayLike]], path: PathLike,
             eer_points: Mapping[str, float] | None = None) -> None:
    """DET plot of ``{label: (scores, labels)}`` on normal-deviate axes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for label, (scores, labels) in curves.items():
        p_miss, p_fa = det_curve(scores, labels)
        if p_miss.size > MAX_CURVE_POINTS:  # enough to draw it; keeps the file and the call small
            keep = np.unique(np.linspace(0, p_miss.size - 1, MAX_CURVE_POINTS).astype(np.int64))
            p_miss, p_fa = p_miss[keep], p_fa[keep]
        ax.plot(_probit(p_fa), _probit(p_miss), label=label)
    for label, eer in (eer_points or {}).items():
        ax.plot(_probit([eer]), _probit([eer]), "o", label=f"{label} EER {100 * eer:.2f}%")
    ticks = _probit(DET_TICKS)
    tick_labels = [f"{100 * t:g}" for t in DET_TICKS]
    ax.set_xticks(ticks, tick_labels)
    ax.set_yticks(ticks, tick_labels)
    ax.set_xlim(ticks[0], ticks[-1])
    ax.set_ylim(ticks[0], ticks[-1])
    ax.set_xlabel("False alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.grid(True, alpha=0.4)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_score_histogram(scores: np.ndarray, labels: np.ndarray, path: PathLike, title: str | None = None,
                         bins: int = 100) -> None:
    """Overlaid, density-normalised histograms of target and non-target scores."""
    plt = _pyplot()
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    edges = np.histogram_bin_edges(scores, bins=bins)
    ax.hist(scores[~labels], bins=edges, density=True, alpha=0.6, label=f"non-target ({(~labels).sum()})")
    ax.hist(scores[labels], bins=edges, density=True, alpha=0.6, label=f"target ({labels.sum()})")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
