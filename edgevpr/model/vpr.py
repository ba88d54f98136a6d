"""The full VPR model: backbone (stride 16) + aggregator, built from a ModelConfig."""

from __future__ import annotations

import torch
from torch import nn

from edgevpr.errors import EdgeVPRError
from edgevpr.model.aggregators import MAC, AvgPool, CosPlace, GeM, NetVLAD
from edgevpr.model.backbones import build_backbone, freeze_stages
from edgevpr.model.config import ModelConfig, get_preset
from edgevpr.model.mixvpr import MixVPR


class VPRModel(nn.Module):
    """Image batch (normalised, N x 3 x H x W) -> N x D unit-norm descriptors."""

    def __init__(self, config: ModelConfig, pretrained: bool = False) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone, pretrained)
        self.aggregator = build_aggregator(config, self.backbone.out_channels)

    @property
    def descriptor_dim(self) -> int:
        return int(self.aggregator.output_dim)

    def freeze(self) -> None:
        """Freeze the backbone stages the config names (the paper's recipe)."""
        freeze_stages(self.backbone, self.config.frozen_stages)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.aggregator(self.backbone(images))


def build_aggregator(config: ModelConfig, in_channels: int) -> nn.Module:
    params = config.params
    kind = config.aggregator
    if kind == "mixvpr":
        grid_h, grid_w = config.feature_grid
        return MixVPR(
            in_channels=in_channels,
            in_h=grid_h,
            in_w=grid_w,
            out_channels=int(params["out_channels"]),
            mix_depth=int(params["mix_depth"]),
            mlp_ratio=float(params["mlp_ratio"]),
            out_rows=int(params["out_rows"]),
        )
    if kind == "gem":
        return GeM(in_channels, p=float(params["p"]))
    if kind == "avg":
        return AvgPool(in_channels)
    if kind == "mac":
        return MAC(in_channels)
    if kind == "netvlad":
        return NetVLAD(in_channels, clusters=int(params["clusters"]))
    if kind == "cosplace":
        return CosPlace(in_channels, out_dim=int(params["out_dim"]))
    raise EdgeVPRError(f"unknown aggregator '{kind}'")


def build_model(config: ModelConfig | str, pretrained: bool = False) -> VPRModel:
    """Build a model from a config or a preset name (see ``edgevpr.model.PRESETS``)."""
    if isinstance(config, str):
        config = get_preset(config)
    return VPRModel(config, pretrained=pretrained)
