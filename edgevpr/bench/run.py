"""``edgevpr bench`` from options to a Report: resolve the models, export what is missing,
plan a target per backend x precision (or say why it is skipped), measure each in its own
worker process, and relate the rows to each other (speed-up and descriptor agreement with the
reference, end-to-end over embed).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.bench import artifacts
from edgevpr.bench.artifacts import ModelGroup, Progress, has_module
from edgevpr.bench.descriptors import content_key, l2_normalize
from edgevpr.bench.machine import machine_info
from edgevpr.bench.report import (
    FAILED,
    OK,
    SKIPPED,
    STAGE_EMBED,
    STAGE_END_TO_END,
    STAGE_PREPROCESS,
    STAGE_SEARCH,
    ModelInfo,
    Report,
    Row,
)
from edgevpr.bench.stages import (
    EmbedJob,
    EmbedResult,
    SearchJob,
    SearchResult,
    Target,
    run_embed_job,
    run_search_job,
)
from edgevpr.bench.timing import FOREIGN_CPU_LIMIT, PEAK_MEMORY_MEANING, TimingConfig
from edgevpr.bench.workload import Workload, find_workload
from edgevpr.errors import EdgeVPRError, first_line

DEFAULT_MODEL = "mixvpr_lite0_512"
CPU_EP, CUDA_EP, TRT_EP = (
    "CPUExecutionProvider",
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
)
# --backend names, in table order: (shown backend, precision).
BACKENDS: dict[str, tuple[str, str]] = {
    "pytorch": ("pytorch", "fp32"),
    "pytorch-cuda": ("pytorch-cuda", "fp32"),
    "ort-cpu": ("ort-cpu", "fp32"),
    "ort-cpu-int8": ("ort-cpu", "int8"),
    "ort-cuda": ("ort-cuda", "fp32"),
    "ort-trt": ("ort-trt", "fp16"),
    "tensorrt": ("tensorrt", "fp16"),
}
REFERENCE_ORDER = ("pytorch", "pytorch-cuda", "ort-cpu", "ort-cuda")
SEARCH_QUERIES = 200


@dataclass
class BenchOptions:
    models: list[str] = field(default_factory=list)
    backends: list[str] | None = None  # None: every backend (unavailable ones are skipped)
    batches: tuple[int, ...] = (1, 8)
    warmup: int = 3
    seconds: float = 2.0
    min_iters: int = 5
    map_sizes: tuple[int, ...] = (10_000, 100_000)
    efs: tuple[int, ...] = (32, 64, 128, 256)
    M: int = 16
    ef_construction: int = 200
    e2e_ef: int | None = None  # None: the runtime's default ef
    k: int = 10
    stages: tuple[str, ...] = ("embed", "search", "pipeline")
    images: str | None = None
    map_images: int = 512
    threads: int | None = None
    cache_dir: Path = field(default_factory=artifacts.default_cache_dir)
    isolate: bool = True

    @property
    def timing(self) -> TimingConfig:
        return TimingConfig(warmup=self.warmup, seconds=self.seconds, min_iters=self.min_iters)

    def embed_batches(self) -> tuple[int, ...]:
        """Batch 1 is always measured when the pipeline table is wanted: it needs it."""
        if "pipeline" in self.stages and 1 not in self.batches:
            return (1, *self.batches)
        return self.batches


# --- running jobs in workers -----------------------------------------------------------------

def in_worker(fn: Callable[[Any], Any], job: Any, isolate: bool) -> Any:
    """Run ``fn(job)`` in a fresh spawned process (or here when ``isolate`` is False)."""
    if not isolate:
        return fn(job)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, job).result()


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, EdgeVPRError):
        return str(exc)
    if isinstance(exc, BrokenProcessPool):
        return "the worker process crashed (see stderr)"
    return f"{type(exc).__name__}: {first_line(exc, 200)}"


# --- planning --------------------------------------------------------------------------------

def unavailable_reason(key: str, group: ModelGroup, machine: dict[str, Any]) -> str | None:
    """Why backend ``key`` cannot run on this machine at all (None: it can)."""
    providers = machine.get("ort_providers") or []
    has_gpu = bool(machine.get("gpus"))
    if key.startswith("pytorch"):
        if group.checkpoint is None:
            return "needs the checkpoint (.pt); only exported files were given"
        if not has_module("torch"):
            return "torch is not installed (pip install 'edgevpr[export]')"
    if key in ("pytorch-cuda", "ort-cuda", "ort-trt", "tensorrt") and not has_gpu:
        return "no NVIDIA GPU (nvidia-smi found none)"
    if key == "ort-cuda" and CUDA_EP not in providers:
        return "this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)"
    if key == "ort-trt" and TRT_EP not in providers:
        return "this onnxruntime has no TensorrtExecutionProvider (onnxruntime-gpu + TensorRT)"
    if key == "tensorrt" and group.engine is None and not has_module("tensorrt"):
        return "tensorrt is not installed (pip install 'edgevpr[trt]', from NVIDIA's index)"
    return None


def make_target(key: str, group: ModelGroup) -> Target | str:
    """The target for ``key``, or why the file it needs is missing."""
    backend, precision = BACKENDS[key]
    if key == "pytorch":
        return Target(key, backend, precision, str(group.checkpoint))
    if key == "pytorch-cuda":
        return Target(key, backend, precision, str(group.checkpoint), device="cuda")
    if key == "ort-cpu-int8":
        if group.onnx_int8 is None:
            return group.unavailable.get("int8", "no INT8 model")
        return Target(key, backend, precision, str(group.onnx_int8), (CPU_EP,))
    if key == "tensorrt":
        if group.engine is None:
            return group.unavailable.get("fp16", "no TensorRT engine")
        return Target(key, backend, precision, str(group.engine))
    if group.onnx_fp32 is None:
        return group.unavailable.get("fp32", "no FP32 ONNX model")
    providers: dict[str, tuple[Any, ...]] = {
        "ort-cpu": (CPU_EP,),
        "ort-cuda": (CUDA_EP, CPU_EP),
        "ort-trt": ((TRT_EP, {"trt_fp16_enable": True}), CUDA_EP, CPU_EP),
    }
    return Target(key, backend, precision, str(group.onnx_fp32), providers[key])


def calibration_paths(workload: Workload) -> tuple[Path, ...]:
    """Database images spread along the route, as many as INT8 calibration takes."""
    count = artifacts.CALIBRATION_IMAGES
    return workload.database[:: max(1, len(workload.database) // count)][:count]


def calibration_key(paths: tuple[Path, ...]) -> str:
    """Names the calibration set by content, so a cached INT8 model is reused only for the
    same images (wherever they now lie)."""
    return content_key(*(np.fromfile(p, dtype=np.uint8) for p in paths))[:16]


def calibration_images(paths: tuple[Path, ...], spec: Any) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from edgevpr.runtime.preprocess import preprocess, read_for_model

        return preprocess([read_for_model(p, spec) for p in paths], spec)

    return load


def prepare_files(
    group: ModelGroup, keys: list[str], opts: BenchOptions, workload: Workload, say: Progress
) -> None:
    """Export on the fly whatever the wanted backends and stages need and the user did not
    give: FP32 ONNX for the runtime backends and for seeding search maps, INT8 and a TensorRT
    engine only where their rows are wanted."""
    measuring = "embed" in opts.stages or "pipeline" in opts.stages
    runtime_wanted = measuring and any(not k.startswith("pytorch") for k in keys)
    if runtime_wanted or "search" in opts.stages:
        artifacts.ensure_fp32(group, opts.cache_dir, say)
    artifacts.load_metadata(group)
    if measuring and "ort-cpu-int8" in keys:
        spec = group.metadata.preprocess  # type: ignore[union-attr]
        paths = calibration_paths(workload)
        artifacts.ensure_int8(
            group, opts.cache_dir, calibration_images(paths, spec), calibration_key(paths), say
        )
    if measuring and "tensorrt" in keys and has_module("tensorrt"):
        artifacts.ensure_engine(group, opts.cache_dir, max(opts.embed_batches()), say)


def count_flops(group: ModelGroup, notes: list[str]) -> tuple[float | None, dict[str, float]]:
    """FLOP per image and its split by model part, from the ONNX graph where there is one."""
    source = group.onnx_fp32 or group.onnx_int8
    if source is not None and has_module("onnx"):
        from edgevpr.bench.flops import count_flops as count

        result = count(source)
        if result.uncounted:
            notes.append(f"{len(result.uncounted)} nodes of unknown shape were not counted")
        parts = {k: v / 1e9 for k, v in result.by_part.items() if k != "other" or v}
        return result.per_image, parts
    if group.checkpoint is not None and has_module("torch"):
        from edgevpr.bench.torch_runner import count_flops, torch_reference

        return count_flops(torch_reference(group.checkpoint)), {}
    notes.append("GFLOP/s not shown: counting FLOPs needs the onnx package or the checkpoint")
    return None, {}


# --- search ----------------------------------------------------------------------------------

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


# --- embed -----------------------------------------------------------------------------------

def embed_rows(
    group: ModelGroup,
    targets: list[Target],
    workload: Workload,
    opts: BenchOptions,
    flop_per_image: float | None,
    maps: dict[int, str],
    say: Progress,
) -> tuple[list[Row], dict[str, np.ndarray]]:
    rows: list[Row] = []
    descriptors: dict[str, np.ndarray] = {}
    map_size = opts.map_sizes[0] if opts.map_sizes else None
    e2e_ef = end_to_end_ef(opts)
    first_runtime = True
    for target in targets:
        pipeline = "pipeline" in opts.stages and target.is_runtime and map_size in maps
        job = EmbedJob(
            target=target,
            model=group.label,
            batches=opts.embed_batches(),
            timing=opts.timing,
            images=tuple(str(p) for p in workload.database),
            flop_per_image=flop_per_image,
            threads=opts.threads,
            preprocess_row=pipeline and first_runtime,
            end_to_end=pipeline,
            map_path=maps.get(map_size) if map_size else None,
            map_size=map_size,
            map_params=f"M={opts.M} efC={opts.ef_construction} ef={e2e_ef}",
            ef=e2e_ef,
            k=opts.k,
        )
        say(f"embed: {group.label} {target.backend} {target.precision}")
        try:
            result: EmbedResult = in_worker(run_embed_job, job, opts.isolate)
        except Exception as exc:  # noqa: BLE001 - a failed backend is a failed row
            backend, precision = BACKENDS[target.key]
            rows.append(
                Row(
                    stage=STAGE_EMBED,
                    model=group.label,
                    backend=backend,
                    precision=precision,
                    batch=0,
                    status=FAILED,
                    reason=failure_reason(exc),
                )
            )
            continue
        first_runtime = first_runtime and not pipeline
        rows += result.rows
        if result.descriptors is not None:
            descriptors[target.key] = result.descriptors
    return rows, descriptors


def relate(
    rows: list[Row], descriptors: dict[str, np.ndarray], keys: dict[str, str]
) -> str | None:
    """Speed-up and least cosine against the reference backend; end-to-end over embed.
    ``keys``: (backend, precision) label -> --backend name. Returns the reference's name."""
    reference = next((k for k in REFERENCE_ORDER if k in descriptors), None)
    embed = [r for r in rows if r.stage == STAGE_EMBED and r.status == OK]
    if reference is not None:
        ref_backend, ref_precision = BACKENDS[reference]
        ref_mean = {
            r.batch: r.mean_ms
            for r in embed
            if (r.backend, r.precision) == (ref_backend, ref_precision)
        }
        ref_desc = l2_normalize(descriptors[reference])
        for row in embed:
            key = keys.get(f"{row.backend}/{row.precision}")
            if row.batch in ref_mean and row.mean_ms:
                row.speedup = ref_mean[row.batch] / row.mean_ms
            if key == reference:
                row.reason = row.reason or "reference"
            elif key in descriptors:
                mine = l2_normalize(descriptors[key])
                row.cos_min = float(np.min(np.sum(mine * ref_desc, axis=1)))
    for e2e in (r for r in rows if r.stage == STAGE_END_TO_END and r.status == OK):
        embed_b1 = next(
            (
                r
                for r in embed
                if r.batch == 1 and (r.backend, r.precision) == (e2e.backend, e2e.precision)
            ),
            None,
        )
        if embed_b1 is not None and embed_b1.mean_ms and e2e.mean_ms:
            e2e.vs_embed = e2e.mean_ms / embed_b1.mean_ms
    return reference


# --- the whole run ---------------------------------------------------------------------------

def wanted_backends(opts: BenchOptions) -> list[str]:
    if opts.backends is None:
        return list(BACKENDS)
    unknown = [b for b in opts.backends if b not in BACKENDS]
    if unknown:
        raise EdgeVPRError(
            f"unknown backend {', '.join(unknown)} (choose from {', '.join(BACKENDS)})"
        )
    return [b for b in BACKENDS if b in opts.backends]


def bench_model(
    group: ModelGroup,
    opts: BenchOptions,
    machine: dict[str, Any],
    workload: Workload,
    say: Progress,
) -> tuple[ModelInfo, list[Row]]:
    keys = wanted_backends(opts)
    possible = [k for k in keys if unavailable_reason(k, group, machine) is None]
    prepare_files(group, possible, opts, workload, say)
    info = ModelInfo(name=group.label, files=group.files(), notes=list(group.notes))
    for name, value in artifacts.describe_model(group).items():
        setattr(info, name, value)
    flop, parts = count_flops(group, info.notes)
    info.gflop_per_image = flop / 1e9 if flop else None
    info.gflop_parts = parts

    rows: list[Row] = []
    targets: list[Target] = []
    for key in keys:
        backend, precision = BACKENDS[key]
        made = unavailable_reason(key, group, machine) or make_target(key, group)
        if isinstance(made, Target):
            targets.append(made)
        elif "embed" in opts.stages or "pipeline" in opts.stages:
            rows.append(
                Row(
                    stage=STAGE_EMBED,
                    model=group.label,
                    backend=backend,
                    precision=precision,
                    batch=0,
                    status=SKIPPED,
                    reason=made,
                )
            )
    maps: dict[int, str] = {}
    if opts.map_sizes and ("search" in opts.stages or "pipeline" in opts.stages):
        search, maps = search_rows(group, workload, opts, say)
        rows += search
    if "embed" in opts.stages or "pipeline" in opts.stages:
        embed, descriptors = embed_rows(group, targets, workload, opts, flop, maps, say)
        rows[:0] = embed  # embed rows first, skipped ones after them
        labels = {f"{b}/{p}": k for k, (b, p) in BACKENDS.items()}
        reference = relate(rows, descriptors, labels)
        if reference:
            info.notes.append(
                f"reference for speed-up and cosine: {BACKENDS[reference][0]} "
                f"{BACKENDS[reference][1]} (same batch; cosine over {opts_compare(descriptors)} "
                "real images)"
            )
    return info, order_rows(rows)


def opts_compare(descriptors: dict[str, np.ndarray]) -> int:
    return min((len(d) for d in descriptors.values()), default=0)


def order_rows(rows: list[Row]) -> list[Row]:
    """Embed rows in backend order (skipped ones in place), then search, then pipeline."""
    backend_rank = {BACKENDS[k]: i for i, k in enumerate(BACKENDS)}
    stage_rank = {STAGE_EMBED: 0, STAGE_SEARCH: 1, STAGE_PREPROCESS: 2, STAGE_END_TO_END: 3}

    def key(row: Row) -> tuple:
        return (
            stage_rank.get(row.stage, 4),
            0 if row.stage == STAGE_SEARCH else backend_rank.get((row.backend, row.precision), 99),
            row.map_size or 0,
            row.batch,
        )

    return sorted(rows, key=key)


def settings_of(opts: BenchOptions, workload: Workload) -> dict[str, Any]:
    data = asdict(opts)
    data["cache_dir"] = str(opts.cache_dir)
    data["batches"] = list(opts.embed_batches())
    data["images"] = workload.description
    data["map_images"] = len(workload.database)
    data["search_queries"] = SEARCH_QUERIES
    data["e2e_ef"] = end_to_end_ef(opts)
    data["peak_memory"] = PEAK_MEMORY_MEANING
    return data


def contention_notes(rows: list[Row], load_at_start: float | None, cores: int) -> list[str]:
    """Say plainly when other processes shared the machine: their work sets the tails."""
    notes = []
    if load_at_start is not None and load_at_start > 0.25 * cores + 0.5:
        notes.append(
            f"WARNING: load average {load_at_start:.1f} on {cores} cores when the run began: "
            "other processes were running"
        )
    busy = [r.foreign_cpu for r in rows if r.foreign_cpu is not None]
    flagged = [b for b in busy if b > FOREIGN_CPU_LIMIT]
    if flagged:
        notes.append(
            f"WARNING: {len(flagged)} of {len(busy)} rows ran while other processes used more "
            f"than {FOREIGN_CPU_LIMIT:.0%} of the CPUs (up to {max(flagged):.0%}); rerun them "
            "on a quiet machine before trusting their tails"
        )
    return notes


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def run_bench(opts: BenchOptions, say: Progress) -> Report:
    if not opts.models and not has_module("torch"):
        raise EdgeVPRError(
            f"give a MODEL (an exported .onnx or .engine): the default ({DEFAULT_MODEL}) "
            "is built with torch, which is not installed"
        )
    wanted_backends(opts)  # unknown names fail before any work
    load_at_start = load_average()
    machine = machine_info()
    # every model and --images are read (and bad ones refused) before anything is written
    groups = artifacts.resolve_models(opts.models or [DEFAULT_MODEL], opts.cache_dir, say)
    workload = find_workload(opts.images, opts.cache_dir, opts.map_images)
    opts.cache_dir.mkdir(parents=True, exist_ok=True)
    report = Report(machine=machine, settings=settings_of(opts, workload))
    for group in groups:
        info, rows = bench_model(group, opts, machine, workload, say)
        report.models.append(info)
        report.rows += rows
    report.settings["load_average_at_start"] = load_at_start
    report.notes += contention_notes(report.rows, load_at_start, machine["cpu"]["cores_total"])
    report.notes += [
        f"images: {workload.description}; search maps are grown from the descriptors of "
        f"{len(workload.database)} of them (never random vectors); {SEARCH_QUERIES} queries: "
        + (
            f"the descriptors of {min(len(workload.queries), SEARCH_QUERIES)} real query images"
            + (
                ", topped up by draws around them"
                if len(workload.queries) < SEARCH_QUERIES
                else ""
            )
            if workload.queries
            else "drawn around the database descriptors with a larger change"
        ),
        f"cache: {opts.cache_dir} (exports, maps and descriptors; delete it to rebuild)",
    ]
    return report

