"""A training run's metrics: ``metrics.tsv`` (one row per logged step) and its plot ``loss.png``."""

import csv
import os
from collections.abc import Iterable, Mapping
from typing import Any

from pyspk.fileutil import PathLike, atomic_open, atomic_path


class MetricsLog:
    """Tab-separated metrics, one row per logged step; trimmed back on resume."""

    def __init__(self, path: PathLike, columns: Iterable[str]):
        self.path, self.columns = path, list(columns)

    def trim(self, last_step: int) -> None:
        """Keep only rows up to ``last_step`` (a killed run may have logged past its last checkpoint)."""
        if not os.path.isfile(self.path):
            return
        with open(self.path, encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        with atomic_open(self.path, "w", encoding="utf-8") as f:
            writer = csv.DictWriter(f, self.columns, delimiter="\t", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(r for r in rows if int(r["step"]) <= last_step)

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one row (floats to 6 significant digits), with the header when the file is new."""
        new = not os.path.isfile(self.path)
        with open(self.path, "a", encoding="utf-8") as f:
            writer = csv.DictWriter(f, self.columns, delimiter="\t", extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def plot_metrics(metrics_path: PathLike, png_path: PathLike, series: Iterable[str]) -> None:
    """Loss (and the other ``series`` found) against step, one panel each, as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    series = [s for s in series if rows and s in rows[0]]
    if not rows or not series:
        return
    fig, axes = plt.subplots(len(series), 1, figsize=(7, 2.2 * len(series)), sharex=True, squeeze=False)
    steps = [int(r["step"]) for r in rows]
    for ax, name in zip(axes[:, 0], series, strict=True):
        ax.plot(steps, [float(r[name]) for r in rows], lw=1.2)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
