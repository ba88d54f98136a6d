"""Bag-of-Queries aggregator (Ali-bey, Chaib-draa, Giguère, CVPR 2024).

A 3x3 convolution projects the backbone's map to ``proj_channels``; the flattened tokens are
LayerNorm-ed and pass through ``num_layers`` blocks. Each block refines the tokens with a
transformer encoder layer, and a bag of learnt queries (first mixed among themselves by
self-attention and LayerNorm) reads them by cross-attention; the queries' outputs of all
blocks are concatenated, a linear layer over the query axis maps them to ``row_dim`` rows,
and the flattened ``proj_channels x row_dim`` descriptor is L2-normalised.

Module and parameter names follow the authors' release (``proj_c``, ``norm_input``,
``boqs.N.{encoder, queries, self_attn, norm_q, cross_attn, norm_out}``, ``fc``) so that their
checkpoints load with ``strict=True``; their forward also returns the attention maps, which
the exported model does not carry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgevpr.model.registry import Param, register_aggregator

HEAD_DIM = 64  # the authors' heads are proj_channels / 64


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer (ReLU, feed-forward 4x), named as
    ``torch.nn.TransformerEncoderLayer`` names its parameters, without its fused fast path
    (which the ONNX exporter cannot trace)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.linear1 = nn.Linear(dim, 4 * dim)
        self.linear2 = nn.Linear(4 * dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x, x, x, need_weights=False)[0])
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class BoQBlock(nn.Module):
    def __init__(self, dim: int, num_queries: int, heads: int) -> None:
        super().__init__()
        self.encoder = EncoderLayer(dim, heads)
        self.queries = nn.Parameter(torch.randn(1, num_queries, dim))
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_q = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens -> (refined tokens, the queries' readout)."""
        x = self.encoder(x)
        q = self.queries.expand(x.shape[0], -1, -1)
        q = self.norm_q(q + self.self_attn(q, q, q, need_weights=False)[0])
        out = self.cross_attn(q, x, x, need_weights=False)[0]
        return x, self.norm_out(out)


@register_aggregator(
    "boq",
    proj_channels=Param(512, 64, 4096),
    num_queries=Param(64, 1, 1024),
    num_layers=Param(2, 1, 16),
    row_dim=Param(32, 1, 1024),
)
class BoQ(nn.Module):
    """N x C x H x W -> N x (proj_channels * row_dim) unit descriptors."""

    def __init__(
        self,
        in_channels: int,
        proj_channels: int = 512,
        num_queries: int = 64,
        num_layers: int = 2,
        row_dim: int = 32,
    ) -> None:
        super().__init__()
        self.proj_c = nn.Conv2d(in_channels, proj_channels, kernel_size=3, padding=1)
        self.norm_input = nn.LayerNorm(proj_channels)
        heads = max(1, proj_channels // HEAD_DIM)
        self.boqs = nn.ModuleList(
            BoQBlock(proj_channels, num_queries, heads) for _ in range(num_layers)
        )
        self.fc = nn.Linear(num_layers * num_queries, row_dim)
        self.output_dim = proj_channels * row_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm_input(self.proj_c(x).flatten(2).transpose(1, 2))
        outs = []
        for block in self.boqs:
            x, out = block(x)
            outs.append(out)
        rows = self.fc(torch.cat(outs, dim=1).transpose(1, 2))  # N x proj_channels x row_dim
        return F.normalize(rows.flatten(1), p=2, dim=-1)
