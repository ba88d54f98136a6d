"""The PyTorch eager reference row: the checkpoint's model through eval's TorchEmbedder (the
same reference the parity gate uses). Imported only inside the benchmark's worker processes
that run the ``pytorch`` rows, so the rest of ``edgevpr bench`` works without torch."""

from __future__ import annotations

import os

import torch

from edgevpr.eval.torch_embedder import TorchEmbedder


def torch_reference(
    path: str | os.PathLike[str], device: str = "cpu", threads: int | None = None
) -> TorchEmbedder:
    """The checkpoint's model in eval mode on ``device``, ready for ``embed_batch``."""
    if threads:
        torch.set_num_threads(threads)
    embedder = TorchEmbedder.from_checkpoint(path, device=device)
    embedder.model.eval().to(embedder.device)
    return embedder


def count_flops(embedder: TorchEmbedder) -> float:
    """FLOP per image from torch's own counter (2 per multiply-accumulate)."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = embedder.spec
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        embedder.model(torch.zeros(1, 3, spec.height, spec.width, device=embedder.device))
    return float(counter.get_total_flops())
