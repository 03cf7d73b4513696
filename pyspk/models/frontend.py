"""The part every backbone shares: input checks and per-crop mean normalisation.

Mean normalisation lives inside the model's forward so that training crops and
extraction chunks are always normalised the same way.
"""

from typing import Any

import torch
from torch import nn


def mean_normalise(feats: torch.Tensor) -> torch.Tensor:
    """Subtract the mean over time from ``(batch, frames, feat_dim)`` features."""
    return feats - feats.mean(dim=1, keepdim=True)


class Backbone(nn.Module):
    """Base class: ``(batch, frames, feat_dim)`` fbank -> ``(batch, embed_dim)``.

    Subclasses implement ``encode`` on mean-normalised features. ``config`` is
    set by ``pyspk.models.build_model`` so the model can be saved and rebuilt.
    """

    min_frames = 1
    # Parameter-name prefixes of the last affine/embedding layers: what fine-tuning's
    # "train: last" stage updates besides the new head. Every model declares its own.
    last_layers: tuple[str, ...] = ()

    def __init__(self, feat_dim: int, embed_dim: int, cmn: bool = True):
        super().__init__()
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.cmn = cmn
        self.config: dict[str, Any] | None = None

    def encode(self, feats: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.dim() != 3 or feats.shape[2] != self.feat_dim:
            raise ValueError(f"{type(self).__name__} expects input (batch, frames, {self.feat_dim}), "
                             f"got {tuple(feats.shape)}")
        if feats.shape[1] < self.min_frames:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_frames} frames, got {feats.shape[1]}")
        if self.cmn:
            feats = mean_normalise(feats)
        return self.encode(feats)


class Conv1dReluBn(nn.Sequential):
    """Conv1d -> ReLU -> BatchNorm ('same' length when ``padding`` is None), as in Kaldi's relu-batchnorm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1,
                 padding: int | None = None):
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, padding=padding),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(out_channels),
        )

