"""Benchmark results as data (``Row``, ``Report``) and as Markdown, CSV or JSON.

Markdown is for people: the machine first, then one table per model and stage. CSV has one
line per row with every column (for spreadsheets); JSON has everything, raw samples' summary
statistics included, for scripts such as ``benchmarks/``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from edgevpr.bench.machine import header_lines, one_line

STAGE_EMBED = "embed"
STAGE_PREPROCESS = "decode+preprocess"
STAGE_SEARCH = "search"
STAGE_END_TO_END = "end-to-end"
STAGES = (STAGE_PREPROCESS, STAGE_EMBED, STAGE_SEARCH, STAGE_END_TO_END)
# --stages names
STAGE_CHOICES = ("embed", "search", "pipeline")

OK, SKIPPED, FAILED = "ok", "skipped", "failed"


@dataclass
class Row:
    """One measurement (or the reason there is none)."""

    stage: str
    model: str
    backend: str
    precision: str = "-"
    batch: int = 1
    status: str = OK
    reason: str = ""
    mean_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    throughput: float | None = None  # images (or queries) per second, from the mean
    iterations: int | None = None
    foreign_cpu: float | None = None  # share of the CPUs other processes used meanwhile
    gflops: float | None = None  # achieved GFLOP/s
    size_mb: float | None = None  # model file, or index in memory
    peak_rss_mb: float | None = None
    speedup: float | None = None  # reference mean / this mean, same batch
    cos_min: float | None = None  # least cosine to the reference's descriptors, same images
    map_size: int | None = None
    dim: int | None = None
    params: str = ""  # e.g. "M=16 efC=200 ef=64"
    build_s: float | None = None
    top1: float | None = None  # top-1 agreement with exact search
    recall_at_k: float | None = None  # share of exact top-k found
    k: int | None = None
    vs_embed: float | None = None  # end-to-end mean over the batch-1 embed mean
    load_s: float | None = None  # place map: seconds to load the file
    prior_m: float | None = None  # place map: radius of the geo prior, if any
    rss_anon_mb: float | None = None  # resident memory after the row: the process's own
    rss_file_mb: float | None = None  # ...and pages of mapped files (the map's sections)
    warnings: list[str] = field(default_factory=list)

    @property
    def per_image_ms(self) -> float | None:
        return None if self.mean_ms is None else self.mean_ms / max(self.batch, 1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["per_image_ms"] = self.per_image_ms
        return data


@dataclass
class ModelInfo:
    """What the report says about a benchmarked model, above its tables."""

    name: str
    description: str = ""
    gflop_per_image: float | None = None
    gflop_parts: dict[str, float] = field(default_factory=dict)
    descriptor_dim: int | None = None
    input_size: str = ""
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    machine: dict[str, Any]
    settings: dict[str, Any]
    models: list[ModelInfo] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "models": [asdict(m) for m in self.models],
            "rows": [r.to_dict() for r in self.rows],
            "notes": list(self.notes),
        }


# --- number formatting -----------------------------------------------------------------------

def fmt_ms(value: float | None) -> str:
    """Milliseconds with about three significant digits, never scientific notation."""
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt_share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def fmt_cos(value: float | None) -> str:
    return "-" if value is None else f"{value:.5f}"


def fmt_count(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value // 1000}k" if value >= 1000 and value % 1000 == 0 else str(value)


def status_cell(row: Row) -> str:
    if row.status == OK:
        return "ok" + (" ⚠" if row.warnings else "")
    return row.status


def notes_cell(row: Row) -> str:
    parts = [row.reason] if row.reason else []
    parts += row.warnings
    return "; ".join(parts).replace("|", "/")


# Table columns per stage: (heading, cell function).
Column = tuple[str, Any]

# the size and latency columns every timed table shows
TIMED_COLUMNS: list[Column] = [
    ("Size (MB)", lambda r: fmt_num(r.size_mb)),
    ("Mean (ms)", lambda r: fmt_ms(r.mean_ms)),
    ("p50 (ms)", lambda r: fmt_ms(r.p50_ms)),
    ("p90 (ms)", lambda r: fmt_ms(r.p90_ms)),
    ("p99 (ms)", lambda r: fmt_ms(r.p99_ms)),
]

EMBED_COLUMNS: list[Column] = [
    ("Backend", lambda r: r.backend),
    ("Precision", lambda r: r.precision),
    ("Batch", lambda r: str(r.batch) if r.batch else "-"),
    ("Status", status_cell),
    *TIMED_COLUMNS,
    ("ms/image", lambda r: fmt_ms(r.per_image_ms)),
    ("Images/s", lambda r: fmt_num(r.throughput)),
    ("GFLOP/s", lambda r: fmt_num(r.gflops, 0 if (r.gflops or 0) >= 100 else 1)),
    ("Peak RSS (MB)", lambda r: fmt_num(r.peak_rss_mb, 0)),
    ("Speed-up", lambda r: fmt_ratio(r.speedup)),
    ("Cos vs ref (min)", lambda r: fmt_cos(r.cos_min)),
    ("Notes", notes_cell),
]

@dataclass
class PipelineLine:
    """One runtime backend's path from encoded image to place, stage by stage (batch 1)."""

    end_to_end: Row
    preprocess: Row | None
    embed: Row | None
    search: Row | None

    @property
    def stage_sum_ms(self) -> float | None:
        parts = [r.p50_ms if r else None for r in (self.preprocess, self.embed, self.search)]
        return None if any(p is None for p in parts) else sum(parts)  # type: ignore[arg-type]


def pipeline_lines(rows: list[Row]) -> list[PipelineLine]:
    """Pair every end-to-end row with the stage rows it is made of."""
    ok = [r for r in rows if r.status == OK]
    preprocess = next((r for r in ok if r.stage == STAGE_PREPROCESS), None)
    lines = []
    for e2e in (r for r in rows if r.stage == STAGE_END_TO_END):
        embed = next(
            (
                r
                for r in ok
                if r.stage == STAGE_EMBED
                and r.batch == 1
                and (r.backend, r.precision) == (e2e.backend, e2e.precision)
            ),
            None,
        )
        search = next(
            (
                r
                for r in ok
                if r.stage == STAGE_SEARCH
                and r.prior_m is None
                and r.map_size == e2e.map_size
                and f"{r.backend} {r.params}" == e2e.params
            ),
            None,
        )
        lines.append(PipelineLine(e2e, preprocess, embed, search))
    return lines


def p50_of(row: Row | None) -> str:
    return fmt_ms(row.p50_ms) if row is not None else "-"


PipelineColumn = tuple[str, Any]

PIPELINE_COLUMNS: list[PipelineColumn] = [
    ("Backend", lambda p: p.end_to_end.backend),
    ("Precision", lambda p: p.end_to_end.precision),
    ("Status", lambda p: status_cell(p.end_to_end)),
    ("Decode+preprocess p50", lambda p: p50_of(p.preprocess)),
    ("Embed p50", lambda p: p50_of(p.embed)),
    ("Search p50", lambda p: p50_of(p.search)),
    ("Sum of p50s", lambda p: fmt_ms(p.stage_sum_ms)),
    ("End-to-end mean", lambda p: fmt_ms(p.end_to_end.mean_ms)),
    ("p50", lambda p: fmt_ms(p.end_to_end.p50_ms)),
    ("p90", lambda p: fmt_ms(p.end_to_end.p90_ms)),
    ("p99", lambda p: fmt_ms(p.end_to_end.p99_ms)),
    ("E2E / embed", lambda p: fmt_ratio(p.end_to_end.vs_embed)),
    ("Images/s", lambda p: fmt_num(p.end_to_end.throughput)),
    ("Peak RSS (MB)", lambda p: fmt_num(p.end_to_end.peak_rss_mb, 0)),
    (
        "Notes",
        lambda p: "; ".join(
            x
            for x in (
                f"map {fmt_count(p.end_to_end.map_size)}, {p.end_to_end.params}, "
                f"top-{p.end_to_end.k}"
                if p.end_to_end.map_size
                else "",
                p.preprocess.reason if p.preprocess else "",
                notes_cell(p.end_to_end),
            )
            if x
        ),
    ),
]


SEARCH_COLUMNS: list[Column] = [
    ("Map", lambda r: fmt_count(r.map_size)),
    ("Dim", lambda r: str(r.dim) if r.dim else "-"),
    ("Method", lambda r: r.backend),
    ("Params", lambda r: r.params or "-"),
    ("Prior", lambda r: "-" if r.prior_m is None else f"{r.prior_m:g} m"),
    ("Status", status_cell),
    ("Build (s)", lambda r: fmt_num(r.build_s)),
    ("Load (s)", lambda r: fmt_num(r.load_s, 2)),
    ("File (MB)", lambda r: fmt_num(r.size_mb, 0)),
    *TIMED_COLUMNS,
    ("Queries/s", lambda r: fmt_num(r.throughput, 0)),
    ("Top-1 agree", lambda r: fmt_share(r.top1)),
    ("Recall@k", lambda r: "-" if r.recall_at_k is None else f"{r.recall_at_k:.3f} (k={r.k})"),
    ("Peak RSS (MB)", lambda r: fmt_num(r.peak_rss_mb, 0)),
    ("RSS own / mapped (MB)", lambda r: "-" if r.rss_anon_mb is None
     else f"{r.rss_anon_mb:.0f} / {r.rss_file_mb:.0f}"),
    ("Notes", notes_cell),
]

TABLE_TITLES = {
    STAGE_EMBED: "Embed: the network alone (preprocessed batch in, descriptors out)",
    "stages": (
        "Pipeline, one image at a time: encoded bytes -> decode -> preprocess -> embed -> "
        "place-map query (ms)"
    ),
    STAGE_SEARCH: "Search: one query, top-k, per index kind, against exact float search",
}


def markdown_table(rows: list[Any], columns: list[Column]) -> list[str]:
    lines = [
        "| " + " | ".join(h for h, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]
    return lines


def model_lines(info: ModelInfo) -> list[str]:
    lines = [f"### {info.name}", ""]
    facts = []
    if info.description:
        facts.append(info.description)
    if info.input_size:
        facts.append(f"input {info.input_size}")
    if info.descriptor_dim:
        facts.append(f"{info.descriptor_dim}-d descriptors")
    if info.gflop_per_image:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in info.gflop_parts.items())
        facts.append(f"{info.gflop_per_image:.2f} GFLOP/image" + (f" ({parts})" if parts else ""))
    if facts:
        lines.append("- " + "; ".join(facts))
    for label, path in info.files.items():
        lines.append(f"- {label}: `{path}`")
    lines += [f"- {note}" for note in info.notes]
    return lines + [""]


def to_markdown(report: Report) -> str:
    out = ["## edgevpr bench", ""]
    out += ["| Machine | |", "|---|---|"]
    out += [f"| {label} | {value} |" for label, value in header_lines(report.machine)]
    out.append("")
    settings = report.settings
    out.append(
        f"Timing: at least {settings.get('warmup')} warm-up calls lasting a quarter of the "
        f"timed budget, then at least "
        f"{settings.get('seconds')} s and {settings.get('min_iters')} calls per row; "
        "latency is per call (a whole batch); throughput and GFLOP/s from the mean. "
        f"Peak RSS: {settings.get('peak_memory', 'peak resident memory')}."
    )
    out.append("")
    for info in report.models:
        out += model_lines(info)
        mine = [r for r in report.rows if r.model == info.name]
        embed = [r for r in mine if r.stage == STAGE_EMBED]
        search = [r for r in mine if r.stage == STAGE_SEARCH]
        for key, rows, columns in (
            (STAGE_EMBED, embed, EMBED_COLUMNS),
            (STAGE_SEARCH, search, SEARCH_COLUMNS),
            ("stages", pipeline_lines(mine), PIPELINE_COLUMNS),
        ):
            if rows:
                out += [f"#### {TABLE_TITLES[key]}", ""]
                out += markdown_table(rows, columns)
                out.append("")
    if report.notes:
        out += ["Notes:", ""] + [f"- {note}" for note in report.notes] + [""]
    return "\n".join(out) + "\n"


CSV_FIELDS = [
    "machine", "stage", "model", "backend", "precision", "batch", "status", "reason",
    "mean_ms", "p50_ms", "p90_ms", "p99_ms", "per_image_ms", "throughput", "iterations",
    "foreign_cpu",
    "gflops", "size_mb", "peak_rss_mb", "speedup", "cos_min", "map_size", "dim", "params",
    "build_s", "top1", "recall_at_k", "k", "vs_embed", "warnings",
]


def to_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    machine = one_line(report.machine)
    for row in report.rows:
        data = row.to_dict()
        data["machine"] = machine
        data["warnings"] = "; ".join(row.warnings)
        writer.writerow({k: "" if data.get(k) is None else data[k] for k in CSV_FIELDS})
    return buffer.getvalue()


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, allow_nan=False, default=str) + "\n"


FORMATTERS = {"md": to_markdown, "csv": to_csv, "json": to_json}


def render(report: Report, fmt: str) -> str:
    return FORMATTERS[fmt](report)
