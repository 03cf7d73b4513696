"""The optimiser from ``optim``: SGD or AdamW, the linear scaling rule, gradient clipping.

The ``optim`` section is declared here (:data:`OPTIM_SECTION`); the trainer sets the learning
rate and weight decay of every step from its schedules (pyspk.train.schedules).
"""

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from pyspk.config import ListOf, Map, Text, Value
from pyspk.train.schedules import SCHEDULE

log = logging.getLogger(__name__)

CLIP_MODES = ("global", "per_param")
OPTIM_SECTION = Map({
    "name": Text("sgd", "adamw"), "lr": SCHEDULE, "lr_reference_batch": Value(int, 1), "weight_decay": SCHEDULE,
    "momentum": Value(float, 0, 1), "nesterov": Value(bool), "betas": ListOf(Value(float, 0, 1), length=2),
    "eps": Value(float, 0, low_open=True), "clip_grad": Value(float, 0), "clip_mode": Text(*CLIP_MODES)})


def lr_scale(optim: Mapping[str, Any], global_batch: int) -> float:
    """The linear scaling rule (Goyal et al.; DINO): optim.lr is for ``optim.lr_reference_batch`` utterances.

    With ``lr_reference_batch`` set, the learning rate is multiplied by global batch / reference batch,
    so a config keeps its meaning on 1, 4 or 8 GPUs; without it, optim.lr is used as written.
    """
    reference = optim.get("lr_reference_batch")
    if reference is None:
        return 1.0
    scale = global_batch / int(reference)
    log.info("optim.lr x %.4g: global batch %d / optim.lr_reference_batch %d (linear scaling rule)", scale,
             global_batch, int(reference))
    return scale


def build_optimizer(groups: list[dict[str, Any]], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD or AdamW (``optim.name``) over parameter ``groups``; the trainer sets lr and weight decay per step."""
    name = cfg.get("name", "sgd")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=float(cfg.get("momentum", 0.9)),
                               nesterov=bool(cfg.get("nesterov", False)))
    return torch.optim.AdamW(groups, lr=0.0, betas=tuple(cfg.get("betas", (0.9, 0.999))),
                             eps=float(cfg.get("eps", 1e-8)), weight_decay=0.0)


@torch.no_grad()
def clip_gradients(parameters: Iterable[torch.Tensor], max_norm: float, mode: str = "global") -> torch.Tensor:
    """Clip gradients and return the global gradient norm before clipping.

    ``global``: one scale for all (torch's clip_grad_norm_); ``per_param``:
    each tensor's gradient scaled to norm at most ``max_norm`` on its own, as
    DINO, WeSpeaker and Cho et al. do. ``max_norm`` <= 0: norm only.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)
    total = torch.linalg.vector_norm(torch.stack(norms))
    if max_norm > 0:
        if mode == "per_param":
            scales = [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
            torch._foreach_mul_(grads, scales)
        else:
            torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total

