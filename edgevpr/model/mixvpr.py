"""MixVPR aggregator (Ali-bey et al., WACV 2023): an all-MLP Feature-Mixer over the flattened
spatial grid of each channel, then channel and row projections to a compact descriptor.

The module and parameter names follow the authors' release so that their published
checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgevpr.model.registry import Param, register_aggregator


def init_linear(module: nn.Module) -> None:
    """The paper's init: truncated normal (std 0.02) weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class FeatureMixerLayer(nn.Module):
    """x + MLP(LayerNorm(x)) acting on the last (spatial) axis."""

    def __init__(self, in_dim: int, mlp_ratio: float = 1.0) -> None:
        super().__init__()
        hidden = int(in_dim * mlp_ratio)
        self.mix = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, in_dim),
        )
        self.mix.apply(init_linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(x)


@register_aggregator(
    "mixvpr",
    spatial=True,
    mix_depth=Param(4, 1, 64),
    mlp_ratio=Param(1.0, 0.0625, 16.0),
    out_channels=Param(1024, 1, 8192),
    out_rows=Param(4, 1, 1024),
)
class MixVPR(nn.Module):
    """B x C x H x W feature map -> B x (out_channels * out_rows) unit descriptor."""

    def __init__(
        self,
        in_channels: int = 1024,
        in_h: int = 20,
        in_w: int = 20,
        out_channels: int = 1024,
        mix_depth: int = 4,
        mlp_ratio: float = 1.0,
        out_rows: int = 4,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.in_h = in_h
        self.in_w = in_w
        self.out_channels = out_channels
        self.out_rows = out_rows
        hw = in_h * in_w
        self.mix = nn.Sequential(*[FeatureMixerLayer(hw, mlp_ratio) for _ in range(mix_depth)])
        self.channel_proj = nn.Linear(in_channels, out_channels)
        self.row_proj = nn.Linear(hw, out_rows)
        self.channel_proj.apply(init_linear)
        self.row_proj.apply(init_linear)

    @property
    def output_dim(self) -> int:
        return self.out_channels * self.out_rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2)  # B x C x HW: each channel map is one row
        x = self.mix(x)
        x = self.channel_proj(x.transpose(1, 2))  # B x HW x out_channels
        x = self.row_proj(x.transpose(1, 2))  # B x out_channels x out_rows
        return F.normalize(x.flatten(1), p=2, dim=-1)
