"""ResNet for speaker verification (2-D convolutions over frequency x time).

Basic blocks in stages of widths base_width * (1, 2, 4, 8 ...), the first
stage at stride 1 and each later one halving frequency and time; the output
is flattened over channels x frequency, statistics-pooled over time and
projected to the embedding (as the ResNet34 of WeSpeaker / VoxCeleb systems).
``resnet34`` is blocks [3, 4, 6, 3] with base width 32 (64 for the "full"
ResNet34); ``resnet_thin`` is a small variant that trains on a CPU.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pyspk.models.frontend import Backbone
from pyspk.models.pooling import StatsPool

RESNET34_DEFAULTS = {
    "embed_dim": 256,
    "blocks": [3, 4, 6, 3],
    "base_width": 32,
    "stem_stride": 1,
}

# Small enough for a CPU demo: the stride-2 stem quarters the cost of every stage.
THIN_DEFAULTS = {
    "embed_dim": 128,
    "blocks": [1, 1, 1, 1],
    "base_width": 8,
    "stem_stride": 2,
}


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def strided_size(size: int, stride: int) -> int:
    """Output length of a 3x3 (padding 1) convolution with ``stride``."""
    return (size - 1) // stride + 1


class ResNet(Backbone):
    last_layers = ("embedding",)

    def __init__(self, feat_dim: int, embed_dim: int, cmn: bool, blocks: Sequence[int], base_width: int,
                 stem_stride: int):
        super().__init__(feat_dim, embed_dim, cmn)
        self.stem = nn.Sequential(
            nn.Conv2d(1, base_width, 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(base_width),
            nn.ReLU(inplace=True),
        )
        freq = strided_size(feat_dim, stem_stride)
        layers = []
        in_channels = base_width
        for stage, num_blocks in enumerate(blocks):
            out_channels = base_width * 2**stage
            stride = 1 if stage == 0 else 2
            for index in range(num_blocks):
                layers.append(BasicBlock(in_channels, out_channels, stride if index == 0 else 1))
                in_channels = out_channels
            freq = strided_size(freq, stride)
        self.stages = nn.Sequential(*layers)
        self.pool = StatsPool()
        self.embedding = nn.Linear(2 * in_channels * freq, embed_dim)

    def encode(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(feats.transpose(1, 2).unsqueeze(1)))
        x = x.flatten(1, 2)  # (batch, channels * freq, time)
        return self.embedding(self.pool(x))


def check(cfg: Mapping[str, Any]) -> str | None:
    if not cfg["blocks"] or min(cfg["blocks"]) < 1:
        return "blocks must be a non-empty list of positive block counts"
    return None

