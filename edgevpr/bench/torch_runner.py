"""The PyTorch eager reference row: the checkpoint's model through eval's TorchEmbedder (the
same reference the parity gate uses). Imported only inside the benchmark's worker processes
that run the ``pytorch`` rows, so the rest of ``edgevpr bench`` works without torch."""

from __future__ import annotations

import os
from typing import Any

import torch

from edgevpr.eval.torch_embedder import TorchEmbedder
from edgevpr.model.vpr import flops_per_image


def torch_reference(
    path: str | os.PathLike[str],
    device: str = "cpu",
    threads: int | None = None,
    precision: str = "fp32",
    mode: str = "eager",
) -> TorchEmbedder:
    """The checkpoint's model in eval mode on ``device``, ready for ``embed_batch``.

    ``precision`` fp16 runs under CUDA autocast and bf16 under CPU (or CUDA) autocast
    (LayerNorm and norms stay FP32, as in the exported engines); ``mode`` "channels-last"
    stores weights and inputs NHWC, "compiled" wraps the model in ``torch.compile``
    (compiled during the warm-up calls).
    """
    if threads:
        torch.set_num_threads(threads)
    embedder = TorchEmbedder.from_checkpoint(path, device=device)
    model = embedder.model.eval().to(embedder.device)
    if mode == "channels-last":
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if mode == "compiled" else model
    if precision in AUTOCAST or mode == "channels-last":
        embedder.run = _wrapped(forward, embedder.device, AUTOCAST.get(precision), mode)
    elif mode == "compiled":
        embedder.run = forward
    return embedder


AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _wrapped(forward: Any, device: torch.device, half: torch.dtype | None, mode: str) -> Any:
    layout = torch.channels_last if mode == "channels-last" else torch.contiguous_format

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=half or torch.float32, enabled=half is not None):
            return forward(images.contiguous(memory_format=layout)).float()

    return run


def count_flops(embedder: TorchEmbedder) -> float:
    """FLOP per image (see ``flops_per_image``)."""
    return flops_per_image(embedder.model)
