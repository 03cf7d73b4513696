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

Two options make the head robust to noisy labels and sharpen it on hard
negatives (both off by default, leaving plain AAM bit for bit):

- *Sub-centres* (Deng et al. 2020, "Sub-center ArcFace"): ``subcenters = K``
  weight vectors per class; a class's cosine is the largest of its K. A
  mislabelled utterance can settle on a minor sub-centre instead of pulling
  the dominant one towards it.
- *Inter-top-k margin* (Zhao et al. 2022, "Multi-query multi-head attention
  pooling and inter-topK penalty"): the ``k`` non-target classes with the
  largest cosines get ``cos(theta_j - m')``, i.e. their angle is shrunk by
  ``m'`` and their logits rise, so the loss pushes hardest on the confusable
  speakers. Below ``theta_j = m'`` the logit continues as ``cos(theta_j) +
  1 - cos(m')`` (continuous, still increasing in the cosine). As in WeSpeaker,
  ``m'`` follows the margin warm-up: ``m' * margin_now / margin`` (none while
  the margin is 0).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from pyspk.config import ConfigError, Map, Value, check_section

WARMUP_SECTION = Map({"start_epoch": Value(float, 0), "end_epoch": Value(float, 0)})


class AAMSoftmax(nn.Module):
    """Class weight vectors and the margin logits; ``forward`` returns (loss, logits, cosines).

    ``margin`` and ``scale`` are the defaults of ``forward``; a scheduled margin
    is passed per call. ``weight`` holds ``subcenters`` rows per class, class
    ``c``'s at rows ``c * subcenters ... c * subcenters + subcenters - 1``.
    ``inter_topk = (k, margin)`` switches the inter-top-k margin on (k 0: off).
    """

    def __init__(self, embed_dim, num_classes, margin=0.2, scale=30.0, subcenters=1, inter_topk=(0, 0.0)):
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"AAM-softmax needs at least 2 classes, got {num_classes}")
        if int(subcenters) < 1:
            raise ConfigError(f"classifier.subcenters must be a positive integer, got {subcenters}")
        top_k, top_margin = int(inter_topk[0]), float(inter_topk[1])
        if not 0 <= top_k < num_classes or not 0.0 <= top_margin < math.pi / 2:
            raise ConfigError(f"classifier.inter_topk: k must be in [0, {num_classes - 1}] (classes - 1) and "
                              f"margin in [0, pi/2), got k {top_k}, margin {top_margin}")
        self.margin, self.scale = float(margin), float(scale)
        self.subcenters = int(subcenters)
        self.top_k, self.top_margin = top_k, top_margin
        self.weight = nn.Parameter(torch.empty(num_classes * self.subcenters, embed_dim))
        nn.init.xavier_normal_(self.weight, gain=1.0)

    @property
    def num_classes(self):
        return self.weight.shape[0] // self.subcenters

    def cosines(self, embeddings):
        """``(B, num_classes)`` cosines between embeddings and classes (the best sub-centre), in float32."""
        # Outside autocast: bf16 cosines near 1 are too coarse for a margin of a few tenths of a radian.
        with torch.autocast(embeddings.device.type, enabled=False):
            cosine = F.linear(F.normalize(embeddings.float(), dim=-1), F.normalize(self.weight.float(), dim=-1))
        if self.subcenters == 1:
            return cosine
        return cosine.view(len(cosine), self.num_classes, self.subcenters).amax(dim=2)

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
        logits = cosine
        # The inter-top-k margin grows with the scheduled margin (none while it is 0).
        top_margin = self.top_margin * margin / self.margin if self.margin > 0 else 0.0
        if self.top_k > 0 and top_margin > 0.0:
            logits = self.hard_negatives_raised(cosine, labels, top_margin)
        logits = self.scale * logits.scatter(1, labels[:, None], target_logit)
        return F.cross_entropy(logits, labels), logits, cosine

    def hard_negatives_raised(self, cosine, labels, top_margin):
        """``cosine`` with the ``top_k`` largest non-target cosines of each row turned into ``cos(theta - m')``."""
        with torch.no_grad():
            # The target is excluded by pushing it below every cosine (all lie in [-1, 1]).
            hardest = cosine.scatter(1, labels[:, None], -3.0).topk(self.top_k, dim=1).indices
        chosen = cosine.gather(1, hardest)
        sine = (1.0 - chosen * chosen).clamp_min(0.0).sqrt()
        raised = torch.where(chosen < math.cos(top_margin),
                             chosen * math.cos(top_margin) + sine * math.sin(top_margin),
                             chosen + (1.0 - math.cos(top_margin)))  # theta < m': keep increasing, continuously
        return cosine.scatter(1, hardest, raised)


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
    check_section(warmup, WARMUP_SECTION, name)
    start, end = float(warmup.get("start_epoch", 0.0)), float(warmup.get("end_epoch", 0.0))
    return MarginSchedule(margin, steps_per_epoch, start, end)
