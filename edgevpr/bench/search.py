"""The search table: real descriptors of the workload (cached), maps grown from them at each
size, each measured in a worker process against exact search."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgevpr.bench.artifacts import ModelGroup, Progress
from edgevpr.bench.descriptors import l2_normalize
from edgevpr.bench.options import BenchOptions
from edgevpr.bench.report import FAILED, STAGE_SEARCH, Row
from edgevpr.bench.stages import SearchJob, SearchResult, run_search_job
from edgevpr.bench.workers import failure_reason, in_worker
from edgevpr.bench.workload import Workload

SEARCH_QUERIES = 200


def real_descriptors(
    group: ModelGroup, workload: Workload, opts: BenchOptions, say: Progress
) -> tuple[Path, Path | None]:
    """Descriptors of the workload's real images by this model (cached .npy files)."""
    key = f"{group.fingerprint[:16]}-{workload.key()}"
    folder = opts.cache_dir / "descriptors"
    db_path, q_path = folder / f"{key}-database.npy", folder / f"{key}-queries.npy"
    has_queries = bool(workload.queries)
    if db_path.is_file() and (q_path.is_file() or not has_queries):
        return db_path, q_path if has_queries else None
    source = group.onnx_fp32 or group.onnx_int8 or group.engine
    say(f"embedding {len(workload.database) + len(workload.queries)} images to seed the maps")
    if source is not None:
        from edgevpr.runtime.embedder import Embedder

        with Embedder(source) as embedder:
            database = embedder.embed_paths(workload.database)
            queries = embedder.embed_paths(workload.queries) if has_queries else None
    else:
        database = torch_descriptors(group.checkpoint, workload.database)  # type: ignore[arg-type]
        queries = torch_descriptors(group.checkpoint, workload.queries) if has_queries else None
    folder.mkdir(parents=True, exist_ok=True)
    np.save(db_path, l2_normalize(database))
    if queries is not None:
        np.save(q_path, l2_normalize(queries))
    return db_path, q_path if has_queries else None


def torch_descriptors(checkpoint: Path, paths: tuple[Path, ...]) -> np.ndarray:
    """Descriptors by the PyTorch model, where no exported file exists (no onnx package)."""
    from edgevpr.bench.torch_runner import torch_reference

    return torch_reference(checkpoint).embed_paths(paths)


def search_rows(
    group: ModelGroup, workload: Workload, opts: BenchOptions, say: Progress
) -> tuple[list[Row], dict[int, str]]:
    """Search rows per map size, and the map file built for each size."""
    db_path, q_path = real_descriptors(group, workload, opts, say)
    rows: list[Row] = []
    maps: dict[int, str] = {}
    sizes = opts.map_sizes if "search" in opts.stages else opts.map_sizes[:1]
    for size in sizes:
        job = SearchJob(
            model=group.label,
            fingerprint=group.fingerprint,
            real_database=str(db_path),
            real_queries=str(q_path) if q_path else None,
            map_size=size,
            M=opts.M,
            ef_construction=opts.ef_construction,
            efs=tuple(sorted(set(opts.efs) | {end_to_end_ef(opts)})),
            k=opts.k,
            queries=SEARCH_QUERIES,
            timing=opts.timing,
            cache_dir=str(opts.cache_dir),
        )
        say(f"search: {size:,} x {group.metadata.descriptor_dim}-d map")  # type: ignore[union-attr]
        try:
            result: SearchResult = in_worker(run_search_job, job, opts.isolate)
        except Exception as exc:  # noqa: BLE001 - a failed map is a failed row, not a crash
            rows.append(
                Row(
                    stage=STAGE_SEARCH,
                    model=group.label,
                    backend="hnswlib",
                    map_size=size,
                    status=FAILED,
                    reason=failure_reason(exc),
                )
            )
            continue
        maps[size] = result.map_path or ""
        if "search" in opts.stages:
            rows += [r for r in result.rows if r.backend != "hnswlib" or wanted_ef(r, opts)]
    return rows, maps


def end_to_end_ef(opts: BenchOptions) -> int:
    if opts.e2e_ef is not None:
        return opts.e2e_ef
    from edgevpr.runtime.placemap import DEFAULT_EF

    return DEFAULT_EF


def wanted_ef(row: Row, opts: BenchOptions) -> bool:
    ef = int(row.params.rsplit("ef=", 1)[1])
    return ef in opts.efs or ef == end_to_end_ef(opts)
