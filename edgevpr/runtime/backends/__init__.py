"""What runs a model on the robot: ONNX Runtime (``onnxruntime``, with its external-data
checks ``onnx_external`` and TensorRT-provider settings ``trt_provider``), OpenVINO
(``openvino``) for ONNX models, and native TensorRT engines (``tensorrt``). Here: the
providers an ONNX model can run on, one row each (ONNX Runtime's execution providers and
OpenVINO's devices and precisions); the runtime's provider choice and aliases and the
benchmark's plan read this table, so a new provider is one row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgevpr.core.checks import shown
from edgevpr.core.errors import EdgeVPRError

TENSORRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
OPENVINO, OPENVINO_BF16 = "OpenVINO", "OpenVINO-BF16"
ONNXRUNTIME_RUNTIME, OPENVINO_RUNTIME = "onnxruntime", "openvino"


@dataclass(frozen=True)
class Provider:
    """Where an ONNX model can run: an ONNX Runtime execution provider, or OpenVINO on a
    device at a precision (``options``: its compile properties)."""

    name: str
    aliases: tuple[str, ...]  # short names users may give (``--provider cuda``)
    gpu: bool
    install: str  # what gives a runtime that has it
    runtime: str = ONNXRUNTIME_RUNTIME  # which library runs it
    automatic: bool = True  # may be chosen when no provider is named
    options: tuple[tuple[str, str], ...] = ()


# Best first: with no provider named, the runtime takes the first automatic one it has.
# OpenVINO is never taken automatically: on this machine's CPU family (AMD Zen 4,
# AVX-512 BF16, no AMX) its FP32 measured the same as ONNX Runtime's (R50-4096 at 320x320,
# batch 1: 34.5 against 34.8 ms, benchmarks/results/openvino.md), and BF16 changes the
# descriptors (cosine 0.9999), which only an explicit choice may do.
PROVIDERS: tuple[Provider, ...] = (
    Provider(TENSORRT_EP, ("tensorrt", "trt"), True, "onnxruntime-gpu and TensorRT"),
    Provider(CUDA_EP, ("cuda", "gpu"), True, "pip install onnxruntime-gpu"),
    Provider(CPU_EP, ("cpu",), False, "any onnxruntime"),
    Provider(OPENVINO, ("openvino", "ov"), False, "pip install 'edgevpr[openvino]'",
             OPENVINO_RUNTIME, automatic=False,
             options=(("INFERENCE_PRECISION_HINT", "f32"),)),
    Provider(OPENVINO_BF16, ("openvino-bf16", "ov-bf16"), False,
             "pip install 'edgevpr[openvino]' (a CPU with AMX or AVX-512 BF16)",
             OPENVINO_RUNTIME, automatic=False,
             options=(("INFERENCE_PRECISION_HINT", "bf16"),)),
)  # fmt: skip
PROVIDER_ALIASES = {alias: p.name for p in PROVIDERS for alias in p.aliases}
GPU_PROVIDERS = frozenset(p.name for p in PROVIDERS if p.gpu)


ProviderRequest = str | tuple[str, dict[str, Any]]


def provider_request(item: Any) -> tuple[str, dict[str, Any]]:
    """A provider given as a name or a (name, options) pair, checked."""
    if isinstance(item, str):
        return item, {}
    if (
        isinstance(item, (tuple, list))
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], dict)
    ):
        return item[0], dict(item[1])
    raise EdgeVPRError(
        f"an execution provider is a name or a (name, options) pair, not {shown(item)}"
    )


def runtime_of(providers: list | None) -> str:
    """Which library runs an ONNX model asked for on ``providers`` (their first decides)."""
    if not providers:
        return ONNXRUNTIME_RUNTIME
    first, _ = provider_request(providers[0])
    found = provider_named(PROVIDER_ALIASES.get(first.lower(), first))
    return found.runtime if found is not None else ONNXRUNTIME_RUNTIME


def open_onnx_backend(path: Any, providers: list | None = None, threads: int | None = None,
                      batch_size: int | None = None) -> Any:  # fmt: skip
    """The backend of an ONNX model: OpenVINO where the first provider is one of its rows,
    else ONNX Runtime (the format table names this function)."""
    if runtime_of(providers) == OPENVINO_RUNTIME:
        from edgevpr.runtime.backends.openvino import OpenVINOBackend

        return OpenVINOBackend(path, providers, threads, batch_size)
    from edgevpr.runtime.backends.onnxruntime import OnnxBackend

    return OnnxBackend(path, providers, threads, batch_size)


def provider_named(name: str) -> Provider | None:
    return next((p for p in PROVIDERS if p.name == name), None)
