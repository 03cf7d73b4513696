"""Temporal pooling layers: (batch, channels, frames) -> (batch, 2 * channels)."""

import torch
from torch import nn

# Variance floor: keeps sqrt differentiable on constant (e.g. padded-by-repetition) inputs.
VAR_FLOOR = 1e-5


def weighted_mean_std(x: torch.Tensor, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over the last axis, optionally weighted (weights sum to 1)."""
    if weights is None:
        mean = x.mean(dim=-1)
        var = x.var(dim=-1, unbiased=False)
    else:
        mean = (x * weights).sum(dim=-1)
        var = (x * x * weights).sum(dim=-1) - mean * mean
    return mean, torch.sqrt(var.clamp(min=VAR_FLOOR))


class StatsPool(nn.Module):
    """Mean and standard deviation over time (Kaldi x-vector statistics pooling)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = weighted_mean_std(x)
        return torch.cat([mean, std], dim=1)


class AttentiveStatsPool(nn.Module):
    """Channel- and context-dependent attentive statistics pooling (ECAPA-TDNN).

    With ``global_context`` the attention sees each frame together with the
    utterance's mean and standard deviation.
    """

    def __init__(self, channels: int, attention_channels: int = 128, global_context: bool = True):
        super().__init__()
        self.global_context = global_context
        in_channels = 3 * channels if global_context else channels
        self.attention = nn.Sequential(
            nn.Conv1d(in_channels, attention_channels, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(attention_channels),
            nn.Tanh(),
            nn.Conv1d(attention_channels, channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_context:
            mean, std = weighted_mean_std(x)
            frames = x.shape[-1]
            context = torch.cat([x, mean.unsqueeze(-1).expand(-1, -1, frames),
                                 std.unsqueeze(-1).expand(-1, -1, frames)], dim=1)
        else:
            context = x
        weights = torch.softmax(self.attention(context), dim=-1)
        mean, std = weighted_mean_std(x, weights)
        return torch.cat([mean, std], dim=1)
