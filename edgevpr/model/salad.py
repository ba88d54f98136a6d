"""SALAD aggregator (Izquierdo, Civera, CVPR 2024): Sinkhorn Algorithm for Locally
Aggregated Descriptors, on a DINOv2 backbone.

Each patch token gets a ``cluster_dim`` feature and a score for each of ``num_clusters``
clusters (two-layer 1x1-convolution heads, hidden width 512). The scores, with a learnt
dustbin row for tokens that belong nowhere, become an assignment by optimal transport:
Sinkhorn iterations in log space with uniform marginals. Features are summed per cluster
with those weights and L2-normalised per cluster; the class token through a two-layer MLP
gives a ``token_dim`` global scene feature. Their concatenation, L2-normalised, is the
descriptor: ``num_clusters * cluster_dim + token_dim`` (8448 with the defaults; the compact
heads 2112 and 544 are other parameter values).

Parameter names follow the authors' release (``token_features``, ``cluster_features``,
``score``, ``dust_bin``) so that their checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgevpr.model.registry import Param, register_aggregator

HIDDEN = 512


def log_optimal_transport(scores: torch.Tensor, dustbin: torch.Tensor, iters: int) -> torch.Tensor:
    """Log assignment of N tokens to M clusters plus a dustbin row: scores B x M x N ->
    B x (M+1) x N, with row mass 1/(M+N) per cluster and (N-M)/(M+N) for the dustbin, and
    column mass 1/(M+N) per token; scaled back by M+N."""
    b, m, n = scores.shape
    couplings = torch.cat([scores, dustbin.expand(b, 1, n)], dim=1)
    norm = -math.log(m + n)
    # (a map with fewer tokens than clusters gives the dustbin the mass of one token)
    log_mu = torch.tensor([norm] * m + [math.log(max(n - m, 1)) + norm], dtype=scores.dtype,
                          device=scores.device)  # fmt: skip
    log_nu = torch.full((n,), norm, dtype=scores.dtype, device=scores.device)
    u = torch.zeros(b, m + 1, dtype=scores.dtype, device=scores.device)
    v = torch.zeros(b, n, dtype=scores.dtype, device=scores.device)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(couplings + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(couplings + u.unsqueeze(2), dim=1)
    return couplings + u.unsqueeze(2) + v.unsqueeze(1) - norm


def head(in_channels: int, out_channels: int, dropout: float) -> nn.Sequential:
    """1x1 conv, dropout, ReLU, 1x1 conv (indices 0 and 3 hold the weights)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, HIDDEN, 1),
        nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        nn.ReLU(),
        nn.Conv2d(HIDDEN, out_channels, 1),
    )


@register_aggregator(
    "salad",
    takes_token=True,
    num_clusters=Param(64, 1, 1024),
    cluster_dim=Param(128, 1, 1024),
    token_dim=Param(256, 1, 4096),
    sinkhorn_iters=Param(3, 1, 100),
    dropout=Param(0.3, 0.0, 0.9),
)
class SALAD(nn.Module):
    """(N x C x H x W map, N x C class token) -> N x (clusters * cluster_dim + token_dim)."""

    def __init__(
        self,
        in_channels: int,
        num_clusters: int = 64,
        cluster_dim: int = 128,
        token_dim: int = 256,
        sinkhorn_iters: int = 3,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.iters = sinkhorn_iters
        self.token_features = nn.Sequential(
            nn.Linear(in_channels, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, token_dim)
        )
        self.cluster_features = head(in_channels, cluster_dim, dropout)
        self.score = head(in_channels, num_clusters, dropout)
        self.dust_bin = nn.Parameter(torch.tensor(1.0))
        self.output_dim = num_clusters * cluster_dim + token_dim

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        features, token = inputs
        local = self.cluster_features(features).flatten(2)  # B x l x N
        scores = self.score(features).flatten(2)  # B x m x N
        weights = log_optimal_transport(scores, self.dust_bin, self.iters).exp()[:, :-1]
        clusters = torch.einsum("bln,bmn->blm", local, weights)  # B x l x m
        clusters = F.normalize(clusters, p=2, dim=1).flatten(1)
        scene = F.normalize(self.token_features(token), p=2, dim=-1)
        return F.normalize(torch.cat([scene, clusters], dim=-1), p=2, dim=-1)
