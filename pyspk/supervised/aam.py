"""Additive angular margin softmax (AAM-softmax, ArcFace; Deng et al. 2019).

Logits are ``scale * cos(theta_j)`` for the non-target classes and
``scale * cos(theta_y + margin)`` for the target class, where ``theta_j`` is
the angle between the embedding and class ``j``'s weight vector. Where
``theta_y + margin`` would pass pi the cosine stops decreasing, so beyond that
point the usual linear continuation ``cos(theta_y) - margin * sin(margin)``
keeps the target logit monotonic in the angle.

The margin is usually warmed up: with a full margin from the first step a
randomly initialised model finds every target logit pushed down and learns
slowly, so training starts at margin 0 and raises it to its final value.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from pyspk.config import ConfigError, check_keys

WARMUP_KEYS = ("start_epoch", "end_epoch")


class AAMSoftmax(nn.Module):
    """Class weight vectors and the margin logits; ``forward`` returns (loss, logits, cosines).

    ``margin`` and ``scale`` are the defaults of ``forward``; a scheduled margin
    is passed per call.
    """

    def __init__(self, embed_dim, num_classes, margin=0.2, scale=30.0):
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"AAM-softmax needs at least 2 classes, got {num_classes}")
        self.margin, self.scale = float(margin), float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_normal_(self.weight, gain=1.0)

    @property
    def num_classes(self):
        return self.weight.shape[0]

    def cosines(self, embeddings):
        """``(B, num_classes)`` cosine similarities between embeddings and class weights, in float32."""
        # Outside autocast: bf16 cosines near 1 are too coarse for a margin of a few tenths of a radian.
        with torch.autocast(embeddings.device.type, enabled=False):
            return F.linear(F.normalize(embeddings.float(), dim=-1), F.normalize(self.weight.float(), dim=-1))

    def forward(self, embeddings, labels, margin=None):
        margin = self.margin if margin is None else float(margin)
        cosine = self.cosines(embeddings)
        target = cosine.gather(1, labels[:, None])
        if margin != 0.0:
            sine = (1.0 - target * target).clamp_min(0.0).sqrt()
            with_margin = target * math.cos(margin) - sine * math.sin(margin)
            # theta + margin > pi: continue linearly instead of letting cos turn back up.
            target_logit = torch.where(target > math.cos(math.pi - margin), with_margin,
                                       target - margin * math.sin(margin))
        else:
            target_logit = target
        logits = self.scale * cosine.scatter(1, labels[:, None], target_logit)
        return F.cross_entropy(logits, labels), logits, cosine


class MarginSchedule:
    """Margin per step: 0 before ``start_epoch``, rising linearly to ``margin`` at ``end_epoch``.

    With ``end_epoch <= start_epoch`` the full margin applies from ``start_epoch``.
    Epochs may be fractional; step ``s`` of epoch-length ``n`` is at epoch ``s / n``.
    """

    def __init__(self, margin, steps_per_epoch, start_epoch=0.0, end_epoch=0.0):
        self.margin = float(margin)
        self.start = round(float(start_epoch) * steps_per_epoch)
        self.end = round(float(end_epoch) * steps_per_epoch)

    def __call__(self, step):
        if step < self.start:
            return 0.0
        if step >= self.end:
            return self.margin
        return self.margin * (step - self.start) / (self.end - self.start)


def build_margin_schedule(margin, warmup, steps_per_epoch, name="margin_warmup"):
    """A :class:`MarginSchedule` from a margin and an optional ``{start_epoch, end_epoch}`` mapping."""
    if float(margin) < 0.0 or float(margin) >= math.pi / 2:
        raise ConfigError(f"margin must be in [0, pi/2), got {margin}")
    if warmup is None:
        return MarginSchedule(margin, steps_per_epoch)
    if not isinstance(warmup, dict):
        raise ConfigError(f"{name} must be a mapping with start_epoch and end_epoch")
    check_keys(warmup, WARMUP_KEYS, name)
    start, end = float(warmup.get("start_epoch", 0.0)), float(warmup.get("end_epoch", 0.0))
    if start < 0 or end < 0:
        raise ConfigError(f"{name}: start_epoch and end_epoch must not be negative")
    return MarginSchedule(margin, steps_per_epoch, start, end)
