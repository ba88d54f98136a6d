"""Global aggregators for comparison with MixVPR: GeM, AVG, MAC, NetVLAD and CosPlace.
Each maps B x C x H x W to a B x D L2-normalised descriptor and reports ``output_dim``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgevpr.model.registry import Param, register_aggregator


@register_aggregator("gem", p=Param(3.0, 1.0, 16.0))
class GeM(nn.Module):
    """Generalised-mean pooling with a learnable exponent p (Radenović et al.)."""

    def __init__(self, in_channels: int, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps
        self.output_dim = in_channels

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.clamp(min=self.eps).pow(self.p), x.shape[-2:]).pow(1.0 / self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.pool(x).flatten(1), p=2, dim=-1)


@register_aggregator("avg")
class AvgPool(nn.Module):
    """Global average pooling."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.output_dim = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.mean(dim=(2, 3)), p=2, dim=-1)


@register_aggregator("mac")
class MAC(nn.Module):
    """Global max pooling (maximum activation of convolutions)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.output_dim = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.amax(dim=(2, 3)), p=2, dim=-1)


@register_aggregator("netvlad", clusters=Param(64, 1, 1024))
class NetVLAD(nn.Module):
    """NetVLAD (Arandjelović et al.): soft-assignment to K clusters, residual sums,
    intra-normalisation, then L2. Output K * C."""

    def __init__(self, in_channels: int, clusters: int = 64, alpha: float = 100.0) -> None:
        super().__init__()
        self.clusters = clusters
        self.alpha = alpha
        self.conv = nn.Conv2d(in_channels, clusters, kernel_size=1, bias=True)
        self.centroids = nn.Parameter(torch.rand(clusters, in_channels))
        self.output_dim = clusters * in_channels
        self.reset_conv()

    def reset_conv(self) -> None:
        # The paper's init ties the assignment layer to the centroids.
        self.conv.weight.data = (2.0 * self.alpha * self.centroids).unsqueeze(-1).unsqueeze(-1)
        self.conv.bias.data = -self.alpha * self.centroids.norm(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, p=2, dim=1)  # descriptor-wise L2
        soft_assign = F.softmax(self.conv(x).flatten(2), dim=1)  # B x K x N
        features = x.flatten(2)  # B x C x N
        vlad = torch.einsum("bkn,bcn->bkc", soft_assign, features)
        vlad = vlad - soft_assign.sum(dim=2).unsqueeze(-1) * self.centroids.unsqueeze(0)
        vlad = F.normalize(vlad, p=2, dim=2)  # intra-normalisation
        return F.normalize(vlad.flatten(1), p=2, dim=-1)


@register_aggregator("cosplace", out_dim=Param(512, 1, 65536))
class CosPlace(nn.Module):
    """CosPlace head (Berton et al.): L2, GeM, linear projection, L2."""

    def __init__(self, in_channels: int, out_dim: int = 512) -> None:
        super().__init__()
        self.gem = GeM(in_channels)
        self.fc = nn.Linear(in_channels, out_dim)
        self.output_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gem.pool(F.normalize(x, p=2, dim=1)).flatten(1)
        return F.normalize(self.fc(x), p=2, dim=-1)
