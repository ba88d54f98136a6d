"""Settings for ONNX Runtime's TensorRT execution provider.

The provider builds a TensorRT engine from the ONNX model on first use (minutes) and keeps it
in an engine cache. It runs the graph's own precision: ``trt_fp16_enable`` on an FP32 graph
would let TensorRT run every layer in FP16, and ``trt_layer_norm_fp32_fallback`` pins only a
Pow-then-Reduce pair, not the final L2 normalisation (ReduceL2 becomes a product, a sum and
a square root: a 4096-term sum of squares overflows FP16 and x / inf = 0 passes a finite
check). So FP16 comes from the mixed-precision graph ``edgevpr export --fp16`` writes and
gates (FP16 with LayerNorm and the L2 normalisations in FP32), as for our own engines.
Without a timing cache each build times every kernel again; and an engine cached by one ONNX
Runtime, TensorRT or GPU must not be offered to another, so the cache folder is keyed by all
three.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
from pathlib import Path
from typing import Any

import onnxruntime as ort

from edgevpr.core.files import cache_root

# distributions that carry TensorRT's libraries without its Python module
TENSORRT_PACKAGES = ("tensorrt-cu13-libs", "tensorrt-cu12-libs", "tensorrt_libs")


def tensorrt_library_version() -> str:
    """The TensorRT version beside this ONNX Runtime ('10.3.0.26'), or 'unknown'. The Python
    module says it best (JetPack's python3-libnvinfer has no pip metadata); the library
    wheels otherwise. Imported only when the TensorRT provider is asked for, whose engine
    build takes minutes anyway."""
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except ImportError:
        pass
    for package in TENSORRT_PACKAGES:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def gpu_name() -> str:
    """The first GPU's name, from nvidia-smi (no CUDA binding needed), or 'gpu'."""
    try:
        found = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "--id=0"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "gpu"
    return found.stdout.strip() or "gpu"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


def trt_cache_dir() -> Path:
    """The engine and timing cache folder for this ONNX Runtime, TensorRT and GPU."""
    key = f"ort-{ort.__version__}_trt-{tensorrt_library_version()}_{gpu_name()}"
    return cache_root() / "ort-tensorrt" / slug(key)


def provider_options(input_name: str, input_shape: list[Any], batch_size: int) -> dict[str, Any]:
    """The graph's own precision, engine and timing caches, and an optimisation profile for
    a dynamic batch axis (without one, the provider rebuilds its engine for every new batch
    size)."""
    cache = trt_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "trt_fp16_enable": False,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
    }
    if len(input_shape) == 4 and not isinstance(input_shape[0], int):
        shape = "x".join(str(d) for d in input_shape[1:])
        options["trt_profile_min_shapes"] = f"{input_name}:1x{shape}"
        options["trt_profile_opt_shapes"] = f"{input_name}:{batch_size}x{shape}"
        options["trt_profile_max_shapes"] = f"{input_name}:{batch_size}x{shape}"
    return options
