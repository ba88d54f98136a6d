"""The one table of artifact formats, in the manner of Ultralytics' export table: what each
kind of file is, how it is recognised, what runs it and what describes it. The runtime's
embedder, ``edgevpr info``, evaluation, export and the benchmark all dispatch on it, so a
new format is one row here (and the module its row names).

Torch-free: the runtime reads it. Functions are named as ``"module:attribute"`` and imported
only when used, so reading a place map never imports ONNX Runtime, nor an ONNX model torch.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevpr.core.errors import EdgeVPRError

MAP_MAGIC = b"EDGEVPRMAP\r\n\x1a\n"  # what every place map file begins with (any version)

RUNTIME = "runtime"  # runs on the torch-free runtime's Embedder
PYTORCH = "pytorch"  # runs in PyTorch (training's side)


@dataclass(frozen=True)
class ArtifactFormat:
    """One kind of file edgevpr reads."""

    key: str
    label: str
    suffixes: tuple[str, ...]
    # what it can hold (a model's numeric precision); empty for files that are not models
    precisions: tuple[str, ...]
    # RUNTIME, PYTORCH, or None for files that do not embed images
    runs_on: str | None
    # "module:Class" the runtime opens it with: Class(path, providers, threads, batch_size)
    backend: str | None
    # "module:function" giving ``edgevpr info``'s description of a file
    describer: str
    # the pip extra its reader needs, named in the error where it is missing
    extra: str | None = None
    # files of this format begin with these bytes, whatever their suffix
    magic: bytes | None = None

    def load(self, reference: str) -> Any:
        """Import what ``reference`` ("module:attribute") names, or a one-line error that
        says which extra to install."""
        module_name, attribute = reference.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing == "edgevpr" or self.extra is None:
                raise
            raise EdgeVPRError(
                f"reading a {self.label} needs the '{missing}' package: "
                f"pip install 'edgevpr[{self.extra}]'"
            ) from None
        return getattr(module, attribute)

    def describe(self, path: Path) -> dict[str, Any]:
        return self.load(self.describer)(path)


FORMATS: dict[str, ArtifactFormat] = {
    fmt.key: fmt
    for fmt in (
        ArtifactFormat(
            key="checkpoint",
            label="PyTorch checkpoint",
            suffixes=(".pt", ".pth", ".ckpt"),
            precisions=("fp32",),
            runs_on=PYTORCH,
            backend=None,
            describer="edgevpr.model.checkpoint:describe_file",
            extra="train",
        ),
        ArtifactFormat(
            key="onnx",
            label="ONNX model",
            suffixes=(".onnx",),
            precisions=("fp32", "fp16", "int8"),
            runs_on=RUNTIME,
            backend="edgevpr.runtime.backends:open_onnx_backend",
            describer="edgevpr.runtime.describe:describe_onnx",
        ),
        ArtifactFormat(
            key="engine",
            label="TensorRT engine",
            suffixes=(".engine", ".plan"),
            precisions=("fp32", "fp16", "int8"),
            runs_on=RUNTIME,
            backend="edgevpr.runtime.backends.tensorrt:TensorRTBackend",
            describer="edgevpr.runtime.describe:describe_engine",
            extra="trt",
        ),
        ArtifactFormat(
            key="place-map",
            label="place map",
            suffixes=(".vprmap",),
            precisions=(),
            runs_on=None,
            backend=None,
            describer="edgevpr.runtime.describe:describe_place_map",
            magic=MAP_MAGIC,
        ),
    )
}


def suffixes_of(runs_on: str | None = None) -> list[str]:
    """Every suffix of the formats that run on ``runs_on`` (all formats when None)."""
    return [s for f in FORMATS.values() if runs_on in (None, f.runs_on) for s in f.suffixes]


def format_of(path: str | os.PathLike[str]) -> ArtifactFormat:
    """The format of ``path``: by its first bytes where a format has a signature, else by
    its suffix; a one-line error naming the known suffixes otherwise."""
    path = Path(path)
    if path.is_file():
        for fmt in FORMATS.values():
            if fmt.magic is not None and _starts_with(path, fmt.magic):
                return fmt
    suffix = path.suffix.lower()
    for fmt in FORMATS.values():
        if suffix in fmt.suffixes:
            return fmt
    known = "; ".join(f"{f.label} ({', '.join(f.suffixes)})" for f in FORMATS.values())
    raise EdgeVPRError(f"cannot tell what {path.name} is: expected a {known}")


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(magic)) == magic
    except OSError:
        return False
