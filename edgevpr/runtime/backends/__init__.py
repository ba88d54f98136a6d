"""What runs a model on the robot: ONNX Runtime (``onnxruntime``, with its external-data
checks ``onnx_external`` and TensorRT-provider settings ``trt_provider``) and native
TensorRT engines (``tensorrt``). Here: ONNX Runtime's execution providers, one row each; the
runtime's provider choice and aliases and the benchmark's plan read this table, so a new
execution provider is one row here.
"""

from __future__ import annotations

from dataclasses import dataclass

TENSORRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"


@dataclass(frozen=True)
class Provider:
    """An ONNX Runtime execution provider."""

    name: str
    aliases: tuple[str, ...]  # short names users may give (``--provider cuda``)
    gpu: bool
    install: str  # what gives an onnxruntime that has it


# Best first: with no provider named, the runtime takes the first this onnxruntime has.
PROVIDERS: tuple[Provider, ...] = (
    Provider(TENSORRT_EP, ("tensorrt", "trt"), True, "onnxruntime-gpu and TensorRT"),
    Provider(CUDA_EP, ("cuda", "gpu"), True, "pip install onnxruntime-gpu"),
    Provider(CPU_EP, ("cpu",), False, "any onnxruntime"),
)
PROVIDER_ALIASES = {alias: p.name for p in PROVIDERS for alias in p.aliases}
GPU_PROVIDERS = frozenset(p.name for p in PROVIDERS if p.gpu)


def provider_named(name: str) -> Provider | None:
    return next((p for p in PROVIDERS if p.name == name), None)
