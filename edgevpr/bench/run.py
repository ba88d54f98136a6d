"""``edgevpr bench`` from options to a Report: resolve the models, export what is missing,
plan a target per backend x precision (or say why it is skipped), measure each in its own
worker process, and relate the rows to each other (speed-up and descriptor agreement with the
reference, end-to-end over embed).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import numpy as np

from edgevpr.bench import artifacts
from edgevpr.bench.artifacts import ModelGroup, Progress, has_module
from edgevpr.bench.backends import BACKENDS, reference_order
from edgevpr.bench.descriptors import l2_normalize
from edgevpr.bench.machine import machine_info
from edgevpr.bench.options import DEFAULT_MODEL, BenchOptions
from edgevpr.bench.plan import (
    count_flops,
    make_target,
    prepare_files,
    unavailable_reason,
    wanted_backends,
)
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
from edgevpr.bench.search import SEARCH_QUERIES, end_to_end_ef, search_rows
from edgevpr.bench.stages import EmbedJob, EmbedResult, Target, run_embed_job
from edgevpr.bench.timing import FOREIGN_CPU_LIMIT, PEAK_MEMORY_MEANING
from edgevpr.bench.workers import failure_reason, in_worker
from edgevpr.bench.workload import Workload, find_workload
from edgevpr.core.errors import EdgeVPRError

__all__ = ["DEFAULT_MODEL", "BenchOptions", "run_bench"]


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
            map_params=f"{opts.index_specs[0].label} breadth={e2e_ef}",
            ef=e2e_ef,
            k=opts.k,
        )
        say(f"embed: {group.label} {target.backend} {target.precision}")
        try:
            result: EmbedResult = in_worker(run_embed_job, job, opts.isolate)
        except Exception as exc:  # noqa: BLE001 - a failed backend is a failed row
            rows.append(unmeasured(group, target.backend, target.precision, FAILED, exc))
            continue
        first_runtime = first_runtime and not pipeline
        rows += result.rows
        if result.descriptors is not None:
            descriptors[target.key] = result.descriptors
    return rows, descriptors


def unmeasured(
    group: ModelGroup, backend: str, precision: str, status: str, why: str | BaseException
) -> Row:
    """An embed row for a backend that was skipped (``why``: the reason) or failed (``why``:
    the exception)."""
    reason = why if isinstance(why, str) else failure_reason(why)
    return Row(
        stage=STAGE_EMBED,
        model=group.label,
        backend=backend,
        precision=precision,
        batch=0,
        status=status,
        reason=reason,
    )


def relate(
    rows: list[Row], descriptors: dict[str, np.ndarray], keys: dict[str, str]
) -> str | None:
    """Speed-up and least cosine against the reference backend; end-to-end over embed.
    ``keys``: (backend, precision) label -> --backend name. Returns the reference's name."""
    reference = next((k for k in reference_order() if k in descriptors), None)
    embed = [r for r in rows if r.stage == STAGE_EMBED and r.status == OK]
    if reference is not None:
        ref_backend, ref_precision = BACKENDS[reference].label, BACKENDS[reference].precision
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

def bench_model(
    group: ModelGroup,
    opts: BenchOptions,
    machine: dict[str, Any],
    workload: Workload,
    say: Progress,
) -> tuple[ModelInfo, list[Row]]:
    keys = wanted_backends(opts)
    possible = [k for k in keys if unavailable_reason(BACKENDS[k], group, machine) is None]
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
        backend = BACKENDS[key]
        made = unavailable_reason(backend, group, machine) or make_target(backend, group)
        if isinstance(made, Target):
            targets.append(made)
        elif "embed" in opts.stages or "pipeline" in opts.stages:
            rows.append(unmeasured(group, backend.label, backend.precision, SKIPPED, made))
    maps: dict[int, str] = {}
    if opts.map_sizes and ("search" in opts.stages or "pipeline" in opts.stages):
        search, maps = search_rows(group, workload, opts, say)
        rows += search
    if "embed" in opts.stages or "pipeline" in opts.stages:
        embed, descriptors = embed_rows(group, targets, workload, opts, flop, maps, say)
        rows[:0] = embed  # embed rows first, skipped ones after them
        labels = {f"{b.label}/{b.precision}": k for k, b in BACKENDS.items()}
        reference = relate(rows, descriptors, labels)
        if reference:
            info.notes.append(
                f"reference for speed-up and cosine: {BACKENDS[reference].label} "
                f"{BACKENDS[reference].precision} (same batch; cosine over "
                f"{opts_compare(descriptors)} real images)"
            )
    return info, order_rows(rows)


def opts_compare(descriptors: dict[str, np.ndarray]) -> int:
    return min((len(d) for d in descriptors.values()), default=0)


def order_rows(rows: list[Row]) -> list[Row]:
    """Embed rows in backend order (skipped ones in place), then search, then pipeline."""
    backend_rank = {(b.label, b.precision): i for i, b in enumerate(BACKENDS.values())}
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

