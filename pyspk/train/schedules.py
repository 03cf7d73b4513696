"""Per-step schedules: cosine with linear warm-up, precomputed as arrays.

One shape serves learning rate, weight decay, EMA momentum and teacher
temperature: a linear ramp from ``warmup_start`` to ``base`` over the warm-up
steps, then a half-cosine from ``base`` to ``final`` (or a constant, or a
straight line) over the remaining steps. Steps past the end keep ``final``.
"""

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from pyspk.config import ConfigError, check_keys

SCHEDULE_KEYS = ("base", "final", "warmup_epochs", "warmup_fraction", "warmup_start", "kind")
KINDS = ("cosine", "linear", "constant")


class Schedule:
    """Values for steps ``0 .. total_steps-1``; ``schedule(step)`` indexes them."""

    def __init__(self, base: float, final: float | None = None, total_steps: int = 1, warmup_steps: int = 0,
                 warmup_start: float | None = None, kind: str = "cosine"):
        if kind not in KINDS:
            raise ConfigError(f"schedule kind '{kind}' unknown; known: {', '.join(KINDS)}")
        final = base if final is None or kind == "constant" else final
        warmup_start = base if warmup_start is None else warmup_start
        total_steps = max(int(total_steps), 1)
        warmup_steps = min(max(int(warmup_steps), 0), total_steps)
        ramp = np.linspace(warmup_start, base, warmup_steps, endpoint=False)
        rest = total_steps - warmup_steps
        progress = np.arange(rest) / max(rest - 1, 1)
        if kind == "cosine":
            body = final + 0.5 * (base - final) * (1 + np.cos(math.pi * progress))
        else:
            body = base + (final - base) * progress
        self.values = np.concatenate([ramp, body]).astype(np.float64)
        self.final = float(final)

    def __call__(self, step: int) -> float:
        return float(self.values[step]) if step < len(self.values) else self.final

    def __len__(self) -> int:
        return len(self.values)


def build_schedule(cfg: float | Mapping[str, Any], steps_per_epoch: int, total_steps: int, name: str) -> Schedule:
    """A :class:`Schedule` from a config value: a number (constant) or a mapping.

    Mapping keys: ``base`` (required), ``final`` (default = base),
    ``warmup_epochs`` (may be fractional) or ``warmup_fraction`` (of all
    steps, so that short and long runs warm up alike; wins when set), ``warmup_start`` (default 0 when
    warming up), ``kind`` (cosine | linear | constant).
    """
    if isinstance(cfg, (int, float)):
        return Schedule(float(cfg), total_steps=total_steps, kind="constant")
    if not isinstance(cfg, dict) or "base" not in cfg:
        raise ConfigError(f"'{name}' must be a number or a mapping with at least 'base'")
    check_keys(cfg, SCHEDULE_KEYS, name)
    if cfg.get("warmup_fraction") is not None:
        warmup_steps = round(float(cfg["warmup_fraction"]) * total_steps)
    else:
        warmup_steps = round(float(cfg.get("warmup_epochs", 0)) * steps_per_epoch)
    return Schedule(float(cfg["base"]), cfg.get("final"), total_steps, warmup_steps,
                    cfg.get("warmup_start", 0.0 if warmup_steps else None), cfg.get("kind", "cosine"))
