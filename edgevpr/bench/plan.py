"""Planning a benchmark: which backends can run here (and why not), the file each one runs,
exporting on the fly what the user did not give, and the model's FLOP count."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.bench import artifacts
from edgevpr.bench.artifacts import ARTIFACT_LABELS, ModelGroup, Progress, has_module
from edgevpr.bench.backends import BACKENDS, CHECKPOINT, ENGINE, ONNX_INT8, BenchBackend
from edgevpr.bench.descriptors import content_key
from edgevpr.bench.options import BenchOptions
from edgevpr.bench.stages import Target
from edgevpr.bench.workload import Workload
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.extras import install_hint
from edgevpr.runtime.backends import OPENVINO_RUNTIME, provider_named


def unavailable_reason(
    backend: BenchBackend, group: ModelGroup, machine: dict[str, Any]
) -> str | None:
    """Why ``backend`` cannot run on this machine at all (None: it can)."""
    if backend.artifact == CHECKPOINT and group.checkpoint is None:
        return "needs the checkpoint (.pt); only exported files were given"
    if backend.module == "torch" and not has_module("torch"):
        return f"torch is not installed ({install_hint('torch')})"
    if backend.needs_gpu and not machine.get("gpus"):
        return "no NVIDIA GPU (nvidia-smi found none)"
    name = backend.first_provider
    known = provider_named(name) if name is not None else None
    if known is not None and known.runtime == OPENVINO_RUNTIME:
        if not has_module("openvino"):
            return f"openvino is not installed ({known.install})"
    elif known is not None and name not in (machine.get("ort_providers") or []):
        return f"this onnxruntime has no {name} ({known.install})"
    module = backend.module
    if module and module != "torch" and getattr(group, backend.artifact) is None:
        if not has_module(module):
            return f"{module} is not installed ({install_hint(module)})"
    return None


def make_target(backend: BenchBackend, group: ModelGroup) -> Target | str:
    """The target for ``backend``, or why the file it needs is missing."""
    path = getattr(group, backend.artifact)
    if path is None:
        return group.unavailable.get(backend.artifact, f"no {ARTIFACT_LABELS[backend.artifact]}")
    return Target(
        backend.key,
        backend.label,
        backend.precision,
        str(path),
        backend.providers or None,
        backend.device,
    )


def calibration_paths(workload: Workload) -> tuple[Path, ...]:
    """Database images spread along the route, as many as INT8 calibration takes."""
    count = artifacts.CALIBRATION_IMAGES
    return workload.database[:: max(1, len(workload.database) // count)][:count]


def calibration_key(paths: tuple[Path, ...]) -> str:
    """Names the calibration set by content, so a cached INT8 model is reused only for the
    same images (wherever they now lie)."""
    return content_key(*(np.fromfile(p, dtype=np.uint8) for p in paths))[:16]


def calibration_images(paths: tuple[Path, ...], spec: Any) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from edgevpr.core.preprocess import preprocess, read_for_model

        return preprocess([read_for_model(p, spec) for p in paths], spec)

    return load


def wanted_backends(opts: BenchOptions) -> list[str]:
    """The --backend names asked for (all by default), in table order; unknown ones refused."""
    if opts.backends is None:
        return list(BACKENDS)
    unknown = [b for b in opts.backends if b not in BACKENDS]
    if unknown:
        raise EdgeVPRError(
            f"unknown backend {', '.join(unknown)} (choose from {', '.join(BACKENDS)})"
        )
    return [b for b in BACKENDS if b in opts.backends]


def prepare_files(
    group: ModelGroup, keys: list[str], opts: BenchOptions, workload: Workload, say: Progress
) -> None:
    """Export on the fly whatever the wanted backends and stages need and the user did not
    give: FP32 ONNX for the runtime backends and for seeding search maps, INT8 and a TensorRT
    engine only where their rows are wanted."""
    measuring = "embed" in opts.stages or "pipeline" in opts.stages
    wanted = {BACKENDS[k].artifact for k in keys}
    runtime_wanted = measuring and any(BACKENDS[k].runs_on_runtime for k in keys)
    if runtime_wanted or "search" in opts.stages:
        artifacts.ensure_fp32(group, opts.cache_dir, say)
    artifacts.load_metadata(group)
    if measuring and ONNX_INT8 in wanted:
        spec = group.metadata.preprocess  # type: ignore[union-attr]
        paths = calibration_paths(workload)
        artifacts.ensure_int8(
            group, opts.cache_dir, calibration_images(paths, spec), calibration_key(paths), say
        )
    if measuring and ENGINE in wanted and has_module("tensorrt"):
        artifacts.ensure_engine(group, opts.cache_dir, max(opts.embed_batches()), say)


def count_flops(group: ModelGroup, notes: list[str]) -> tuple[float | None, dict[str, float]]:
    """FLOP per image and its split by model part, from the ONNX graph where there is one."""
    source = group.onnx_fp32 or group.onnx_int8
    if source is not None and has_module("onnx"):
        from edgevpr.bench.flops import count_flops as count

        result = count(source)
        if result.uncounted:
            notes.append(f"{len(result.uncounted)} nodes of unknown shape were not counted")
        parts = {k: v / 1e9 for k, v in result.by_part.items() if k != "other" or v}
        return result.per_image, parts
    if group.checkpoint is not None and has_module("torch"):
        from edgevpr.bench.torch_runner import count_flops, torch_reference

        return count_flops(torch_reference(group.checkpoint)), {}
    notes.append("GFLOP/s not shown: counting FLOPs needs the onnx package or the checkpoint")
    return None, {}
