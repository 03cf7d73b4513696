"""Per-step schedules: cosine with linear warm-up, precomputed as arrays.

One shape serves learning rate, weight decay, EMA momentum and teacher
temperature: a linear ramp from ``warmup_start`` to ``base`` over the warm-up
steps, then a half-cosine from ``base`` to ``final`` (or a constant, or a
straight line) over the remaining steps. Steps past the end keep ``final``.

An EMA teacher's momentum schedule also has a *lag*: the mean age, in steps,
of the student weights the teacher holds at the end of the run.
"""

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from pyspk.config import ConfigError, Either, Map, Text, Value, check_section, nullable

log = logging.getLogger(__name__)

# Share of its initial weights an EMA teacher may still hold at the end before a warning.
MAX_EMA_INIT_SHARE = 0.01

KINDS = ("cosine", "linear", "constant")
_SCHEDULED_VALUE = Value(float, 0)
# A scheduled value: a number or a mapping (see build_schedule).
SCHEDULE = Either(_SCHEDULED_VALUE, Map({
    "base": _SCHEDULED_VALUE, "final": nullable(_SCHEDULED_VALUE), "warmup_epochs": nullable(Value(float, 0)),
    "warmup_fraction": nullable(Value(float, 0, 1)), "warmup_start": nullable(_SCHEDULED_VALUE),
    "kind": Text(*KINDS)}))
LAG_SECTION = Map({"lag_fraction": Value(float, 0, 1, low_open=True)})


def ema_momentum_spec(value: Any) -> Any:
    """An EMA momentum's declaration: null (DINO's 0.996 -> 1), ``{lag_fraction: f}`` or a schedule."""
    return LAG_SECTION if isinstance(value, dict) and "lag_fraction" in value else Either(None, *SCHEDULE.specs)


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
    check_section(cfg, SCHEDULE.specs[1], name)
    if cfg.get("warmup_fraction") is not None:
        warmup_steps = round(float(cfg["warmup_fraction"]) * total_steps)
    else:
        warmup_steps = round(float(cfg.get("warmup_epochs", 0)) * steps_per_epoch)
    return Schedule(float(cfg["base"]), cfg.get("final"), total_steps, warmup_steps,
                    cfg.get("warmup_start", 0.0 if warmup_steps else None), cfg.get("kind", "cosine"))


def ema_lag(momentum: np.ndarray) -> tuple[float, float]:
    """``(lag, init_share)`` of an EMA ``teacher = m_t * teacher + (1 - m_t) * student_t`` over the steps.

    The final teacher is ``init_share`` times its initial weights plus a weighted mean of the
    students; ``lag`` is that mean's age in steps (the student of the last step has age 0).
    """
    momentum = np.asarray(momentum, dtype=np.float64)
    kept = np.cumprod(momentum[::-1])[::-1]  # kept[t]: product of m_s for s >= t (underflows to 0 harmlessly)
    weights = (1.0 - momentum) * np.append(kept[1:], 1.0)
    ages = np.arange(len(momentum))[::-1]
    lag = float((weights * ages).sum() / weights.sum()) if weights.sum() > 0 else float("inf")
    return lag, float(kept[0])


def build_ema_momentum(cfg: float | Mapping[str, Any] | None, steps_per_epoch: int, total_steps: int,
                       name: str) -> Schedule:
    """An EMA teacher's momentum: a schedule as :func:`build_schedule`, or ``{lag_fraction: f}``.

    None gives DINO's 0.996 -> 1.

    ``lag_fraction`` gives a constant momentum whose teacher lags its student by that share of
    the run (``m = f N / (f N + 1)`` for N steps), so a 500-step run and a 100-epoch one keep
    the same proportion; DINO's 0.996 -> 1 over 100 epochs of VoxCeleb2 or ImageNet lags by
    8-12 % of the run, the same schedule over 500 steps by 64 % with a third of the random
    initial weights left. Logs the lag and warns when over 1 % of the initial weights remain.
    """
    if cfg is None:
        cfg = {"base": 0.996, "final": 1.0}
    if isinstance(cfg, dict) and "lag_fraction" in cfg:
        check_section(cfg, LAG_SECTION, name)
        lag_steps = float(cfg["lag_fraction"]) * max(int(total_steps), 1)
        schedule = Schedule(lag_steps / (lag_steps + 1.0), total_steps=total_steps, kind="constant")
    else:
        schedule = build_schedule(cfg, steps_per_epoch, total_steps, name)
    lag, init_share = ema_lag(schedule.values)
    log.info("%s: %.4f -> %.4f; the final teacher lags its student by %.0f of %d steps (%.0f %%)", name,
             schedule(0), schedule.final, lag, len(schedule), 100.0 * lag / len(schedule))
    if init_share > MAX_EMA_INIT_SHARE:
        log.warning("%s: the teacher still holds %.0f %% of its random initial weights after %d steps: "
                    "the run is too short for this momentum; give it as {lag_fraction: 0.1} (override: "
                    "%s={\"lag_fraction\":0.1}) or lower its base", name, 100.0 * init_share, len(schedule), name)
    return schedule
