"""The model family: backbones cut at stride 16, MixVPR and comparison aggregators,
built by name or from a config, and the checkpoint format."""

from edgevpr.model.config import PRESETS, ModelConfig, default_preprocess, get_preset
from edgevpr.model.vpr import VPRModel, build_model

__all__ = ["PRESETS", "ModelConfig", "VPRModel", "build_model", "default_preprocess", "get_preset"]
