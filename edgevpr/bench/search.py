"""The search table: real descriptors of the workload (cached), maps grown from them at each
size, one per index spec, each built and measured in a worker process against exact search
(see ``mapsearch``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgevpr.bench.artifacts import ModelGroup, Progress
from edgevpr.bench.descriptors import content_key, l2_normalize, query_set
from edgevpr.bench.mapsearch import (
    EXACT_TIMED_BYTES,
    MAP_SEED,
    MAP_VERSION,
    QUERY_SEED,
    ExactJob,
    GrownMap,
    MeasureJob,
    build,
    exact_truth,
    map_path,
    measure_exact,
    measure_map,
    save_truth,
)
from edgevpr.bench.options import BenchOptions
from edgevpr.bench.report import FAILED, STAGE_SEARCH, Row
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
    """Search rows per map size and index spec, and the map file of the first spec at each
    size (what the pipeline table queries)."""
    db_path, q_path = real_descriptors(group, workload, opts, say)
    real = np.load(db_path)
    rows: list[Row] = []
    maps: dict[int, str] = {}
    sizes = opts.map_sizes if "search" in opts.stages else opts.map_sizes[:1]
    specs = opts.index_specs if "search" in opts.stages else opts.index_specs[:1]
    for size in sizes:
        grown = GrownMap(real, size, MAP_SEED)
        truth_path = truth_file(grown, q_path, opts)
        say(f"search: {size:,} x {real.shape[1]}-d map, exact answers")
        try:
            if "search" in opts.stages and size * real.shape[1] * 4 <= EXACT_TIMED_BYTES:
                job = ExactJob(str(db_path), size, str(truth_path), group.label, opts.k,
                               opts.timing)  # fmt: skip
                rows += in_worker(measure_exact, job, opts.isolate)
        except Exception as exc:  # noqa: BLE001 - a failed row, not a crash
            rows.append(failed_row(group, "exact (numpy)", size, exc))
        for given in specs:
            spec = given.resolved(real.shape[1], size)
            say(f"search: {size:,} places, {spec.label}")
            graph = (opts.M, opts.ef_construction)
            path = map_path(opts.cache_dir, grown, spec, group.fingerprint, graph)
            try:
                build_s = in_worker(build_job, (grown, spec, group.fingerprint, path, graph),
                                    opts.isolate)  # fmt: skip
            except Exception as exc:  # noqa: BLE001
                rows.append(failed_row(group, spec.label, size, exc))
                continue
            maps.setdefault(size, str(path))
            if "search" not in opts.stages:
                continue
            job = MeasureJob(str(path), spec.label, group.label, size, real.shape[1], build_s,
                             str(truth_path), tuple(sorted({*opts.efs, end_to_end_ef(opts)})),
                             end_to_end_ef(opts), opts.prior_radii,
                             opts.k, opts.timing)  # fmt: skip
            try:
                rows += in_worker(measure_map, job, opts.isolate)
            except Exception as exc:  # noqa: BLE001
                rows.append(failed_row(group, spec.label, size, exc))
    return rows, maps


def build_job(args: tuple) -> float:
    return build(*args)


def truth_file(grown: GrownMap, q_path: Path | None, opts: BenchOptions) -> Path:
    """Queries and their exact answers for a grown map (cached: a million 4096-d places
    take minutes to search exactly)."""
    real_queries = np.load(q_path) if q_path else None
    queries = query_set(grown.real, real_queries, SEARCH_QUERIES, seed=QUERY_SEED)
    key = content_key(grown.real, queries, size=grown.size, k=opts.k, radii=opts.prior_radii,
                      version=MAP_VERSION)  # fmt: skip
    path = opts.cache_dir / "truth" / f"{grown.size}-{key}.npz"
    if not path.is_file():
        truth = exact_truth(grown, queries, opts.k, opts.prior_radii)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_truth(path, queries, truth)
    return path


def failed_row(group: ModelGroup, backend: str, size: int, exc: Exception) -> Row:
    return Row(stage=STAGE_SEARCH, model=group.label, backend=backend, map_size=size,
               status=FAILED, reason=failure_reason(exc))  # fmt: skip


def end_to_end_ef(opts: BenchOptions) -> int:
    if opts.e2e_ef is not None:
        return opts.e2e_ef
    from edgevpr.runtime.placemap.kinds import index_kind

    kind = index_kind(opts.index_specs[0].kind)  # the pipeline's map: its own default
    return kind.defaults[kind.breadth]
