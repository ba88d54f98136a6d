"""The measurements, each meant to run in a fresh worker process (so that one backend's
libraries, threads and memory never colour another's numbers, and a crashing backend costs
its own rows only):

- embed: one backend x precision, every batch size, on preprocessed real images; plus, for
  runtime backends, decode + preprocess and the end-to-end path (the runtime's Recognizer:
  encoded image bytes -> decode -> preprocess -> embed -> place-map query), at batch 1;
- search: one map size, exact NumPy search and hnswlib (the runtime's PlaceMap) at several
  ef, timed one query at a time, scored against exact search.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.bench.descriptors import agreement, content_key, exact_search, grow, query_set
from edgevpr.bench.report import (
    STAGE_EMBED,
    STAGE_END_TO_END,
    STAGE_PREPROCESS,
    STAGE_SEARCH,
    Row,
)
from edgevpr.bench.timing import PeakMemory, Timing, TimingConfig, measure
from edgevpr.runtime.backends import BACKENDS

MAP_SEED = 1
QUERY_SEED = 2
GROWTH_VERSION = 1  # bump when descriptors.grow changes: cached maps are keyed by it
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


@dataclass(frozen=True)
class SearchJob:
    model: str
    fingerprint: str
    real_database: str  # .npy of real descriptors in route order
    real_queries: str | None
    map_size: int
    M: int
    ef_construction: int
    efs: tuple[int, ...]
    k: int
    queries: int
    timing: TimingConfig
    cache_dir: str


@dataclass
class SearchResult:
    rows: list[Row]
    map_path: str | None = None


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

        return torch_reference(target.path, device=target.device, threads=job.threads)
    from edgevpr.runtime.embedder import Embedder

    providers = list(target.providers) if target.providers is not None else None
    return Embedder(
        target.path, providers=providers, threads=job.threads, batch_size=max(job.batches)
    )


def input_batch(images: list[np.ndarray], spec: Any, count: int) -> np.ndarray:
    """``count`` preprocessed real images (cycling through those given)."""
    from edgevpr.runtime.preprocess import preprocess

    chosen = [images[i % len(images)] for i in range(count)]
    return preprocess(chosen, spec)


def cycle_bytes(paths: tuple[str, ...]) -> Any:
    encoded = [Path(p).read_bytes() for p in paths[:ENCODED_IMAGES]]
    return itertools.cycle(encoded).__next__


def run_embed_job(job: EmbedJob) -> EmbedResult:
    from edgevpr.runtime.images import decode_image
    from edgevpr.runtime.preprocess import preprocess, read_for_model

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

        place_map = PlaceMap.load(job.map_path)
        place_map.set_ef(job.ef)
        recognizer = Recognizer(runner, place_map)
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


# --- search ----------------------------------------------------------------------------------

def map_cache_path(job: SearchJob, real: np.ndarray, real_queries: np.ndarray | None) -> Path:
    extra = () if real_queries is None else (real_queries,)
    key = content_key(
        real,
        *extra,
        size=job.map_size,
        M=job.M,
        efc=job.ef_construction,
        seed=MAP_SEED,
        growth=GROWTH_VERSION,
        fingerprint=job.fingerprint,
    )
    return Path(job.cache_dir) / "maps" / f"{job.map_size}x{real.shape[1]}-{key}.map"


def build_map(job: SearchJob, database: np.ndarray, path: Path) -> float:
    """Build the HNSW map (all cores) and save it; returns the build time in seconds."""
    from edgevpr.runtime.placemap import PlaceMap

    place_map = PlaceMap.create(
        database.shape[1],
        job.fingerprint,
        M=job.M,
        ef_construction=job.ef_construction,
        ef=max(job.efs),
        capacity=len(database),
    )
    start = time.perf_counter()
    place_map.add(database)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    place_map.save(path)
    build_info = path.with_suffix(".json")
    build_info.write_text(json.dumps({"build_s": seconds, "cores": os.cpu_count()}) + "\n")
    return seconds


def measure_exact(job: SearchJob, database: np.ndarray, queries: np.ndarray, base: dict) -> Row:
    next_query = itertools.cycle(range(len(queries))).__next__
    with PeakMemory() as peak:
        timing = measure(
            lambda: exact_search(database, queries[next_query()][None], job.k), job.timing
        )
    row = Row(backend="exact (numpy)", size_mb=database.nbytes / 1e6, **base)
    row.top1, row.recall_at_k = 1.0, 1.0
    return timed_row(row, timing, peak)


def ensure_map(
    job: SearchJob, database: np.ndarray, real: np.ndarray, real_queries: np.ndarray | None
) -> tuple[Path, float, bool]:
    """The cached map file for this job (built now if missing): (path, build s, cached)."""
    path = map_cache_path(job, real, real_queries)
    info = path.with_suffix(".json")
    if path.is_file() and info.is_file():
        return path, float(json.loads(info.read_text())["build_s"]), True
    return path, build_map(job, database, path), False


def measure_hnsw(
    job: SearchJob,
    path: Path,
    queries: np.ndarray,
    truth: tuple[np.ndarray, np.ndarray],
    build: tuple[float, bool],
    base: dict,
) -> list[Row]:
    from edgevpr.runtime.placemap import PlaceMap

    place_map = PlaceMap.load(path)
    next_query = itertools.cycle(range(len(queries))).__next__
    rows = []
    for ef in job.efs:
        place_map.set_ef(ef)
        ids, sims = place_map.search(queries, job.k)
        score = agreement(ids, sims, truth[0], truth[1], job.k)
        with PeakMemory() as peak:
            timing = measure(
                lambda: place_map.query(queries[next_query()][None], job.k), job.timing
            )
        row = Row(
            backend="hnswlib",
            params=f"M={job.M} efC={job.ef_construction} ef={ef}",
            size_mb=file_mb(path),
            build_s=build[0],
            top1=score.top1,
            recall_at_k=score.recall_at_k,
            reason="index from the cache" if build[1] else "",
            **base,
        )
        rows.append(timed_row(row, timing, peak))
    return rows


def run_search_job(job: SearchJob) -> SearchResult:
    real = np.load(job.real_database)
    real_queries = np.load(job.real_queries) if job.real_queries else None
    database = grow(real, job.map_size, seed=MAP_SEED)
    queries = query_set(real, real_queries, job.queries, seed=QUERY_SEED)
    truth = exact_search(database, queries, job.k)
    base = dict(model=job.model, stage=STAGE_SEARCH, map_size=job.map_size, dim=real.shape[1])
    base["k"] = job.k
    rows = [measure_exact(job, database, queries, base)]
    path, build_s, cached = ensure_map(job, database, real, real_queries)
    # Drop the float matrix before timing the map: its peak RSS is the map's own.
    del database
    gc.collect()
    rows += measure_hnsw(job, path, queries, truth, (build_s, cached), base)
    return SearchResult(rows, str(path))
