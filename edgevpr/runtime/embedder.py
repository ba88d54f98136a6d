"""Images in, descriptors out, from an exported model, without torch.

The backend follows the file: ``.onnx`` runs on ONNX Runtime (TensorRT, CUDA or CPU execution
provider, best available first), ``.engine``/``.plan`` on TensorRT natively. Preprocessing
comes from the model's own metadata and uses :mod:`edgevpr.core.preprocess`, the same code
that training and evaluation use, so the descriptors match the PyTorch model's.

All ``embed_*`` methods are thread-safe: backends keep per-thread (ONNX Runtime) or locked
(TensorRT) buffers, and nothing else is shared.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from edgevpr.core.checks import file_path, shown, whole
from edgevpr.core.cpus import usable_cores
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.formats import RUNTIME, format_of, suffixes_of
from edgevpr.core.images import decode_image
from edgevpr.core.metadata import ModelMetadata
from edgevpr.core.pixels import DEFAULT_ENCODING, check_encoding, to_rgb8
from edgevpr.core.preprocess import PreprocessSpec, normalize, read_for_model, resize_rgb
from edgevpr.runtime.backends import ProviderRequest

DEFAULT_BATCH_SIZE = 16
MAX_THREADS = 1024

# What the runtime takes as one image: pixels (with an encoding), a file path, or the
# bytes of an encoded file (JPEG, PNG, ...).
ImageInput = np.ndarray | str | os.PathLike | bytes
Unreadable = Callable[[Any, EdgeVPRError], None]


class InferenceBackend(Protocol):
    """What runs an exported model: made as ``cls(path, providers, threads, batch_size)`` by
    the class its format names in :data:`edgevpr.core.formats.FORMATS`."""

    metadata: ModelMetadata
    description: str
    device: str  # "cpu" or "cuda": where the model runs
    min_batch: int
    max_batch: int | None

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class Embedder:
    """An exported VPR model ready to embed images.

    Args:
        path: an exported model: ``.onnx`` (ONNX Runtime) or ``.engine``/``.plan``
            (TensorRT, with the header export writes beside it).
        providers: ONNX only: execution providers in order of preference, as ONNX Runtime
            names, short names (``"cpu"``, ``"cuda"``, ``"tensorrt"``) or (name, options)
            pairs; by default the best available.
        threads: CPU threads for one inference (ONNX Runtime's intra-op threads).
        batch_size: images per inference call (an engine's largest batch caps it).

    Every method is thread-safe. Use it as a context manager, or call :meth:`close`.

    Example::

        with Embedder("export/best.onnx") as embedder:
            embedder.warmup()
            descriptors = embedder.embed_paths(["a.jpg", "b.jpg"])     # 2 x D, unit rows
            frame = embedder.embed_image(bgr_frame, encoding="bgr8")  # from cv2.VideoCapture
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        providers: list[ProviderRequest] | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.path = file_path(path, "model")
        if batch_size is not None:
            batch_size = whole(batch_size, "batch size", 1)
        if threads is not None:
            threads = whole(threads, "threads", 1, MAX_THREADS)
        if providers is not None and not isinstance(providers, (list, tuple)):
            raise EdgeVPRError(f"providers must be a list, not {type(providers).__name__}")
        if not self.path.is_file():
            raise EdgeVPRError(f"model {self.path} does not exist or is not a file")
        fmt = format_of(self.path)
        if fmt.runs_on != RUNTIME or fmt.backend is None:
            raise EdgeVPRError(
                f"cannot run {self.path}: the runtime takes an exported model "
                f"({', '.join(suffixes_of(RUNTIME))}); export a checkpoint with 'edgevpr export'"
            )
        backend = fmt.load(fmt.backend)
        self._backend: InferenceBackend | None = backend(self.path, providers, threads, batch_size)
        self.metadata: ModelMetadata = self._backend.metadata
        self._description = self._backend.description
        limit = self._backend.max_batch
        wanted = batch_size or (limit if limit is not None else DEFAULT_BATCH_SIZE)
        self.batch_size = min(wanted, limit) if limit is not None else wanted
        self._overlap = self._backend.device != "cpu" or (
            threads is not None and threads < usable_cores()
        )

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
        return self._description

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
    def warmup(self, runs: int = 2) -> None:
        """Run the model on blank inputs at batch 1 and at the full batch size: the first
        calls allocate buffers and pick kernels (about 3x a steady call), so do it before
        timing or before the robot moves."""
        runs = whole(runs, "runs", 1, 100)
        spec = self.spec
        for batch in sorted({1, self.batch_size}):
            blank = np.zeros((batch, 3, spec.height, spec.width), np.float32)
            for _ in range(runs):
                self._run(blank)

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed N x 3 x H x W float32 -> N x D float32, run in batches."""
        batch = self._check_batch(batch)
        out = np.empty((batch.shape[0], self.descriptor_dim), np.float32)
        for start in range(0, batch.shape[0], self.batch_size):
            chunk = batch[start : start + self.batch_size]
            out[start : start + len(chunk)] = self._run(chunk)
        return out

    def embed_images(
        self, images: Iterable[np.ndarray], encoding: str = DEFAULT_ENCODING
    ) -> np.ndarray:
        """Pixel arrays (any size: they are resized) -> N x D float32.

        ``encoding`` says what the arrays hold, as ROS names it (see
        :mod:`edgevpr.core.pixels`): ``"bgr8"`` for ``cv2.imread`` and
        ``cv2.VideoCapture`` frames, ``"rgb8"`` (the default) for PIL and most SDKs,
        ``"mono8"``, ``"mono16"``, ``"rgba8"``, ...
        """
        if isinstance(images, np.ndarray) and images.ndim != 4:
            raise EdgeVPRError("images must be a list of arrays; for one image use embed_image")
        return self._collect(self.stream(images, encoding=encoding, arrays_only=True))

    def embed_image(self, image: np.ndarray, encoding: str = DEFAULT_ENCODING) -> np.ndarray:
        """One pixel array -> its D-dimensional descriptor."""
        return self.embed_images([image], encoding=encoding)[0]

    def embed_paths(
        self, paths: Sequence[str | os.PathLike[str]], progress: bool = False
    ) -> np.ndarray:
        """Image files -> N x D float32. An unreadable file is a one-line error naming it."""
        return self._collect(self.iter_paths(paths, progress=progress))

    def iter_paths(
        self,
        paths: Sequence[str | os.PathLike[str]],
        progress: bool = False,
        on_unreadable: Unreadable | None = None,
    ) -> Iterator[tuple[list[Path], np.ndarray]]:
        """Stream (paths, descriptors) batch by batch: memory stays flat however many images.

        With ``on_unreadable`` an unreadable image is reported to it and skipped instead of
        stopping everything.
        """
        if isinstance(paths, (str, bytes, os.PathLike)) or not isinstance(paths, Iterable):
            raise EdgeVPRError(f"paths must be a list of image paths, not {shown(paths)}")
        files = [file_path(p, "image path") for p in paths]
        return self.stream(files, progress=progress, on_unreadable=on_unreadable)

    def stream(
        self,
        frames: Iterable[ImageInput],
        encoding: str = DEFAULT_ENCODING,
        progress: bool = False,
        on_unreadable: Unreadable | None = None,
        arrays_only: bool = False,
    ) -> Iterator[tuple[list[Any], np.ndarray]]:
        """Embed any iterable of frames (arrays in ``encoding``, file paths, encoded bytes),
        endless ones too, yielding (frames, descriptors) a batch at a time.

        The next batch is pulled from ``frames``, decoded and resized in a worker thread
        while the current one runs (OpenCV and the backends release the GIL) where the model
        leaves a core free (a GPU backend, or ``threads`` below the cores), so a stream's
        throughput is the model's; memory holds two batches at most.
        """
        self._require_open()
        check_encoding(encoding)
        if isinstance(frames, (str, bytes, os.PathLike)) or (
            isinstance(frames, np.ndarray) and frames.ndim != 4
        ):
            raise EdgeVPRError("frames must be an iterable of images, not a single image")
        try:
            source = iter(frames)
        except TypeError:
            raise EdgeVPRError(f"frames must be iterable, not {type(frames).__name__}") from None
        counter = itertools.count()
        total = len(frames) if isinstance(frames, Sequence) else None
        bar = tqdm(total=total, unit="img", disable=not progress, file=sys.stderr, leave=False)

        def next_chunk() -> tuple[list[Any], np.ndarray | None, int]:
            return self._prepare_chunk(source, counter, encoding, on_unreadable, arrays_only)

        with bar:
            for kept, resized, pulled in self._chunks(next_chunk):
                if resized is not None:
                    yield kept, self._run(normalize(resized, self.spec))
                bar.update(pulled)

    def _chunks(
        self, next_chunk: Callable[[], tuple[list[Any], np.ndarray | None, int]]
    ) -> Iterator[tuple[list[Any], np.ndarray | None, int]]:
        """Prepared chunks until the source runs dry: the next one prepared in a worker
        thread while the caller embeds this one, where that worker has a core of its own.

        Where the model runs on every CPU core it does not: measured on 2 cores, MixVPR-R50
        at 320x320 took 58 ms a frame alone, but 97 ms with a 640x480 JPEG decoded
        alongside (the decode 25 ms instead of 9.5), worse than one after the other (68).
        """
        if not self._overlap:
            while (chunk := next_chunk())[2]:
                yield chunk
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgevpr-decode") as pool:
            pending: Future = pool.submit(next_chunk)
            while (chunk := pending.result())[2]:
                pending = pool.submit(next_chunk)
                yield chunk

    def _prepare_chunk(
        self,
        source: Iterator[ImageInput],
        counter: Iterator[int],
        encoding: str,
        on_unreadable: Unreadable | None,
        arrays_only: bool,
    ) -> tuple[list[Any], np.ndarray | None, int]:
        """Pull up to one batch from ``source`` and resize it: (frames kept, their pixels,
        frames pulled)."""
        kept, resized = [], []
        pulled = 0
        for frame in itertools.islice(source, self.batch_size):
            pulled += 1
            index = next(counter)
            try:
                resized.append(self._prepared(frame, index, encoding, arrays_only))
            except EdgeVPRError as exc:
                if on_unreadable is None:
                    raise
                on_unreadable(frame, exc)
                continue
            kept.append(frame)
        return kept, np.stack(resized) if resized else None, pulled

    def _prepared(self, frame: Any, index: int, encoding: str, arrays_only: bool) -> np.ndarray:
        """One frame as the network's resized RGB uint8 pixels."""
        if isinstance(frame, np.ndarray):
            return resize_rgb(to_rgb8(frame, encoding, f"image {index}"), self.spec)
        if arrays_only:
            raise EdgeVPRError(f"image {index}: expected a pixel array, not {type(frame).__name__}")
        if isinstance(frame, (str, os.PathLike)):
            return resize_rgb(read_for_model(frame, self.spec), self.spec)
        if isinstance(frame, (bytes, bytearray, memoryview)):
            decoded = decode_image(bytes(frame), f"image {index}", self.spec.decode_size)
            return resize_rgb(decoded, self.spec)
        raise EdgeVPRError(
            f"image {index}: expected a pixel array, a file path or encoded bytes, "
            f"not {type(frame).__name__}"
        )

    def _collect(self, batches: Iterator[tuple[list[Any], np.ndarray]]) -> np.ndarray:
        parts = [descriptors for _, descriptors in batches]
        if not parts:
            return np.zeros((0, self.descriptor_dim), np.float32)
        return np.concatenate(parts)

    # ------------------------------------------------------------------ internals
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

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        """One backend call; pads a chunk an engine's minimum batch would refuse."""
        backend = self._require_open()
        n = chunk.shape[0]
        if n < backend.min_batch:
            padding = np.zeros((backend.min_batch - n, *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, padding])
        descriptors = backend.run(chunk)[:n]
        if not np.isfinite(descriptors).all():
            raise EdgeVPRError(f"model {self.path} produced NaN or infinite descriptors")
        if not np.abs(descriptors).max(axis=1).all():
            # x / inf = 0: an FP16 overflow in the normalisation passes the finite check
            raise EdgeVPRError(f"model {self.path} produced an all-zero descriptor on "
                               f"{backend.description} (an FP16 overflow in its normalisation?): "
                               "run the FP32 model or another provider")  # fmt: skip
        return descriptors

    def _require_open(self) -> InferenceBackend:
        backend = self._backend
        if backend is None:
            raise EdgeVPRError(f"the embedder for {self.path.name} is closed")
        return backend

    def close(self) -> None:
        """Release the model; later calls are a one-line error. Closing twice is harmless."""
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
