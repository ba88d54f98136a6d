"""``edgevpr export``'s work: checkpoint -> ONNX (always), INT8 ONNX, TensorRT engine, each
followed by its parity gate, with ``parity.json`` rewritten (atomically) after every step
so that an interrupted or failed export still says what was proved.

The source may also be an ONNX file that ``edgevpr export`` wrote (and gated against
PyTorch) earlier: then that FP32 ONNX, run on the CPU, is the reference, and torch is never
imported - the way to build a TensorRT engine on a Jetson from the same ONNX.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr import __version__
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.files import write_bytes_atomic
from edgevpr.core.formats import format_of
from edgevpr.core.preprocess import PreprocessSpec, preprocess
from edgevpr.core.provenance import utc_now
from edgevpr.export.onnx_io import DEFAULT_OPSET
from edgevpr.export.parity import (
    DEFAULT_GATES,
    DEFAULT_PARITY_IMAGES,
    Gate,
    ParityData,
    ParityMetrics,
    artifact_descriptors,
    compare,
    evenly,
    load_parity_data,
    reference_descriptors,
)
from edgevpr.export.quantize import Int8Options, quantize_int8
from edgevpr.export.tensorrt_build import EngineOptions, build_engine
from edgevpr.runtime.backends import CPU_EP
from edgevpr.runtime.backends.onnxruntime import read_onnx_metadata

CPU = [CPU_EP]
DEFAULT_CALIBRATION_IMAGES = 64
SYNTH_PLACES = 64


@dataclass
class ExportOptions:
    out: Path | None = None
    opset: int = DEFAULT_OPSET
    int8: bool = False
    fp16: bool = False  # the mixed-precision FP16 ONNX, for GPU execution providers
    openvino: bool = False  # gate the ONNX models on OpenVINO too (FP32, BF16, INT8)
    trt: bool = False
    engine: EngineOptions = field(default_factory=EngineOptions)
    parity_data: Path | None = None
    parity_images: int = DEFAULT_PARITY_IMAGES
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    int8_options: Int8Options = field(default_factory=Int8Options)
    gates: dict[str, Gate] = field(default_factory=lambda: dict(DEFAULT_GATES))


@dataclass
class ArtifactReport:
    format: str
    file: Path | None
    precision: str
    gate: Gate | None = None
    metrics: ParityMetrics | None = None
    status: str = "pending"  # reference | pass | FAIL | error
    failures: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def size_mb(self) -> float | None:
        if self.file is None or not self.file.is_file():
            return None
        return self.file.stat().st_size / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "file": self.file.name if self.file else None,
            "size_mb": None if self.size_mb is None else round(self.size_mb, 3),
            "precision": self.precision,
            "gate": None if self.gate is None else self.gate.describe(),
            "status": self.status,
            "failures": self.failures,
            "metrics": None if self.metrics is None else self.metrics.to_dict(),
            "seconds": round(self.seconds, 2),
            **self.details,
        }


@dataclass
class ExportReport:
    checkpoint: Path
    checkpoint_sha256: str
    out: Path
    parity_data: dict[str, Any] = field(default_factory=dict)
    artifacts: list[ArtifactReport] = field(default_factory=list)
    error: EdgeVPRError | None = None

    @property
    def parity_path(self) -> Path:
        return self.out / "parity.json"

    def failed(self) -> list[ArtifactReport]:
        return [a for a in self.artifacts if a.status == "FAIL"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "edgevpr_version": __version__,
            "created": utc_now(),
            "checkpoint": str(self.checkpoint),
            "checkpoint_sha256": self.checkpoint_sha256,
            "parity_data": self.parity_data,
            "artifacts": [a.to_dict() for a in self.artifacts],
            "error": None if self.error is None else str(self.error),
        }

    def save(self) -> None:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"
        write_bytes_atomic(self.parity_path, text.encode())


def default_out(checkpoint: Path) -> Path:
    return checkpoint.parent / f"{checkpoint.stem}-export"


def synthetic_parity_data(max_images: int, say: Callable[[str], None]) -> ParityData:
    """A small generated set (``edgevpr synth``) when the user gave no images."""
    try:
        from edgevpr.data.synth import SynthConfig, generate
    except ImportError:
        raise EdgeVPRError(
            "no --parity-data given: pass a folder of real images (ideally a dataset in the "
            "evaluation layout) to check the exported models against"
        ) from None
    places = max(2, min(SYNTH_PLACES, max_images // 2))
    say(
        f"parity data: {2 * places} synthetic images (edgevpr synth); pass --parity-data with "
        "images from your deployment for a faithful gate and INT8 calibration"
    )
    with tempfile.TemporaryDirectory(prefix="edgevpr-parity-") as tmp:
        generate(Path(tmp) / "synth", SynthConfig(places=places, val_places=0, train_places=0))
        data = load_parity_data(Path(tmp) / "synth", max_images)
    data.source = f"synthetic ({2 * places} images, edgevpr synth, seed 0)"
    return data


@dataclass
class ExportSession:
    """One export run: its report, the parity images and the reference descriptors every
    artifact is gated against."""

    report: ExportReport
    data: ParityData
    reference: np.ndarray


class Exporter:
    """Runs the steps the options ask for; every artifact gets a row in the report.

    Args:
        checkpoint: a checkpoint (edgevpr's or the MixVPR authors'), or an FP32 ONNX file
            that ``edgevpr export`` wrote (then torch is not needed: the Jetson route).
        options: what to export and how to gate it (:class:`ExportOptions`).
        say: where progress lines go (e.g. ``click.echo``).

    Returns (``run``): the :class:`ExportReport`, also written to ``OUT/parity.json`` after
    every step.

    Example::

        report = Exporter("run/best.pt", ExportOptions(int8=True, parity_data=Path("data"))).run()
        failed = report.failed()          # rows whose gate failed; empty when all passed
    """

    def __init__(
        self,
        checkpoint: str | Path,
        options: ExportOptions | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.checkpoint = Path(checkpoint)
        self.options = options or ExportOptions()
        self.spec = PreprocessSpec()
        self.say = say or (lambda _msg: None)

    def run(self) -> ExportReport:
        opts = self.options
        out = opts.out or default_out(self.checkpoint)
        if format_of(self.checkpoint).key == "onnx":
            return self.run_from_onnx(out)
        from edgevpr.model.checkpoint import load_checkpoint

        ckpt = load_checkpoint(self.checkpoint)
        self.spec = ckpt.model.config.preprocess
        session = self.start(
            ExportReport(self.checkpoint, ckpt.sha256, out),
            "PyTorch",
            "PyTorch FP32",
            lambda data: reference_descriptors(ckpt.model, data),
        )
        onnx_path = out / f"{self.checkpoint.stem}.onnx"
        self.export_onnx(ckpt, onnx_path, session)
        return self.reduced_precision(onnx_path, session)

    def run_from_onnx(self, out: Path) -> ExportReport:
        """INT8 / TensorRT from an FP32 ONNX export, gated against that ONNX on the CPU."""
        metadata = read_onnx_metadata(self.checkpoint)
        if metadata.precision != "fp32":
            raise EdgeVPRError(
                f"{self.checkpoint} is an {metadata.precision.upper()} model: "
                "start from the FP32 ONNX (or the checkpoint)"
            )
        self.spec = metadata.preprocess
        session = self.start(
            ExportReport(self.checkpoint, metadata.checkpoint_sha256, out),
            "ONNX",
            "the FP32 ONNX on the CPU,",
            lambda data: artifact_descriptors(self.checkpoint, data, CPU),
        )
        return self.reduced_precision(self.checkpoint, session)

    def start(
        self,
        report: ExportReport,
        kind: str,
        what: str,
        describe: Callable[[ParityData], np.ndarray],
    ) -> ExportSession:
        """Read the parity images (before the output folder is made), then the reference
        descriptors, which are the report's first row."""
        data = self.parity_data()
        report.out.mkdir(parents=True, exist_ok=True)
        report.parity_data = data.describe()
        started = time.perf_counter()
        self.say(f"reference: {what} {len(data.images)} images")
        reference = describe(data)
        row = ArtifactReport(kind, self.checkpoint, "fp32", status="reference")
        row.metrics = compare(reference, reference, data)
        row.seconds = time.perf_counter() - started
        report.artifacts.append(row)
        return ExportSession(report, data, reference)

    def reduced_precision(self, onnx_path: Path, session: ExportSession) -> ExportReport:
        opts, stem, out = self.options, onnx_path.stem, session.report.out
        if opts.trt and opts.engine.precision == "int8":
            # TensorRT parses only symmetric, signed Q/DQ: the INT8 model is written for it
            self.say("INT8 for TensorRT: activations quantised as symmetric int8")
            opts = replace(opts, int8_options=replace(
                opts.int8_options, activations="int8", symmetric_activations=True))  # fmt: skip
            self.options = opts
        if opts.fp16:
            self.export_fp16(onnx_path, out / f"{stem}_fp16.onnx", session)
        if opts.int8:
            self.export_int8(onnx_path, out / f"{stem}_int8.onnx", session)
        if opts.openvino:
            self.gate_openvino(onnx_path, out / f"{stem}_int8.onnx", session)
        if opts.trt:
            precision = opts.engine.precision
            # an INT8 engine is built from the Q/DQ INT8 model (and gated against FP32 too)
            source = out / f"{stem}_int8.onnx" if precision == "int8" else onnx_path
            self.export_engine(source, out / f"{stem}_{precision}.engine", session)
        session.report.save()
        return session.report

    def parity_data(self) -> ParityData:
        opts = self.options
        if opts.parity_data is None:
            return synthetic_parity_data(opts.parity_images, self.say)
        data = load_parity_data(opts.parity_data, opts.parity_images)
        kind = (
            f"{data.database} database + {data.queries} queries"
            if data.has_retrieval
            else "no coordinates: descriptor checks only"
        )
        self.say(f"parity data: {len(data.images)} images from {data.source} ({kind})")
        return data

    def gated(
        self,
        row: ArtifactReport,
        session: ExportSession,
        providers: list[str] | None,
        started: float,
    ) -> None:
        """Run ``row``'s artifact through the runtime, gate it, and save the report."""
        assert row.file is not None
        descriptors = artifact_descriptors(row.file, session.data, providers)
        row.metrics = compare(session.reference, descriptors, session.data)
        row.gate = self.options.gates[row.precision]
        row.failures = row.gate.failures(row.metrics)
        row.status = "FAIL" if row.failures else "pass"
        verdict = "passed" if not row.failures else "FAILED: " + "; ".join(row.failures)
        self.say(f"{row.format}: parity gate {verdict} ({row.metrics.cosine_min:.6f} cos min)")
        row.seconds = time.perf_counter() - started
        session.report.save()

    def export_onnx(self, ckpt: Any, path: Path, session: ExportSession) -> None:
        started = time.perf_counter()
        from edgevpr.export.onnx_export import export_onnx

        self.say(f"ONNX: exporting with opset {self.options.opset}")
        export_onnx(ckpt, path, self.options.opset)
        row = ArtifactReport("ONNX", path, "fp32", details={"opset": self.options.opset})
        session.report.artifacts.append(row)
        self.gated(row, session, CPU, started)

    def export_fp16(self, onnx_path: Path, path: Path, session: ExportSession) -> None:
        """The graph in FP16 but for LayerNorm and the L2 normalisations (``graph.fp32_nodes``),
        FP32 in and out: what ONNX Runtime's TensorRT (and CUDA) provider should run for FP16,
        its precision in its types. Gated on the best provider here (the GPU's where there
        is one: what will run it)."""
        import onnx

        from edgevpr.export.fp16 import convert_to_fp16
        from edgevpr.export.graph import fp32_nodes
        from edgevpr.export.onnx_io import save_onnx_atomic, set_metadata

        started = time.perf_counter()
        self.say("ONNX FP16: the graph in FP16, LayerNorm and L2 normalisations in FP32")
        model = onnx.load(str(onnx_path))
        metadata = read_onnx_metadata(onnx_path)
        mixed = convert_to_fp16(model, set(fp32_nodes(model)))
        set_metadata(mixed, replace(metadata, precision="fp16"))
        save_onnx_atomic(mixed, path)
        row = ArtifactReport("ONNX FP16", path, "fp16")
        session.report.artifacts.append(row)
        self.gated(row, session, None, started)

    def gate_openvino(self, onnx_path: Path, int8_path: Path, session: ExportSession) -> None:
        """The ONNX models as OpenVINO runs them, each gated like any artifact: FP32, BF16
        (its precision hint; gated like FP16) and the INT8 Q/DQ model where there is one."""
        from edgevpr.runtime.backends import OPENVINO, OPENVINO_BF16

        runs = [("OpenVINO", onnx_path, "fp32", OPENVINO),
                ("OpenVINO BF16", onnx_path, "bf16", OPENVINO_BF16)]  # fmt: skip
        if int8_path.is_file():
            runs.append(("OpenVINO INT8", int8_path, "int8", OPENVINO))
        for label, path, precision, provider in runs:
            started = time.perf_counter()
            self.say(f"{label}: gating {path.name}")
            row = ArtifactReport(label, path, precision, details={"provider": provider})
            session.report.artifacts.append(row)
            self.gated(row, session, [provider], started)

    def export_int8(self, onnx_path: Path, path: Path, session: ExportSession) -> None:
        started = time.perf_counter()
        pool = session.data.map_images()
        chosen = evenly(len(pool), self.options.calibration_images)
        calibration = preprocess([pool[int(i)] for i in chosen], self.spec)
        self.say(f"ONNX INT8: static QDQ quantisation, {len(calibration)} calibration images")
        result = quantize_int8(onnx_path, path, calibration, self.options.int8_options, self.say)
        row = ArtifactReport(
            "ONNX INT8",
            path,
            "int8",
            details={
                "calibration_images": result.calibration_images,
                "calibration_cosine_min": round(result.cosine_min, 6),
                "float_blocks": result.float_blocks,
                "float_nodes": len(result.float_nodes),
                "quantized_tensors": result.quantized_nodes,
                "int8_trials": result.trials,
            },
        )
        session.report.artifacts.append(row)
        self.gated(row, session, CPU, started)

    def export_engine(self, onnx_path: Path, path: Path, session: ExportSession) -> None:
        opts, report = self.options, session.report
        started = time.perf_counter()
        engine = opts.engine
        if engine.timing_cache is None:
            engine = replace(engine, timing_cache=path.parent / "timing.cache")
        row = ArtifactReport("TensorRT", path, engine.precision)
        report.artifacts.append(row)
        self.say(f"TensorRT: building {engine.precision} engine, batch {engine.batch}")
        try:
            header = build_engine(onnx_path, path, engine)
        except EdgeVPRError as exc:
            row.status = "error"
            row.failures = [str(exc)]
            row.file = None
            report.error = exc
            report.save()
            return
        row.details = {
            "trt_version": header.trt_version,
            "gpu_name": header.gpu_name,
            "compute_capability": header.compute_capability,
            "strongly_typed": header.extra["strongly_typed"],
            "batch": str(engine.batch),
        }
        self.gated(row, session, None, started)
