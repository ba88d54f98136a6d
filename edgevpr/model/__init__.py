"""The model family: backbones cut at stride 16, MixVPR and comparison aggregators,
registered by name (``list_backbones``, ``list_aggregators``) and built from presets
(``list_models``) or configs, and the checkpoint format."""

from edgevpr.model.config import (
    PRESETS,
    ModelConfig,
    default_preprocess,
    get_preset,
    list_models,
)
from edgevpr.model.registry import list_aggregators, list_backbones
from edgevpr.model.vpr import VPRModel, build_model

__all__ = [
    "PRESETS",
    "ModelConfig",
    "VPRModel",
    "build_model",
    "default_preprocess",
    "get_preset",
    "list_aggregators",
    "list_backbones",
    "list_models",
]
