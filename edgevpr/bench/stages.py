"""The measurements, each meant to run in a fresh worker process (so that one backend's
libraries, threads and memory never colour another's numbers, and a crashing backend costs
its own rows only):

- embed: one backend x precision, every batch size, on preprocessed real images; plus, for
  runtime backends, decode + preprocess and the end-to-end path (the runtime's Recognizer:
  encoded image bytes -> decode -> preprocess -> embed -> place-map query), at batch 1;
- search: see ``mapsearch`` (one map per index kind, measured against exact search).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.bench.backends import BACKENDS
from edgevpr.bench.report import (
    STAGE_EMBED,
    STAGE_END_TO_END,
    STAGE_PREPROCESS,
    Row,
)
from edgevpr.bench.timing import PeakMemory, Timing, TimingConfig, measure

ENCODED_IMAGES = 64  # distinct images cycled through in decode and end-to-end timing


@dataclass(frozen=True)
class Target:
    """One backend x precision: what runs the model and from which file."""

    key: str  # the --backend name, e.g. "ort-cpu-int8"
    backend: str  # as shown, e.g. "ort-cpu"
    precision: str
    path: str
    providers: tuple[Any, ...] | None = None  # ONNX Runtime providers (name or (name, opts))
    device: str = "cpu"  # PyTorch device

    @property
    def is_runtime(self) -> bool:
        """Runs through the torch-free runtime (what ships), not PyTorch."""
        return BACKENDS[self.key].runs_on_runtime


@dataclass(frozen=True)
class EmbedJob:
    target: Target
    model: str
    batches: tuple[int, ...]
    timing: TimingConfig
    images: tuple[str, ...]
    flop_per_image: float | None = None
    threads: int | None = None
    compare_images: int = 32
    preprocess_row: bool = False
    end_to_end: bool = False
    map_path: str | None = None
    map_size: int | None = None
    map_params: str = ""
    ef: int = 128
    k: int = 10


@dataclass
class EmbedResult:
    rows: list[Row]
    descriptors: np.ndarray | None = None  # of the first compare_images images


def file_mb(path: str | os.PathLike[str]) -> float:
    return Path(path).stat().st_size / 1e6


def timed_row(row: Row, timing: Timing, peak: PeakMemory) -> Row:
    for name, value in timing.summary().items():
        setattr(row, name, value)
    row.peak_rss_mb = peak.peak_mb
    row.foreign_cpu = timing.foreign_cpu
    row.warnings = list(timing.warnings)
    return row


# --- embed -----------------------------------------------------------------------------------

def open_runner(job: EmbedJob) -> Any:
    """An object with ``embed_batch``, ``spec`` (and for runtime targets ``embed_images``)."""
    target = job.target
    if not target.is_runtime:
        from edgevpr.bench.torch_runner import torch_reference

        mode = BACKENDS[target.key].torch_mode
        return torch_reference(target.path, target.device, job.threads, target.precision, mode)
    from edgevpr.runtime.embedder import Embedder

    providers = list(target.providers) if target.providers is not None else None
    return Embedder(
        target.path, providers=providers, threads=job.threads, batch_size=max(job.batches)
    )


def input_batch(images: list[np.ndarray], spec: Any, count: int) -> np.ndarray:
    """``count`` preprocessed real images (cycling through those given)."""
    from edgevpr.core.preprocess import preprocess

    chosen = [images[i % len(images)] for i in range(count)]
    return preprocess(chosen, spec)


def cycle_bytes(paths: tuple[str, ...]) -> Any:
    encoded = [Path(p).read_bytes() for p in paths[:ENCODED_IMAGES]]
    return itertools.cycle(encoded).__next__


def run_embed_job(job: EmbedJob) -> EmbedResult:
    from edgevpr.core.images import decode_image
    from edgevpr.core.preprocess import preprocess, read_for_model

    target = job.target
    runner = open_runner(job)
    spec = runner.spec
    wanted = job.images[: max(max(job.batches), job.compare_images)]
    images = [read_for_model(p, spec) for p in wanted]
    inputs = input_batch(images, spec, max(max(job.batches), job.compare_images))
    base = dict(model=job.model, backend=target.backend, precision=target.precision)
    size = file_mb(target.path)
    rows = []
    for batch in job.batches:
        x = np.ascontiguousarray(inputs[:batch])
        with PeakMemory() as peak:
            timing = measure(lambda x=x: runner.embed_batch(x), job.timing, items=batch)
        row = timed_row(Row(stage=STAGE_EMBED, batch=batch, size_mb=size, **base), timing, peak)
        row.gflops = timing.gflops(job.flop_per_image)
        rows.append(row)
    chunk = max(job.batches)
    descriptors = np.concatenate(
        [runner.embed_batch(inputs[i : i + chunk]) for i in range(0, job.compare_images, chunk)]
    )[: job.compare_images]

    next_bytes = cycle_bytes(job.images)
    if job.preprocess_row:
        with PeakMemory() as peak:
            timing = measure(
                lambda: preprocess([decode_image(next_bytes(), min_size=spec.decode_size)], spec),
                job.timing,
            )
        row = Row(stage=STAGE_PREPROCESS, model=job.model, backend="opencv+numpy")
        rows.append(timed_row(row, timing, peak))
        first = images[0]
        row.reason = (
            f"{Path(job.images[0]).suffix.lstrip('.').upper()} {first.shape[1]}x{first.shape[0]}"
            f" -> {spec.width}x{spec.height}"
        )
    if job.end_to_end and target.is_runtime and job.map_path:
        from edgevpr.runtime.placemap import PlaceMap
        from edgevpr.runtime.recognizer import Recognizer

        placemap = PlaceMap.load(job.map_path)
        placemap.set_ef(job.ef)
        recognizer = Recognizer(runner, placemap)
        with PeakMemory() as peak:
            timing = measure(lambda: recognizer.recognize(next_bytes(), k=job.k), job.timing)
        row = Row(
            stage=STAGE_END_TO_END,
            map_size=job.map_size,
            params=job.map_params,
            k=job.k,
            size_mb=size,
            **base,
        )
        rows.append(timed_row(row, timing, peak))
    return EmbedResult(rows, descriptors)
