"""Training checkpoints: atomic writes, latest-finding, pruning, RNG capture.

Checkpoints hold only tensors, dicts, lists, numbers and strings so they load
with ``torch.load(..., weights_only=True)``. Names are
``ckpt-e<epoch>-s<step>.pt`` (epoch = epochs finished, step = optimiser
steps done); a killed write leaves only a hidden temporary file, which is
ignored and cleaned on the next start.
"""

import glob
import logging
import os
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pyspk.fileutil import PathLike
from pyspk.models import BackboneFileError, read_backbone_file

log = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^ckpt-e(\d+)-s(\d+)\.pt$")


def checkpoint_name(epoch: int, step: int) -> str:
    """File name of the checkpoint written at ``step`` of ``epoch``."""
    return f"ckpt-e{epoch}-s{step}.pt"


def list_checkpoints(ckpt_dir: PathLike) -> list[tuple[int, str]]:
    """Complete checkpoints in ``ckpt_dir`` as ``[(step, path)]`` sorted by step."""
    found = []
    if os.path.isdir(ckpt_dir):
        for name in os.listdir(ckpt_dir):
            match = CKPT_RE.match(name)
            if match:
                found.append((int(match.group(2)), os.path.join(ckpt_dir, name)))
    return sorted(found)


def find_latest(ckpt_dir: PathLike) -> str | None:
    """Path of the checkpoint with the most steps, or None."""
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def prune_checkpoints(ckpt_dir: PathLike, keep: int) -> None:
    """Delete all but the ``keep`` most recent checkpoints (keep <= 0 keeps all)."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(ckpt_dir)[:-keep]:
        os.remove(path)


def remove_stale_temporaries(ckpt_dir: PathLike) -> None:
    """Delete temporary files left by a write that was killed half-way."""
    for path in glob.glob(os.path.join(ckpt_dir, ".*.tmp")):
        os.remove(path)


def load_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Whatever ``path`` holds, loaded with ``weights_only`` (tensors, containers, numbers, strings)."""
    return torch.load(path, map_location=map_location, weights_only=True)


class CheckpointError(ValueError):
    pass


def load_latest_good(ckpt_dir: PathLike, required_keys: Iterable[str],
                     map_location: str | torch.device = "cpu") -> tuple[str, dict[str, Any]] | tuple[None, None]:
    """``(path, state)`` of the newest checkpoint that loads and has ``required_keys``, or ``(None, None)``.

    A newer one that is truncated, corrupted or not a training checkpoint is
    renamed to ``<name>.bad`` (kept for inspection, never picked again) with a
    warning naming it; CheckpointError when checkpoints exist but none loads.
    """
    found = list_checkpoints(ckpt_dir)
    bad = []
    for _, path in reversed(found):
        try:
            state = load_checkpoint(path, map_location=map_location)
            missing = [k for k in required_keys if not isinstance(state, dict) or k not in state]
            if missing:
                raise ValueError(f"not a training checkpoint (no {', '.join(missing)})")
        except Exception as e:  # torch.load raises many types on a damaged file; all mean "unusable"
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            os.replace(path, path + ".bad")
            log.warning("%s: unreadable checkpoint (%s); moved to %s.bad, falling back to the previous one",
                        path, reason, path)
            bad.append(path)
            continue
        return path, state
    if bad:
        raise CheckpointError(f"no usable checkpoint in {ckpt_dir}: {', '.join(bad)} could not be read "
                              "(moved to *.bad); delete them to start over")
    return None, None


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states as tensors and lists."""
    version, py_state, gauss = random.getstate()
    kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the generators to a state from ``capture_rng_state`` (CUDA only with as many devices)."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].cpu().numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def average_backbones(paths: Sequence[PathLike]) -> dict[str, Any]:
    """A backbone-file dict whose every backbone is the mean of the same backbone in ``paths``.

    Floating-point tensors (weights, BN running statistics) are averaged;
    integer buffers (BN batch counters) are taken from the last file. Every
    file must hold the same backbones with the same configs.
    """
    if not paths:
        raise ValueError("no checkpoints to average")
    contents = [read_backbone_file(p) for p in paths]
    first = contents[0]
    for path, content in zip(paths[1:], contents[1:], strict=True):
        if list(content["backbones"]) != list(first["backbones"]) or any(
                content["backbones"][n]["config"] != first["backbones"][n]["config"] for n in first["backbones"]):
            raise BackboneFileError(f"{path}: holds other backbones than {paths[0]}; cannot average them")
    backbones = {}
    for name, entry in first["backbones"].items():
        state = {}
        for key, value in entry["state_dict"].items():
            if value.is_floating_point():
                state[key] = sum(c["backbones"][name]["state_dict"][key].double() for c in contents).div(
                    len(contents)).to(value.dtype)
            else:
                state[key] = contents[-1]["backbones"][name]["state_dict"][key]
        backbones[name] = {"config": entry["config"], "state_dict": state}
    return {"backbones": backbones, "default_backbone": first["default_backbone"],
            "averaged_from": [os.path.basename(p) for p in paths]}
