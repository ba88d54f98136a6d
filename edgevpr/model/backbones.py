"""CNN backbones cut at stride 16 (after ResNet ``layer3``): torchvision ResNets, ResNeXt and
VGG16 (EfficientNet-Lite0 is in ``efficientnet_lite``). Each exposes ``out_channels`` and
``stride`` and can freeze its first stages, as the MixVPR recipe does (stem, layer1, layer2).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from edgevpr.core.errors import EdgeVPRError
from edgevpr.model.registry import register_backbone


class ResNetBackbone(nn.Module):
    """A torchvision ResNet/ResNeXt without layer4, avgpool and fc.

    Kept under ``self.model`` with the cut layers set to None, as the MixVPR release does,
    so parameter names are ``backbone.model.layer3...`` in a full model.
    """

    stride = 16

    def __init__(self, arch: str, pretrained: bool = False) -> None:
        super().__init__()
        import torchvision

        if arch not in RESNET_ARCHS:
            raise EdgeVPRError(f"unknown ResNet backbone '{arch}'")
        self.model = torchvision_model(torchvision, arch, pretrained)
        self.model.layer4 = None
        self.model.avgpool = None
        self.model.fc = None
        self.out_channels = RESNET_ARCHS[arch]

    def stages(self) -> list[list[nn.Module]]:
        m = self.model
        return [[m.conv1, m.bn1], [m.layer1], [m.layer2], [m.layer3]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer3(m.layer2(m.layer1(x)))


@register_backbone("vgg16", out_channels=512)
class VGG16Backbone(nn.Module):
    """VGG16 convolutions up to conv5_3 + ReLU (the last max-pool removed): 512 channels,
    stride 16, as in NetVLAD and the DW-T-Loss paper."""

    stride = 16
    out_channels = 512

    def __init__(self, pretrained: bool = False) -> None:
        super().__init__()
        import torchvision

        vgg = torchvision_model(torchvision, "vgg16", pretrained)
        self.model = nn.Module()
        self.model.features = vgg.features[:-1]

    def stages(self) -> list[list[nn.Module]]:
        # Blocks end at each max-pool; conv1..conv5 groups.
        features = self.model.features
        bounds = [0, 5, 10, 17, 24, len(features)]
        return [list(features[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


RESNET_ARCHS = {
    "resnet18": 256,
    "resnet34": 256,
    "resnet50": 1024,
    "resnet101": 1024,
    "resnext50_32x4d": 1024,
}
for _arch, _channels in RESNET_ARCHS.items():
    register_backbone(_arch, out_channels=_channels)(functools.partial(ResNetBackbone, _arch))

TORCHVISION_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
    "resnext50_32x4d": "ResNeXt50_32X4D_Weights",
    "vgg16": "VGG16_Weights",
}


def torchvision_model(torchvision, arch: str, pretrained: bool) -> nn.Module:
    """Build a torchvision classifier, with ImageNet weights when asked for.

    Weights come from torchvision's cache ($TORCH_HOME) or its download; offline, the user
    gets one line saying where to put the file instead of a urllib traceback.
    """
    builder = getattr(torchvision.models, arch)
    if not pretrained:
        return builder(weights=None)
    weights = getattr(torchvision.models, TORCHVISION_WEIGHTS[arch]).IMAGENET1K_V1
    try:
        return builder(weights=weights)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise EdgeVPRError(
            f"cannot get ImageNet weights for {arch} ({type(exc).__name__}: {exc}); "
            f"offline, put {weights.url.rsplit('/', 1)[-1]} in "
            f"{torch.hub.get_dir()}/checkpoints or build with pretrained=False"
        ) from None


def freeze_stages(backbone: nn.Module, count: int) -> None:
    """Stop gradients in the first ``count`` stages (the stem counts as stage 0)."""
    for stage in backbone.stages()[:count]:
        for part in stage:  # a module, or a parameter held outside any submodule
            for param in [part] if isinstance(part, nn.Parameter) else part.parameters():
                param.requires_grad_(False)
