"""NT-Xent, its projection head and its dynamic stop, shared by contrastive, MeMo and DINO.

:func:`nt_xent` is the multi-positive InfoNCE over the crops of a batch;
:class:`ProjectionHead` the SimCLR MLP it may be applied through (the
contrastive objective always, DINO's warm-up optionally);
:class:`ContrastiveStop` ends an auxiliary contrastive term once its windowed
mean stops improving (MeMo's warm-up; DINO's optional one).
"""

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pyspk.config import Map, Value, check_section, defaults_map, nullable
from pyspk.device import distributed_active

STOP_DEFAULTS = {"window_steps": 50, "patience": 2, "min_delta": 0.0, "max_epochs": None}
PROJECTION_DEFAULTS = {"hidden_dim": 512, "out_dim": 128, "nlayers": 2, "use_bn": True}
PROJECTION_SECTION = defaults_map(PROJECTION_DEFAULTS)
STOP_SECTION = defaults_map(STOP_DEFAULTS, window_steps=Value(int, 1), patience=Value(int, 0), min_delta=Value(float),
                            max_epochs=nullable(Value(float, 0)))
# A contrastive term of MeMo or DINO (DINO's may add a projection head).
CONTRASTIVE_TERM_SECTION = Map({"weight": Value(float, 0), "temperature": Value(float, 0, low_open=True),
                                "gather_negatives": Value(bool), "stop": nullable(STOP_SECTION)})


class ProjectionHead(nn.Module):
    """SimCLR projection MLP: ``nlayers`` linear layers with (BN +) ReLU between them."""

    def __init__(self, in_dim, hidden_dim=512, out_dim=128, nlayers=2, use_bn=True):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (max(int(nlayers), 1) - 1) + [out_dim]
        layers = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                if use_bn:
                    layers.append(nn.BatchNorm1d(dims[i + 1]))
                layers.append(nn.ReLU(inplace=True))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x):
        return self.mlp(x)


def projection_options(cfg, name):
    cfg = dict(cfg or {})
    check_section(cfg, PROJECTION_SECTION, name)
    return {**PROJECTION_DEFAULTS, **cfg}


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every process's gradient and keeps this process's rows.

    (all_reduce + slice instead of reduce-scatter, which gloo lacks.)
    """

    @staticmethod
    def forward(ctx, x):
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(x):
    """``(all processes' x concatenated in rank order, row offset of this process's x)``; differentiable."""
    if not distributed_active() or dist.get_world_size() == 1:
        return x, 0
    return _GatherRows.apply(x), dist.get_rank() * x.shape[0]


def nt_xent(z, n_views, temperature, gather=True):
    """Multi-positive NT-Xent over crop-major rows: row ``v * B + b`` is crop ``v`` of utterance ``b``.

    For anchor i with positives P(i) (the other crops of its utterance) and
    candidates K(i) (every row but i, over all processes when ``gather``):
    ``loss_i = -1/|P(i)| * sum_{p in P(i)} log(exp(s_ip / t) / sum_{k in K(i)} exp(s_ik / t))``
    with s the cosine similarity; the loss is the mean over local anchors.
    Returns ``(loss, accuracy)``: accuracy = how often the most similar other row is a positive.
    """
    batch = z.shape[0] // n_views
    z = F.normalize(z.float(), dim=-1)
    keys, offset = gather_with_grad(z) if gather else (z, 0)
    # Utterance id of every key row: each process contributes a crop-major block of n_views * batch rows.
    rows = torch.arange(keys.shape[0], device=z.device)
    key_ids = rows // (n_views * batch) * batch + rows % batch
    anchor_ids = key_ids[offset:offset + z.shape[0]]
    logits = z @ keys.t() / temperature
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[torch.arange(z.shape[0], device=z.device), offset + torch.arange(z.shape[0], device=z.device)] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = (anchor_ids[:, None] == key_ids[None, :]) & ~self_mask
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    loss = -(log_prob.masked_fill(~positives, 0.0).sum(1) / positives.sum(1)).mean()
    with torch.no_grad():
        accuracy = positives.gather(1, logits.argmax(1, keepdim=True)).float().mean()
    return loss, accuracy


class ContrastiveStop:
    """When to stop the auxiliary contrastive loss.

    Values (already averaged over processes) are summed over windows of
    ``window_steps`` steps; a window whose mean is not below the best so far
    by more than ``min_delta`` counts as bad, and after ``patience`` bad
    windows in a row (patience 0: never) the loss stops. ``max_steps``
    (None: no limit) stops it unconditionally. ``stopped_step``: number of
    steps trained when it stopped (the loss is off from that 0-based step on).
    """

    def __init__(self, window_steps=50, patience=2, min_delta=0.0, max_steps=None, enabled=True):
        self.window_steps, self.patience, self.min_delta = int(window_steps), int(patience), float(min_delta)
        self.max_steps = None if max_steps is None else int(max_steps)
        self.best, self.bad_windows = math.inf, 0
        self.window_sum, self.window_count = 0.0, 0
        self.stopped_step = None if enabled else 0

    def active(self, step):
        return self.stopped_step is None or step < self.stopped_step

    def update(self, step, value):
        """Record the value of 0-based ``step``; returns a reason string when this step stops the loss."""
        if not self.active(step):
            return None
        self.window_sum += float(value)
        self.window_count += 1
        done = step + 1
        reason = None
        if done % self.window_steps == 0:
            mean = self.window_sum / self.window_count
            self.window_sum, self.window_count = 0.0, 0
            if mean < self.best - self.min_delta:
                self.best, self.bad_windows = mean, 0
            else:
                self.bad_windows += 1
            if self.patience > 0 and self.bad_windows >= self.patience:
                reason = (f"no improvement over {self.bad_windows} windows of {self.window_steps} steps "
                          f"(best window mean {self.best:.4f}, last {mean:.4f})")
        if reason is None and self.max_steps is not None and done >= self.max_steps:
            reason = f"reached its limit of {self.max_steps} steps"
        if reason is not None:
            self.stopped_step = done
        return reason

    def update_averaged(self, step, value):
        """:meth:`update` with a tensor averaged over processes, so every process stops at the same step."""
        value = value.detach().float().clone()
        if distributed_active():
            dist.all_reduce(value)
            value /= dist.get_world_size()
        return self.update(step, value.item())

    def state_dict(self):
        return {"best": self.best, "bad_windows": self.bad_windows, "window_sum": self.window_sum,
                "window_count": self.window_count, "stopped_step": -1 if self.stopped_step is None
                else self.stopped_step}

    def load_state_dict(self, state):
        self.best, self.bad_windows = float(state["best"]), int(state["bad_windows"])
        self.window_sum, self.window_count = float(state["window_sum"]), int(state["window_count"])
        self.stopped_step = None if int(state["stopped_step"]) < 0 else int(state["stopped_step"])


def contrastive_options(cfg, steps_per_epoch, name, default_weight=1.0):
    """``(weight, temperature, gather_negatives, ContrastiveStop)`` from a ``contrastive`` config section.

    Shared by MeMo and DINO's contrastive warm-up; weight 0 switches it off.
    """
    cfg = dict(cfg or {})
    check_section(cfg, CONTRASTIVE_TERM_SECTION, name)
    stop = dict(cfg.get("stop") or {})
    check_section(stop, STOP_SECTION, f"{name}.stop")
    stop = {**STOP_DEFAULTS, **stop}
    weight = float(cfg.get("weight", default_weight))
    max_steps = None if stop["max_epochs"] is None else round(float(stop["max_epochs"]) * steps_per_epoch)
    return (weight, float(cfg.get("temperature", 0.1)), bool(cfg.get("gather_negatives", True)),
            ContrastiveStop(stop["window_steps"], stop["patience"], stop["min_delta"], max_steps,
                            enabled=weight > 0))


