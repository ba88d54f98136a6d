"""What an exported model says about itself. Export writes these keys (ONNX
``metadata_props``, or the JSON header beside a TensorRT engine); the runtime reads them, so a
deployed model needs no checkpoint and no torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.preprocess import PreprocessSpec

METADATA_VERSION = 1
INPUT_NAME = "images"
OUTPUT_NAME = "descriptors"

KEY_FORMAT_VERSION = "edgevpr.format_version"
KEY_EDGEVPR_VERSION = "edgevpr.version"
KEY_DESCRIPTOR_DIM = "edgevpr.descriptor_dim"
KEY_PREPROCESS = "edgevpr.preprocess"  # JSON of PreprocessSpec.to_dict()
KEY_MODEL_CONFIG = "edgevpr.model_config"  # JSON of ModelConfig.to_dict()
KEY_CHECKPOINT_SHA256 = "edgevpr.checkpoint_sha256"
KEY_PRECISION = "edgevpr.precision"  # fp32 | fp16 | int8
PRECISIONS = ("fp32", "fp16", "int8")
MAX_DESCRIPTOR_DIM = 65536
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelMetadata:
    """The runtime's view of an exported model."""

    descriptor_dim: int
    preprocess: PreprocessSpec
    model_config: dict[str, Any]
    checkpoint_sha256: str
    precision: str
    edgevpr_version: str

    @property
    def fingerprint(self) -> str:
        """Identifies the weights that made a descriptor space. FP32, FP16 and INT8 exports
        of one checkpoint share it: their descriptors live in the same space."""
        return self.checkpoint_sha256

    def to_props(self) -> dict[str, str]:
        return {
            KEY_FORMAT_VERSION: str(METADATA_VERSION),
            KEY_EDGEVPR_VERSION: self.edgevpr_version,
            KEY_DESCRIPTOR_DIM: str(self.descriptor_dim),
            KEY_PREPROCESS: json.dumps(self.preprocess.to_dict(), sort_keys=True),
            KEY_MODEL_CONFIG: json.dumps(self.model_config, sort_keys=True),
            KEY_CHECKPOINT_SHA256: self.checkpoint_sha256,
            KEY_PRECISION: self.precision,
        }

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMetadata:
        if KEY_FORMAT_VERSION not in props:
            raise EdgeVPRError(
                f"{source} carries no edgevpr metadata: export it with 'edgevpr export'"
            )
        if props[KEY_FORMAT_VERSION] != str(METADATA_VERSION):
            raise EdgeVPRError(
                f"{source} has edgevpr metadata version {props[KEY_FORMAT_VERSION]}; "
                f"this edgevpr reads {METADATA_VERSION}"
            )
        try:
            preprocess = json.loads(props[KEY_PREPROCESS])
            model_config = json.loads(props[KEY_MODEL_CONFIG])
            if not isinstance(preprocess, dict) or not isinstance(model_config, dict):
                raise ValueError("preprocess and model config must be JSON objects")
            metadata = cls(
                descriptor_dim=int(props[KEY_DESCRIPTOR_DIM]),
                preprocess=PreprocessSpec.from_dict(preprocess),
                model_config=model_config,
                checkpoint_sha256=props[KEY_CHECKPOINT_SHA256],
                precision=props[KEY_PRECISION],
                edgevpr_version=props.get(KEY_EDGEVPR_VERSION, "unknown"),
            )
        except (KeyError, ValueError, TypeError, EdgeVPRError) as exc:
            raise EdgeVPRError(f"{source} has broken edgevpr metadata ({exc})") from None
        if not 1 <= metadata.descriptor_dim <= MAX_DESCRIPTOR_DIM:
            raise EdgeVPRError(
                f"{source} has broken edgevpr metadata (descriptor size {metadata.descriptor_dim})"
            )
        # the fingerprint also names cache files (bench): only a sha256 is one
        if metadata.precision not in PRECISIONS or not SHA256.fullmatch(metadata.checkpoint_sha256):
            raise EdgeVPRError(
                f"{source} has broken edgevpr metadata (precision '{metadata.precision[:16]}', "
                f"fingerprint '{metadata.checkpoint_sha256[:70]}')"
            )
        return metadata
