"""The backends ``edgevpr bench`` compares, one row each in one table: which file a row runs
(checkpoint, ONNX FP32 / INT8, TensorRT engine), on which execution providers or PyTorch
mode, where it computes, and whether it may be the reference. The plan, its skip reasons
and the report read this table, so a new backend is one row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgevpr.runtime.backends import CPU_EP, CUDA_EP, OPENVINO, OPENVINO_BF16, TENSORRT_EP

# The files a backend runs (attributes of the benchmark's model group).
CHECKPOINT, ONNX_FP32, ONNX_INT8, ENGINE = "checkpoint", "onnx_fp32", "onnx_int8", "engine"


@dataclass(frozen=True)
class BenchBackend:
    """One way to run a model, as the benchmark measures it."""

    key: str  # --backend name
    label: str  # the tables' backend column
    precision: str
    artifact: str  # which file it runs: CHECKPOINT, ONNX_FP32, ONNX_INT8 or ENGINE
    providers: tuple[Any, ...] = ()  # ONNX Runtime providers, best first (name or (name, opts))
    device: str = "cpu"  # where it computes: "cpu" or "cuda"
    module: str | None = None  # the Python package it needs
    # PyTorch rows: "eager", "channels-last" (NHWC convolutions) or "compiled" (torch.compile)
    torch_mode: str = "eager"
    # reference rows for speed-up and cosine, in this order of preference (None: never)
    reference_rank: int | None = None

    @property
    def needs_gpu(self) -> bool:
        return self.device == "cuda"

    @property
    def runs_on_runtime(self) -> bool:
        """Run through the torch-free runtime's Embedder (what ships)."""
        return self.artifact != CHECKPOINT

    @property
    def first_provider(self) -> str | None:
        """The execution provider it is about (its first), if it runs on ONNX Runtime."""
        if not self.providers:
            return None
        first = self.providers[0]
        return first if isinstance(first, str) else first[0]


BACKENDS: dict[str, BenchBackend] = {
    b.key: b
    for b in (
        BenchBackend("pytorch", "pytorch", "fp32", CHECKPOINT, module="torch", reference_rank=0),
        # PyTorch's own best CPU paths: BF16 autocast (AMX / AVX-512 BF16) and NHWC
        BenchBackend("pytorch-bf16", "pytorch", "bf16", CHECKPOINT, module="torch"),
        BenchBackend("pytorch-nhwc", "pytorch nhwc", "fp32", CHECKPOINT, module="torch",
                     torch_mode="channels-last"),
        BenchBackend("pytorch-nhwc-bf16", "pytorch nhwc", "bf16", CHECKPOINT, module="torch",
                     torch_mode="channels-last"),
        BenchBackend(
            "pytorch-cuda", "pytorch-cuda", "fp32", CHECKPOINT, device="cuda", module="torch",
            reference_rank=1,
        ),
        BenchBackend("pytorch-cuda-fp16", "pytorch-cuda", "fp16", CHECKPOINT, device="cuda",
                module="torch"),
        BenchBackend("pytorch-cuda-nhwc", "pytorch-cuda nhwc", "fp32", CHECKPOINT, device="cuda",
                module="torch", torch_mode="channels-last"),
        BenchBackend("pytorch-cuda-nhwc-fp16", "pytorch-cuda nhwc", "fp16", CHECKPOINT,
                device="cuda", module="torch", torch_mode="channels-last"),
        BenchBackend("pytorch-cuda-compiled", "pytorch-cuda compiled", "fp32", CHECKPOINT,
                device="cuda", module="torch", torch_mode="compiled"),
        BenchBackend("pytorch-cuda-compiled-fp16", "pytorch-cuda compiled", "fp16", CHECKPOINT,
                device="cuda", module="torch", torch_mode="compiled"),
        BenchBackend("ort-cpu", "ort-cpu", "fp32", ONNX_FP32, (CPU_EP,), reference_rank=2),
        BenchBackend("ort-cpu-int8", "ort-cpu", "int8", ONNX_INT8, (CPU_EP,)),
        BenchBackend("openvino", "openvino", "fp32", ONNX_FP32, (OPENVINO,), module="openvino"),
        BenchBackend("openvino-bf16", "openvino", "bf16", ONNX_FP32, (OPENVINO_BF16,),
                     module="openvino"),
        BenchBackend("openvino-int8", "openvino", "int8", ONNX_INT8, (OPENVINO,),
                     module="openvino"),
        BenchBackend(
            "ort-cuda", "ort-cuda", "fp32", ONNX_FP32, (CUDA_EP, CPU_EP), device="cuda",
            reference_rank=3,
        ),
        # the provider runs the graph's own precision (FP32 here; FP16 from the graph
        # export --fp16 writes, never from trt_fp16_enable on an FP32 graph)
        BenchBackend("ort-trt", "ort-trt", "fp32", ONNX_FP32, (TENSORRT_EP, CUDA_EP, CPU_EP),
                     device="cuda"),
        BenchBackend("tensorrt", "tensorrt", "fp16", ENGINE, device="cuda", module="tensorrt"),
    )
}  # fmt: skip


def reference_order() -> list[str]:
    """Backend keys that may serve as the reference row, best first."""
    ranked = [b for b in BACKENDS.values() if b.reference_rank is not None]
    return [b.key for b in sorted(ranked, key=lambda b: b.reference_rank)]
