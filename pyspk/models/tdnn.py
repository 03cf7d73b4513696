"""Kaldi's x-vector TDNN (Snyder et al., ICASSP 2018).

Five frame-level layers with contexts [-2..2], {-2,0,2}, {-3,0,3}, {0}, {0}
(ReLU then BatchNorm, as Kaldi's relu-batchnorm), statistics pooling, and
segment6 whose affine output is the embedding. Convolutions are unpadded as
in Kaldi, so an input needs at least 15 frames.
"""

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pyspk.models.frontend import Backbone, Conv1dReluBn
from pyspk.models.pooling import StatsPool

DEFAULTS = {
    "embed_dim": 512,
    "channels": 512,
    "stats_channels": 1500,
}

# (kernel size, dilation) giving the Kaldi contexts above.
FRAME_LAYERS = [(5, 1), (3, 2), (3, 3), (1, 1)]


class XVectorTDNN(Backbone):
    last_layers = ("segment6",)

    def __init__(self, feat_dim: int, embed_dim: int, cmn: bool, channels: int, stats_channels: int):
        super().__init__(feat_dim, embed_dim, cmn)
        layers = []
        in_channels = feat_dim
        for kernel_size, dilation in FRAME_LAYERS:
            layers.append(Conv1dReluBn(in_channels, channels, kernel_size, dilation, padding=0))
            in_channels = channels
        layers.append(Conv1dReluBn(channels, stats_channels, 1))
        self.frame_layers = nn.Sequential(*layers)
        self.pool = StatsPool()
        self.segment6 = nn.Linear(2 * stats_channels, embed_dim)
        self.min_frames = 1 + sum(dilation * (kernel_size - 1) for kernel_size, dilation in FRAME_LAYERS)

    def encode(self, feats: torch.Tensor) -> torch.Tensor:
        return self.segment6(self.pool(self.frame_layers(feats.transpose(1, 2))))


def check(cfg: Mapping[str, Any]) -> str | None:
    return None
