"""What ``edgevpr bench MODEL...`` runs: each MODEL (a checkpoint, an exported ONNX or INT8
ONNX file, a TensorRT engine, or a preset name) is read, files of one checkpoint (same
fingerprint) are grouped into one model, and the formats a checkpoint lacks are exported on
the fly into the cache with ``edgevpr.export`` (what ``edgevpr export`` writes), so that one
command compares every format.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr import __version__
from edgevpr.bench.backends import CHECKPOINT, ENGINE, ONNX_FP32, ONNX_INT8
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.files import cache_root, file_sha256
from edgevpr.core.formats import format_of
from edgevpr.core.metadata import ModelMetadata

CALIBRATION_IMAGES = 64
# What each file of a model group is called in messages, by the backends' artifact names.
ARTIFACT_LABELS = {
    CHECKPOINT: "checkpoint",
    ONNX_FP32: "FP32 ONNX model",
    ONNX_INT8: "INT8 model",
    ENGINE: "TensorRT engine",
}

Progress = Callable[[str], None]


def default_cache_dir() -> Path:
    return cache_root() / "bench"


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


@dataclass
class ModelGroup:
    """One model (one checkpoint fingerprint) and the files that represent it."""

    label: str
    fingerprint: str
    checkpoint: Path | None = None
    onnx_fp32: Path | None = None
    onnx_int8: Path | None = None
    engine: Path | None = None
    metadata: ModelMetadata | None = None
    notes: list[str] = field(default_factory=list)
    # artifact (a backend's) -> why it could not be made (export failures become skipped
    # rows, not crashes)
    unavailable: dict[str, str] = field(default_factory=dict)
    generated: set[str] = field(default_factory=set)

    def files(self) -> dict[str, str]:
        named = {
            "checkpoint": self.checkpoint,
            "ONNX FP32": self.onnx_fp32,
            "ONNX INT8": self.onnx_int8,
            "TensorRT engine": self.engine,
        }  # fmt: skip
        out = {}
        for label, path in named.items():
            if path is not None:
                made = " (exported by bench into the cache)" if label in self.generated else ""
                out[label + made] = str(path)
        return out


def onnx_metadata(path: Path) -> ModelMetadata:
    """The edgevpr metadata of an ONNX file, checked by the runtime (no onnx package needed)."""
    from edgevpr.runtime.backends.onnxruntime import read_onnx_metadata

    return read_onnx_metadata(path)


def checkpoint_metadata(path: Path) -> ModelMetadata:
    """What an FP32 export of the checkpoint would say about itself (loads it: torch)."""
    from edgevpr.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    return ModelMetadata(
        descriptor_dim=ckpt.model.descriptor_dim,
        preprocess=ckpt.model.config.preprocess,
        model_config=ckpt.model.config.to_dict(),
        checkpoint_sha256=ckpt.sha256,
        precision="fp32",
        edgevpr_version=__version__,
    )


def engine_metadata(path: Path) -> ModelMetadata:
    from edgevpr.core.engine_header import read_engine_header

    return read_engine_header(path).model_metadata(source=f"engine header of {path}")


def preset_checkpoint(name: str, cache_dir: Path, say: Progress) -> Path:
    """A checkpoint of a named preset, made once (seeded) and kept in the cache."""
    from edgevpr.model import get_preset
    from edgevpr.model.registry import get_backbone

    config = get_preset(name)
    # ImageNet weights where they load offline; random weights change no timing (but make
    # descriptor comparisons less telling)
    pretrained = get_backbone(config.backbone).weights_offline
    path = cache_dir / "checkpoints" / f"{name}-{'imagenet' if pretrained else 'random'}.pt"
    if path.is_file():
        return path
    import torch

    from edgevpr.model import build_model
    from edgevpr.model.checkpoint import save_checkpoint

    say(f"building preset {name} ({'ImageNet backbone' if pretrained else 'random weights'})")
    torch.manual_seed(0)
    model = build_model(config, pretrained=pretrained)
    save_checkpoint(path, model, provenance={"made_by": "edgevpr bench", "preset": name})
    return path


def resolve_one(arg: str, cache_dir: Path, say: Progress) -> tuple[str, Path, ModelGroup]:
    """-> (kind, path, a one-file group)."""
    path = Path(arg)
    label = path.name
    if not path.exists():
        if not has_module("torch"):  # the presets are built with torch
            raise EdgeVPRError(
                f"model {arg}: no such file (a preset name needs torch: "
                "pip install 'edgevpr[export]')"
            )
        from edgevpr.model.config import PRESETS

        if arg in PRESETS:
            path = preset_checkpoint(arg, cache_dir, say)
            label = arg
        else:
            raise EdgeVPRError(
                f"model {arg}: no such file, and not a preset name "
                f"(presets: {', '.join(sorted(PRESETS))})"
            )
    if not path.is_file():
        raise EdgeVPRError(f"model {path} is not a file")
    kind = format_of(path).key
    if kind == "checkpoint":
        group = ModelGroup(label, file_sha256(path), checkpoint=path)
        if has_module("torch"):  # a bad checkpoint is refused now, not as a skipped row later
            group.metadata = checkpoint_metadata(path)
        if label != path.name:
            weights = "ImageNet backbone" if "imagenet" in path.name else "random weights"
            group.notes.append(f"preset {arg} with {weights} (timings do not depend on weights)")
        return kind, path, group
    if kind == "onnx":
        metadata = onnx_metadata(path)
        group = ModelGroup(label, metadata.fingerprint, metadata=metadata)
        if metadata.precision == "int8":
            group.onnx_int8 = path
        elif metadata.precision == "fp32":
            group.onnx_fp32 = path
        else:
            raise EdgeVPRError(
                f"{path} is a {metadata.precision} ONNX model; bench runs FP32 and INT8 ONNX "
                "(FP16 runs as a TensorRT engine)"
            )
        return kind, path, group
    if kind == "engine":
        metadata = engine_metadata(path)
        group = ModelGroup(label, metadata.fingerprint, engine=path, metadata=metadata)
        return kind, path, group
    raise EdgeVPRError(f"model {path}: a {format_of(path).label} is not a model")


def merge(into: ModelGroup, other: ModelGroup, arg: str) -> None:
    for name in ("checkpoint", "onnx_fp32", "onnx_int8", "engine"):
        mine, theirs = getattr(into, name), getattr(other, name)
        if theirs is not None:
            if mine is not None and mine != theirs:
                raise EdgeVPRError(
                    f"{arg} and {mine} are both the {name} of one model; give one of them"
                )
            setattr(into, name, theirs)
    into.metadata = into.metadata or other.metadata
    into.notes += other.notes


def resolve_models(args: list[str], cache_dir: Path, say: Progress) -> list[ModelGroup]:
    """MODEL arguments -> models, files of one checkpoint grouped, in the order given."""
    groups: dict[str, ModelGroup] = {}
    for arg in args:
        _, _, group = resolve_one(arg, cache_dir, say)
        if group.fingerprint in groups:
            merge(groups[group.fingerprint], group, arg)
        else:
            groups[group.fingerprint] = group
    return list(groups.values())


# --- on-the-fly exports ----------------------------------------------------------------------

def export_dir(cache_dir: Path, group: ModelGroup) -> Path:
    return cache_dir / "exports" / f"{group.fingerprint[:16]}-v{__version__}"


def ensure_fp32(group: ModelGroup, cache_dir: Path, say: Progress) -> None:
    """Export the checkpoint to FP32 ONNX (cached) where no FP32 ONNX file was given."""
    if group.onnx_fp32 is not None or group.checkpoint is None:
        return
    if not (has_module("torch") and has_module("onnx")):
        group.unavailable[ONNX_FP32] = (
            "exporting needs torch and onnx: pip install 'edgevpr[export]'"
        )
        return
    target = export_dir(cache_dir, group) / "model.onnx"
    if not target.is_file():
        from edgevpr.export.onnx_export import export_onnx
        from edgevpr.model.checkpoint import load_checkpoint

        say(f"exporting {group.label} to ONNX (once; cached in {target.parent})")
        try:
            export_onnx(load_checkpoint(group.checkpoint), target)
        except EdgeVPRError as exc:
            group.unavailable[ONNX_FP32] = f"ONNX export failed: {exc}"
            return
    group.onnx_fp32 = target
    group.generated.add("ONNX FP32")


def ensure_int8(
    group: ModelGroup, cache_dir: Path, calibration: Callable[[], np.ndarray], key: str,
    say: Progress,
) -> None:
    """Quantise the FP32 ONNX to INT8 (cached per calibration set) where none was given."""
    if group.onnx_int8 is not None:
        return
    if group.onnx_fp32 is None or group.checkpoint is None:
        group.unavailable.setdefault(
            ONNX_INT8, "no INT8 model: give an INT8 .onnx (edgevpr export --int8) or the checkpoint"
        )
        return
    if not has_module("onnx"):
        group.unavailable[ONNX_INT8] = "INT8 quantisation needs onnx: pip install 'edgevpr[export]'"
        return
    target = export_dir(cache_dir, group) / f"model.int8-{key}.onnx"
    if not target.is_file():
        from edgevpr.export.quantize import quantize_int8

        say(f"quantising {group.label} to INT8 (once; cached in {target.parent})")
        try:
            result = quantize_int8(group.onnx_fp32, target, calibration(), progress=say)
        except EdgeVPRError as exc:
            group.unavailable[ONNX_INT8] = f"INT8 quantisation failed: {exc}"
            return
        say(f"INT8: cosine {result.cosine_min:.4f} to FP32 on the calibration images")
    group.onnx_int8 = target
    group.generated.add("ONNX INT8")


def ensure_engine(group: ModelGroup, cache_dir: Path, max_batch: int, say: Progress) -> None:
    """Build a TensorRT FP16 engine (cached) where none was given and TensorRT is here."""
    if group.engine is not None:
        return
    if group.onnx_fp32 is None:
        group.unavailable.setdefault(ENGINE, "no engine and no FP32 ONNX to build one from")
        return
    target = export_dir(cache_dir, group) / f"model.fp16-b{max_batch}.engine"
    if not target.is_file():
        from edgevpr.export.tensorrt_build import BatchRange, build_engine

        say(f"building a TensorRT FP16 engine for {group.label} (minutes, once)")
        try:
            build_engine(
                group.onnx_fp32, target, "fp16", BatchRange(1, min(8, max_batch), max_batch)
            )
        except EdgeVPRError as exc:
            group.unavailable[ENGINE] = f"TensorRT build failed: {exc}"
            return
    group.engine = target
    group.generated.add("TensorRT engine")


def load_metadata(group: ModelGroup) -> None:
    """Fill in the metadata from whichever file there is (the checkpoint last: torch)."""
    if group.metadata is None and group.onnx_fp32 is not None:
        group.metadata = onnx_metadata(group.onnx_fp32)
    if group.metadata is None and group.onnx_int8 is not None:
        group.metadata = onnx_metadata(group.onnx_int8)
    if group.metadata is None and group.checkpoint is not None and has_module("torch"):
        group.metadata = checkpoint_metadata(group.checkpoint)
    if group.metadata is None:
        raise EdgeVPRError(f"cannot read what model {group.label} is (install torch to read it)")


def describe_model(group: ModelGroup) -> dict[str, Any]:
    meta = group.metadata
    if meta is None:
        return {}
    config = meta.model_config
    params = config.get("aggregator_params") or {}
    detail = ", ".join(f"{k} {v}" for k, v in sorted(params.items()))
    return {
        "description": f"{config.get('backbone', '?')} + {config.get('aggregator', '?')}"
        + (f" ({detail})" if detail else ""),
        "descriptor_dim": meta.descriptor_dim,
        "input_size": f"{meta.preprocess.height}x{meta.preprocess.width}",
    }
