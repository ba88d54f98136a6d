"""Checkpoint -> one self-contained ONNX file with a dynamic batch axis and edgevpr metadata.

The dynamo exporter already simplifies the graph (its onnxscript optimiser folds batch norm
into the convolutions and folds constants: Lite0 at 128x128 is 103 nodes). onnxsim on top
removes only the additions of all-zero biases, which exist only in a freshly initialised
head, so no further simplifier is run.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from edgevpr import __version__
from edgevpr.core.errors import EdgeVPRError, first_line
from edgevpr.core.metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata
from edgevpr.export.onnx_io import (
    DEFAULT_OPSET,
    MIN_OPSET,
    save_onnx_atomic,
    set_metadata,
)
from edgevpr.model.checkpoint import Checkpoint

MAX_BATCH = 1024


def checkpoint_metadata(ckpt: Checkpoint, precision: str = "fp32") -> ModelMetadata:
    config = ckpt.model.config
    return ModelMetadata(
        descriptor_dim=ckpt.model.descriptor_dim,
        preprocess=config.preprocess,
        model_config=config.to_dict(),
        checkpoint_sha256=ckpt.sha256,
        precision=precision,
        edgevpr_version=__version__,
    )


def trace_to_onnx(model: torch.nn.Module, height: int, width: int, opset: int) -> onnx.ModelProto:
    """Run torch's dynamo exporter quietly and return the in-memory ONNX model."""
    example = torch.zeros(2, 3, height, width)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        # one call first: what a model computes once per input size in eval mode (a ViT's
        # resized position table) is then a constant of the graph, not a Resize in it
        model(example[:1])
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        target = Path(tmp) / "model.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(
                model,
                (example,),
                str(target),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"images": {0: batch}},
                opset_version=opset,
                external_data=False,
            )
        return onnx.load(str(target))


def export_onnx(
    ckpt: Checkpoint, path: str | os.PathLike[str], opset: int = DEFAULT_OPSET
) -> ModelMetadata:
    """Write ``ckpt`` as FP32 ONNX at ``path`` (atomically); returns the metadata written."""
    if opset < MIN_OPSET:
        raise EdgeVPRError(
            f"opset {opset} is too old: LayerNormalization needs opset >= {MIN_OPSET}"
        )
    if opset < DEFAULT_OPSET:
        raise EdgeVPRError(
            f"torch's exporter starts at opset {DEFAULT_OPSET}; use --opset 18 or newer"
        )
    spec = ckpt.model.config.preprocess
    model = ckpt.model.eval()
    try:
        proto = trace_to_onnx(model, spec.height, spec.width, opset)
    except Exception as exc:  # noqa: BLE001 - exporter failures are many and deep
        raise EdgeVPRError(f"ONNX export failed: {first_line(exc, 200)}") from None
    metadata = checkpoint_metadata(ckpt)
    set_metadata(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    save_onnx_atomic(proto, path)
    return metadata
