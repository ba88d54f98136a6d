"""A PyTorch model as an embedder: image files in, descriptors out, through the SAME
preprocessing as the runtime (``edgevpr.core.preprocess``), so a checkpoint and its
exports are measured on identical network inputs."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from edgevpr.core.preprocess import PreprocessSpec, preprocess, read_for_model
from edgevpr.model.checkpoint import load_checkpoint
from edgevpr.model.vpr import VPRModel


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TorchEmbedder:
    """Embeds images with a VPRModel (eval mode, no gradients), in batches."""

    def __init__(
        self,
        model: VPRModel,
        batch_size: int = 32,
        device: torch.device | str | None = None,
        fingerprint: str = "",
    ) -> None:
        self.model = model
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device) if device is not None else default_device()
        self.fingerprint = fingerprint
        # what embed_batch calls on the device tensor (the benchmark's variants replace it)
        self.run = model

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        batch_size: int = 32,
        device: torch.device | str | None = None,
        size: tuple[int, int] | None = None,
    ) -> TorchEmbedder:
        ckpt = load_checkpoint(path, size=size)
        return cls(ckpt.model, batch_size, device, fingerprint=ckpt.sha256)

    @property
    def spec(self) -> PreprocessSpec:
        return self.model.config.preprocess

    @property
    def descriptor_dim(self) -> int:
        return self.model.descriptor_dim

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed N x 3 x H x W float32 -> N x D float32 (the model as it is: eval mode
        and device are the caller's; ``embed_images`` sets them)."""
        with torch.inference_mode():
            out = self.run(torch.from_numpy(batch).to(self.device))
            # .cpu() waits for the device, so a timed call includes the whole forward pass
            return out.float().cpu().numpy()

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 images (any size) -> float32 N x D descriptors."""
        was_training = self.model.training
        self.model.eval()
        self.model.to(self.device)
        out = []
        try:
            for start in range(0, len(images), self.batch_size):
                batch = preprocess(list(images[start : start + self.batch_size]), self.spec)
                out.append(self.embed_batch(batch))
        finally:
            self.model.train(was_training)
        if not out:
            return np.empty((0, self.descriptor_dim), dtype=np.float32)
        return np.concatenate(out)

    def embed_paths(self, paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
        """Image files -> float32 N x D descriptors, read a batch at a time."""
        out = []
        for start in range(0, len(paths), self.batch_size):
            images = [read_for_model(p, self.spec) for p in paths[start : start + self.batch_size]]
            out.append(self.embed_images(images))
        if not out:
            return np.empty((0, self.descriptor_dim), dtype=np.float32)
        return np.concatenate(out)
