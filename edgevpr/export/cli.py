"""``edgevpr export CKPT``: the formats table, ``parity.json``, and exit codes
(0 every gate passed, 1 a gate failed, 2 a step could not run, e.g. TensorRT missing)."""

from __future__ import annotations

from pathlib import Path

import click

from edgevpr.core.errors import EdgeVPRError, GateFailure
from edgevpr.export.onnx_io import DEFAULT_OPSET
from edgevpr.export.parity import DEFAULT_GATES, DEFAULT_PARITY_IMAGES, Gate
from edgevpr.export.pipeline import (
    DEFAULT_CALIBRATION_IMAGES,
    ArtifactReport,
    Exporter,
    ExportOptions,
    ExportReport,
)
from edgevpr.export.quantize import ACTIVATION_TYPES, CALIBRATION_METHODS, Int8Options
from edgevpr.export.tensorrt_build import (
    DEFAULT_OPT_LEVEL,
    DEFAULT_WORKSPACE_MB,
    PRECISIONS,
    BatchRange,
    EngineOptions,
    parse_batch_range,
)

COLUMNS = (
    "Format",
    "File",
    "MB",
    "Prec",
    "Gate",
    "Cos min",
    "Cos mean",
    "Max abs",
    "R@1 ref>art",
    "Status",
)


def cell_values(row: ArtifactReport) -> list[str]:
    m = row.metrics
    recall = "-"
    if m is not None and m.recall_reference:
        ref = m.recall_reference[1]
        recall = (
            f"{ref:.1f}" if row.status == "reference" else f"{ref:.1f}>{m.recall_artifact[1]:.1f}"
        )
    measured = m is not None and row.status != "reference"
    status = "not built (see below)" if row.status == "error" else row.status
    return [
        row.format,
        row.file.name if row.file else "-",
        f"{row.size_mb:.1f}" if row.size_mb is not None else "-",
        row.precision,
        row.gate.describe() if row.gate else "-",
        f"{m.cosine_min:.6f}" if measured else "-",
        f"{m.cosine_mean:.6f}" if measured else "-",
        f"{m.max_abs:.2e}" if measured else "-",
        recall,
        status,
    ]


def format_table(report: ExportReport) -> str:
    rows = [list(COLUMNS)] + [cell_values(a) for a in report.artifacts]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_batch(_ctx: click.Context, _param: click.Parameter, value: str) -> BatchRange:
    try:
        return parse_batch_range(value)
    except EdgeVPRError as exc:
        raise click.BadParameter(str(exc)) from None


def gate_failure_message(report: ExportReport) -> str:
    parts = [
        f"{a.format} ({a.file.name if a.file else '-'}): {'; '.join(a.failures)}"
        for a in report.failed()
    ]
    return f"parity gate failed: {' | '.join(parts)} (details in {report.parity_path})"


JETSON_NOTE = """\b
TensorRT engines run only on the GPU family and TensorRT version that built them, so
build on the target. On a Jetson, JetPack brings TensorRT and its Python bindings
(not pip), and PyTorch is not needed: copy the FP32 ONNX that this command wrote
to the board and run there, e.g.
  edgevpr export model.onnx --trt --batch 1:1:4 --parity-data my_route/
"""


@click.command(epilog=JETSON_NOTE)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder [default: <CKPT stem>-export beside the checkpoint].",
)
@click.option(
    "--int8", is_flag=True, help="Also write an INT8 ONNX model for CPUs (static, calibrated)."
)
@click.option(
    "--fp16", is_flag=True,
    help="Also write a mixed-precision FP16 ONNX model for GPU execution providers (ONNX "
    "Runtime's TensorRT and CUDA): FP16 but for LayerNorm and the L2 normalisations.",
)
@click.option(
    "--openvino", is_flag=True,
    help="Also gate the ONNX models on OpenVINO (FP32, BF16, and INT8 with --int8): what "
    "--provider openvino / openvino-bf16 run (needs the openvino extra).",
)
@click.option(
    "--trt", is_flag=True, help="Also build a TensorRT engine (needs TensorRT and an NVIDIA GPU)."
)
@click.option(
    "--trt-precision",
    type=click.Choice(PRECISIONS),
    default=EngineOptions.precision,
    show_default=True,
    help="TensorRT engine precision (int8: built from the Q/DQ model --int8 "
    "--int8-activations int8 writes).",
)
@click.option(
    "--trt-batch",
    "--batch",
    "batch",
    default=str(BatchRange()),
    show_default=True,
    callback=parse_batch,
    help="TensorRT batch range MIN:OPT:MAX.",
)
@click.option(
    "--opset",
    type=click.IntRange(17, 30),
    default=DEFAULT_OPSET,
    show_default=True,
    help="ONNX opset.",
)
@click.option(
    "--parity-data",
    type=click.Path(path_type=Path),
    help="Images for the parity gate: a dataset in the evaluation layout (retrieval "
    "checks too) or any image folder [default: a small synthetic set].",
)
@click.option(
    "--parity-images",
    type=click.IntRange(2, 100_000),
    default=DEFAULT_PARITY_IMAGES,
    show_default=True,
    help="At most this many parity images (spread evenly, half database, half queries).",
)
@click.option(
    "--calib-images",
    type=click.IntRange(8, 10_000),
    default=DEFAULT_CALIBRATION_IMAGES,
    show_default=True,
    help="INT8 calibration images, taken from the parity data's database.",
)
@click.option(
    "--int8-activations",
    type=click.Choice(sorted(ACTIVATION_TYPES)),
    default="uint8",
    show_default=True,
    help="uint8 suits x86 (VNNI), int8 suits Arm.",
)
@click.option(
    "--int8-calibration",
    type=click.Choice(sorted(CALIBRATION_METHODS)),
    default="minmax",
    show_default=True,
)
@click.option(
    "--int8-target",
    type=click.FloatRange(0, 1),
    default=Int8Options.target_cosine,
    show_default=True,
    help="Keep the most sensitive blocks in float until the calibration images reach this "
    "cosine (0: no search, the fastest INT8).",
)
@click.option(
    "--int8-keep-float",
    multiple=True,
    help="Node name or module (e.g. backbone.model.blocks.0) to keep in float; repeatable.",
)
@click.option(
    "--fp32-min-cosine", type=float, default=DEFAULT_GATES["fp32"].min_cosine, show_default=True
)
@click.option(
    "--fp32-max-abs", type=float, default=DEFAULT_GATES["fp32"].max_abs, show_default=True
)
@click.option(
    "--min-cosine",
    type=float,
    default=DEFAULT_GATES["int8"].min_cosine,
    show_default=True,
    help="FP16 and INT8 gate: per-descriptor cosine minimum.",
)
@click.option(
    "--max-recall-drop",
    type=float,
    default=DEFAULT_GATES["int8"].max_recall1_drop,
    show_default=True,
    help="FP16 and INT8 gate: Recall@1 points the artifact may lose.",
)
@click.option(
    "--workspace",
    "workspace_mb",
    type=click.IntRange(1, 1 << 20),
    default=DEFAULT_WORKSPACE_MB,
    show_default=True,
    help="TensorRT builder workspace, MB.",
)
@click.option(
    "--opt-level",
    type=click.IntRange(0, 5),
    default=DEFAULT_OPT_LEVEL,
    show_default=True,
    help="TensorRT builder optimisation level (5: longest search).",
)
@click.option(
    "--dla-core",
    type=click.IntRange(0, 7),
    default=None,
    help="Build for this DLA core of a Jetson Orin (FP16/INT8, GPU fallback).",
)
@click.option(
    "--hardware-compatible",
    is_flag=True,
    help="An engine that runs on any Ampere or later GPU (somewhat slower).",
)
@click.option(
    "--version-compatible",
    is_flag=True,
    help="An engine that runs on later TensorRT releases of the same major version.",
)
@click.option(
    "--timing-cache",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TensorRT timing cache file [default: timing.cache in the output folder].",
)
def export(
    checkpoint: Path,
    out: Path | None,
    int8: bool,
    fp16: bool,
    openvino: bool,
    trt: bool,
    trt_precision: str,
    batch: BatchRange,
    opset: int,
    parity_data: Path | None,
    parity_images: int,
    calib_images: int,
    int8_activations: str,
    int8_calibration: str,
    int8_target: float,
    int8_keep_float: tuple[str, ...],
    fp32_min_cosine: float,
    fp32_max_abs: float,
    min_cosine: float,
    max_recall_drop: float,
    workspace_mb: int,
    opt_level: int,
    dla_core: int | None,
    hardware_compatible: bool,
    version_compatible: bool,
    timing_cache: Path | None,
) -> None:
    """Export CHECKPOINT to ONNX (and INT8 / TensorRT), each checked against PyTorch FP32.

    Writes the artifacts and parity.json into --out, prints a table, exits 1 if a gate fails.
    CHECKPOINT may also be an FP32 .onnx written by this command: INT8 and TensorRT are then
    built from it and checked against it, without PyTorch (e.g. on a Jetson).
    """
    reduced = Gate(min_cosine=min_cosine, max_recall1_drop=max_recall_drop)
    options = ExportOptions(
        out=out,
        opset=opset,
        int8=int8,
        fp16=fp16,
        openvino=openvino,
        trt=trt,
        engine=EngineOptions(
            precision=trt_precision,
            batch=batch,
            timing_cache=timing_cache,
            workspace_mb=workspace_mb,
            opt_level=opt_level,
            dla_core=dla_core,
            hardware_compatible=hardware_compatible,
            version_compatible=version_compatible,
        ),
        parity_data=parity_data,
        parity_images=parity_images,
        calibration_images=calib_images,
        int8_options=Int8Options(
            activations=int8_activations,
            calibration=int8_calibration,
            target_cosine=int8_target,
            keep_float=int8_keep_float,
        ),
        gates={
            "fp32": Gate(min_cosine=fp32_min_cosine, max_abs=fp32_max_abs),
            "fp16": reduced,
            "bf16": reduced,
            "int8": reduced,
        },
    )
    report = Exporter(checkpoint, options, say=lambda msg: click.echo(msg, err=True)).run()
    click.echo(format_table(report))
    click.echo(f"parity report: {report.parity_path}")
    if report.failed():
        raise GateFailure(gate_failure_message(report))
    if report.error is not None:
        raise report.error
