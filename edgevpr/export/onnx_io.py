"""Reading and writing exported ONNX files without torch (so INT8 and TensorRT builds from
an existing ONNX run on machines that have no PyTorch, such as a Jetson)."""

from __future__ import annotations

import os

import onnx

from edgevpr.core.files import write_bytes_atomic
from edgevpr.core.metadata import ModelMetadata

# The dynamo exporter starts at opset 18; 17 is the least that has LayerNormalization.
DEFAULT_OPSET = 18
MIN_OPSET = 17


def set_metadata(model: onnx.ModelProto, metadata: ModelMetadata) -> None:
    props = metadata.to_props()
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def save_onnx_atomic(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Serialise to a temporary file beside ``path`` and rename it into place."""
    write_bytes_atomic(path, model.SerializeToString())
