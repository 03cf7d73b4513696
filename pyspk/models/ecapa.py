"""ECAPA-TDNN (Desplanques et al., Interspeech 2020).

Conv1d stem, SE-Res2Blocks with growing dilation, multi-layer feature
aggregation, attentive statistics pooling with global context, then
BatchNorm + linear + BatchNorm to the embedding.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pyspk.models.frontend import Backbone, Conv1dReluBn
from pyspk.models.pooling import AttentiveStatsPool

DEFAULTS = {
    "embed_dim": 192,
    "channels": 512,
    "scale": 8,
    "dilations": [2, 3, 4],
    "se_channels": 128,
    "attention_channels": 128,
    "mfa_channels": 1536,  # the paper keeps 1536 for C=1024 too (14.7M parameters)
    "global_context": True,
}


class Res2Conv1d(nn.Module):
    """Res2Net convolution: channel groups processed in a hierarchy of growing receptive fields."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int):
        super().__init__()
        self.scale = scale
        width = channels // scale
        self.convs = nn.ModuleList(Conv1dReluBn(width, width, kernel_size, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.chunk(x, self.scale, dim=1)
        outputs = [groups[0]]
        previous = None
        for group, conv in zip(groups[1:], self.convs, strict=True):
            previous = conv(group if previous is None else group + previous)
            outputs.append(previous)
        return torch.cat(outputs, dim=1)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, bottleneck: int):
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(channels, bottleneck),
            nn.ReLU(inplace=True),
            nn.Linear(bottleneck, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean(dim=-1)).unsqueeze(-1)


class SERes2Block(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int, se_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            Conv1dReluBn(channels, channels, 1),
            Res2Conv1d(channels, kernel_size, dilation, scale),
            Conv1dReluBn(channels, channels, 1),
            SqueezeExcitation(channels, se_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ECAPATDNN(Backbone):
    last_layers = ("embedding", "embed_norm")

    def __init__(self, feat_dim: int, embed_dim: int, cmn: bool, channels: int, scale: int, dilations: Sequence[int],
                 se_channels: int, attention_channels: int, mfa_channels: int, global_context: bool):
        super().__init__(feat_dim, embed_dim, cmn)
        self.stem = Conv1dReluBn(feat_dim, channels, kernel_size=5)
        self.blocks = nn.ModuleList(SERes2Block(channels, 3, d, scale, se_channels) for d in dilations)
        self.aggregate = Conv1dReluBn(channels * len(dilations), mfa_channels, 1)
        self.pool = AttentiveStatsPool(mfa_channels, attention_channels, global_context)
        self.pool_norm = nn.BatchNorm1d(2 * mfa_channels)
        self.embedding = nn.Linear(2 * mfa_channels, embed_dim)
        self.embed_norm = nn.BatchNorm1d(embed_dim)

    def encode(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.stem(feats.transpose(1, 2))
        block_outputs = []
        for block in self.blocks:
            x = block(x)
            block_outputs.append(x)
        x = self.aggregate(torch.cat(block_outputs, dim=1))
        x = self.pool_norm(self.pool(x))
        return self.embed_norm(self.embedding(x))


def check(cfg: Mapping[str, Any]) -> str | None:
    """Model-specific consistency checks; returns an error message or None."""
    if cfg["channels"] % cfg["scale"]:
        return f"channels ({cfg['channels']}) must be divisible by scale ({cfg['scale']})"
    if not cfg["dilations"]:
        return "dilations must list at least one block"
    return None
