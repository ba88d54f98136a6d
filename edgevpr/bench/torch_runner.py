"""The PyTorch eager reference: a checkpoint's model, run on preprocessed batches exactly as
the exported artifacts are. Imported only inside the benchmark's worker processes that run
the ``pytorch`` rows, so the rest of ``edgevpr bench`` works without torch."""

from __future__ import annotations

import os

import numpy as np
import torch

from edgevpr.model.checkpoint import load_checkpoint
from edgevpr.runtime.preprocess import PreprocessSpec


class TorchRunner:
    """``embed_batch(N x 3 x H x W float32) -> N x D float32`` with a checkpoint's model."""

    def __init__(
        self, path: str | os.PathLike[str], device: str = "cpu", threads: int | None = None
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        ckpt = load_checkpoint(path)
        self.device = torch.device(device)
        self.model = ckpt.model.eval().to(self.device)
        self.fingerprint = ckpt.sha256
        self.config = ckpt.model.config

    @property
    def spec(self) -> PreprocessSpec:
        return self.config.preprocess

    @property
    def descriptor_dim(self) -> int:
        return self.model.descriptor_dim

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.model(torch.from_numpy(batch).to(self.device))
            # .cpu() waits for the device: the timing includes the whole forward pass
            return out.float().cpu().numpy()

    def count_flops(self) -> float:
        """FLOP per image from torch's own counter (2 per multiply-accumulate)."""
        from torch.utils.flop_counter import FlopCounterMode

        spec = self.spec
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            self.model(torch.zeros(1, 3, spec.height, spec.width, device=self.device))
        return float(counter.get_total_flops())
