"""Images in, descriptors out, from an exported model, without torch.

The backend follows the file: ``.onnx`` runs on ONNX Runtime (TensorRT, CUDA or CPU execution
provider, best available first), ``.engine``/``.plan`` on TensorRT natively. Preprocessing
comes from the model's own metadata and uses :mod:`edgevpr.runtime.preprocess`, the same code
that training and evaluation use, so the descriptors match the PyTorch model's.

All ``embed_*`` methods are thread-safe: backends keep per-thread (ONNX Runtime) or locked
(TensorRT) buffers, and nothing else is shared.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from edgevpr.errors import EdgeVPRError
from edgevpr.runtime.images import read_image
from edgevpr.runtime.metadata import ModelMetadata
from edgevpr.runtime.onnx_backend import OnnxBackend, ProviderRequest
from edgevpr.runtime.preprocess import PreprocessSpec, normalize, resize_rgb
from edgevpr.runtime.tensorrt_backend import ENGINE_SUFFIXES, TensorRTBackend

DEFAULT_BATCH_SIZE = 16
ONNX_SUFFIXES = (".onnx",)


class Backend(Protocol):
    metadata: ModelMetadata
    description: str
    min_batch: int
    max_batch: int | None

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class Embedder:
    """An exported VPR model ready to embed images.

    ``providers`` (ONNX only): execution providers in order of preference, as ONNX Runtime
    names, short names (``"cpu"``, ``"cuda"``, ``"tensorrt"``) or (name, options) pairs; by
    default the best available. ``threads``: CPU threads for one inference (ONNX Runtime's
    intra-op threads). ``batch_size``: images per inference call.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        providers: list[ProviderRequest] | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.path = Path(path)
        if batch_size is not None and batch_size < 1:
            raise EdgeVPRError(f"batch size must be at least 1, got {batch_size}")
        if not self.path.is_file():
            raise EdgeVPRError(f"model {self.path} does not exist or is not a file")
        suffix = self.path.suffix.lower()
        self._backend: Backend
        if suffix in ONNX_SUFFIXES:
            self._backend = OnnxBackend(
                self.path, providers, threads, batch_size or DEFAULT_BATCH_SIZE
            )
        elif suffix in ENGINE_SUFFIXES:
            if providers is not None:
                raise EdgeVPRError(
                    "execution providers apply to ONNX models; a TensorRT engine runs natively"
                )
            self._backend = TensorRTBackend(self.path, batch_size)
        else:
            raise EdgeVPRError(
                f"cannot run {self.path}: the runtime takes an exported model (.onnx) or a "
                "TensorRT engine (.engine/.plan); export a checkpoint with 'edgevpr export'"
            )
        self.metadata: ModelMetadata = self._backend.metadata
        limit = self._backend.max_batch
        wanted = batch_size or (limit if limit is not None else DEFAULT_BATCH_SIZE)
        self.batch_size = min(wanted, limit) if limit is not None else wanted

    # ------------------------------------------------------------------ facts
    @property
    def fingerprint(self) -> str:
        """The checkpoint's sha256: descriptors are comparable only under one fingerprint."""
        return self.metadata.fingerprint

    @property
    def descriptor_dim(self) -> int:
        return self.metadata.descriptor_dim

    @property
    def spec(self) -> PreprocessSpec:
        return self.metadata.preprocess

    @property
    def backend(self) -> str:
        """What runs the model, e.g. 'onnxruntime 1.22.0 (CPUExecutionProvider)'."""
        return self._backend.description

    def model_summary(self) -> dict[str, Any]:
        """What a place map records about the model that embedded it."""
        config = self.metadata.model_config
        return {
            "file": self.path.name,
            "backbone": config.get("backbone"),
            "aggregator": config.get("aggregator"),
            "input": [self.spec.height, self.spec.width],
            "precision": self.metadata.precision,
            "edgevpr_version": self.metadata.edgevpr_version,
        }

    # ------------------------------------------------------------------ embedding
    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed N x 3 x H x W float32 -> N x D float32, run in batches."""
        batch = self._check_batch(batch)
        return self._run_chunks(batch)

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 images (H x W x 3, any size: they are resized) -> N x D float32."""
        images = list(images)
        if not images:
            return np.zeros((0, self.descriptor_dim), np.float32)
        out = np.empty((len(images), self.descriptor_dim), np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            resized = np.stack([self._resized(img, start + i) for i, img in enumerate(chunk)])
            out[start : start + len(chunk)] = self._run(normalize(resized, self.spec))
        return out

    def embed_image(self, image: np.ndarray) -> np.ndarray:
        """One RGB uint8 image -> its D-dimensional descriptor."""
        return self.embed_images([image])[0]

    def embed_paths(
        self, paths: Sequence[str | os.PathLike[str]], progress: bool = False
    ) -> np.ndarray:
        """Image files -> N x D float32. An unreadable file is a one-line error naming it."""
        out = np.empty((len(paths), self.descriptor_dim), np.float32)
        row = 0
        for _, descriptors in self.iter_paths(paths, progress=progress):
            out[row : row + len(descriptors)] = descriptors
            row += len(descriptors)
        return out

    def iter_paths(
        self,
        paths: Sequence[str | os.PathLike[str]],
        progress: bool = False,
        on_unreadable: Callable[[Path, EdgeVPRError], None] | None = None,
    ) -> Iterator[tuple[list[Path], np.ndarray]]:
        """Stream (paths, descriptors) batch by batch: memory stays flat however many images.

        Decoding and resizing of the next batch overlap the current inference (OpenCV and
        the backends release the GIL). With ``on_unreadable`` an unreadable image is reported
        to it and skipped instead of stopping everything.
        """
        chunks = [
            [Path(p) for p in paths[i : i + self.batch_size]]
            for i in range(0, len(paths), self.batch_size)
        ]
        bar = tqdm(total=len(paths), unit="img", disable=not progress, file=sys.stderr, leave=False)
        with bar, ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgevpr-decode") as pool:
            pending: Future | None = None
            if chunks:
                pending = pool.submit(self._decode_chunk, chunks[0], on_unreadable)
            for index in range(len(chunks)):
                kept, resized = pending.result()  # type: ignore[union-attr]
                if index + 1 < len(chunks):
                    pending = pool.submit(self._decode_chunk, chunks[index + 1], on_unreadable)
                if kept:
                    yield kept, self._run(normalize(resized, self.spec))
                bar.update(len(chunks[index]))

    def _decode_chunk(
        self, paths: list[Path], on_unreadable: Callable[[Path, EdgeVPRError], None] | None
    ) -> tuple[list[Path], np.ndarray | None]:
        kept, resized = [], []
        for path in paths:
            try:
                resized.append(resize_rgb(read_image(path), self.spec))
            except EdgeVPRError as exc:
                if on_unreadable is None:
                    raise
                on_unreadable(path, exc)
                continue
            kept.append(path)
        return kept, np.stack(resized) if resized else None

    # ------------------------------------------------------------------ internals
    def _resized(self, image: Any, index: int) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", type(image).__name__)
            raise EdgeVPRError(f"image {index}: expected an H x W x 3 RGB array, got {shape}")
        if image.dtype != np.uint8:
            raise EdgeVPRError(f"image {index}: expected uint8 pixels, got {image.dtype}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise EdgeVPRError(f"image {index}: is empty ({image.shape[1]}x{image.shape[0]})")
        return resize_rgb(image, self.spec)

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        expected = (3, self.spec.height, self.spec.width)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise EdgeVPRError(
                f"preprocessed batch has shape {tuple(batch.shape)}; this model takes "
                f"N x 3 x {self.spec.height} x {self.spec.width} float32"
            )
        if not np.issubdtype(batch.dtype, np.floating):
            raise EdgeVPRError(f"preprocessed batch must be float32, not {batch.dtype}")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def _run_chunks(self, batch: np.ndarray) -> np.ndarray:
        out = np.empty((batch.shape[0], self.descriptor_dim), np.float32)
        for start in range(0, batch.shape[0], self.batch_size):
            chunk = batch[start : start + self.batch_size]
            out[start : start + len(chunk)] = self._run(chunk)
        return out

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        """One backend call; pads a chunk an engine's minimum batch would refuse."""
        n = chunk.shape[0]
        if n < self._backend.min_batch:
            padding = np.zeros((self._backend.min_batch - n, *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, padding])
        descriptors = self._backend.run(chunk)[:n]
        if not np.isfinite(descriptors).all():
            raise EdgeVPRError(f"model {self.path} produced NaN or infinite descriptors")
        return descriptors

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
