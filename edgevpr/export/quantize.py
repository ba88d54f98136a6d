"""FP32 ONNX -> INT8 ONNX for CPUs: ONNX Runtime static quantisation (QDQ format), calibrated
on real images preprocessed by the runtime's own pipeline.

What stays float is decided by measurement, not by a fixed list:
1. always: LayerNorm and the final L2 normalisation (``graph.fp32_nodes``);
2. then, if the descriptors of the calibration images drift below ``target_cosine`` from the
   FP32 model's, each block (``graph.block_of``: a backbone stage block, a mixer layer, a
   projection) is tried in float alone; the blocks whose float copy helps most are kept in
   float, one, two, four... until the target is met. On EfficientNet-Lite0 these are the stem
   and the first two inverted-residual blocks (see benchmarks/results/export_int8.md).

Weights are quantised per output channel (per-tensor weights cost about 0.2 of cosine on
Lite0's depthwise convolutions); activations are asymmetric uint8 by default, the fast path
on x86 with VNNI; ``int8`` activations suit Arm cores.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.metadata import INPUT_NAME, ModelMetadata
from edgevpr.export.graph import COMPUTE_OPS, block_of, fp32_nodes
from edgevpr.export.onnx_io import save_onnx_atomic, set_metadata
from edgevpr.runtime.backends import CPU_EP

ACTIVATION_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}
CALIBRATION_BATCH = 8
MIN_CALIBRATION_IMAGES = 8


@dataclass(frozen=True)
class Int8Options:
    per_channel: bool = True
    activations: str = "uint8"
    calibration: str = "minmax"
    # The search's goal on the calibration images: tighter than the gate's 0.99, because the
    # parity images are other images and their worst case is lower.
    target_cosine: float = 0.995
    search: bool = True
    max_float_blocks: int = 8
    # Extra node names or module prefixes (e.g. "backbone.model.blocks.0") to keep in float.
    keep_float: tuple[str, ...] = ()
    # Activations quantised around zero (zero-point 0): what TensorRT's ONNX parser takes
    # ("TensorRT only supports symmetric quantization"); ONNX Runtime on CPUs does best with
    # asymmetric uint8.
    symmetric_activations: bool = False

    def __post_init__(self) -> None:
        if self.activations not in ACTIVATION_TYPES:
            raise EdgeVPRError(f"INT8 activations must be one of {', '.join(ACTIVATION_TYPES)}")
        if self.calibration not in CALIBRATION_METHODS:
            raise EdgeVPRError(
                f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}"
            )
        if not 0.0 <= self.target_cosine <= 1.0:  # 0: no search, the fastest INT8
            raise EdgeVPRError(f"INT8 target cosine must be in [0, 1], got {self.target_cosine}")
        if self.symmetric_activations and self.activations != "int8":
            raise EdgeVPRError("symmetric activations are signed: use int8 activations")


@dataclass
class Int8Result:
    path: Path
    calibration_images: int
    cosine_min: float  # on the calibration images, against the FP32 ONNX model
    float_nodes: list[str]
    float_blocks: list[str]
    quantized_nodes: int
    trials: list[dict] = field(default_factory=list)


class ArrayReader(CalibrationDataReader):
    """Feeds preprocessed images (N x 3 x H x W float32) to the calibrator in batches."""

    def __init__(self, images: np.ndarray, batch: int = CALIBRATION_BATCH) -> None:
        self.batches = [images[i : i + batch] for i in range(0, len(images), batch)]
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return {INPUT_NAME: self.batches[self.index - 1]}

    def __len__(self) -> int:
        return len(self.batches)


def cpu_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=[CPU_EP])


def run_descriptors(path: Path, images: np.ndarray) -> np.ndarray:
    session = cpu_session(path)
    out = [
        session.run(None, {INPUT_NAME: images[i : i + CALIBRATION_BATCH]})[0]
        for i in range(0, len(images), CALIBRATION_BATCH)
    ]
    return np.concatenate(out).astype(np.float32)


def cosine_min(reference: np.ndarray, candidate: np.ndarray) -> float:
    num = np.sum(reference * candidate, axis=1)
    den = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    return float(np.min(num / np.maximum(den, 1e-12)))


def matching_nodes(model: onnx.ModelProto, patterns: tuple[str, ...]) -> list[str]:
    """Node names equal to a pattern, or whose module starts with it."""
    found = []
    for node in model.graph.node:
        block = block_of(node, depth=99)
        if any(node.name == p or block == p or block.startswith(p + ".") for p in patterns):
            found.append(node.name)
    return found


def compute_blocks(model: onnx.ModelProto, excluded: set[str]) -> dict[str, list[str]]:
    """Block -> its node names, for blocks with at least one quantisable compute node."""
    blocks: dict[str, list[str]] = {}
    for node in model.graph.node:
        blocks.setdefault(block_of(node), []).append(node.name)
    computing = {
        block_of(node)
        for node in model.graph.node
        if node.op_type in COMPUTE_OPS and node.name not in excluded
    }
    return {b: names for b, names in blocks.items() if b in computing}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """ORT's quantiser logs and prints per tensor; users see our progress line instead."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


class Quantizer:
    """One calibration, many quantisations: ranges are cached after the first run."""

    def __init__(self, prepared: Path, images: np.ndarray, options: Int8Options, work: Path):
        self.prepared = prepared
        self.images = images
        self.options = options
        self.work = work
        self.cache = work / "calibration.json"
        self.reference = run_descriptors(prepared, images)
        self.count = 0

    def quantize(self, exclude: list[str]) -> tuple[Path, float]:
        self.count += 1
        out = self.work / f"int8-{self.count}.onnx"
        with quiet():
            quantize_static(
                str(self.prepared),
                str(out),
                ArrayReader(self.images),
                quant_format=QuantFormat.QDQ,
                per_channel=self.options.per_channel,
                activation_type=ACTIVATION_TYPES[self.options.activations],
                weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude,
                calibrate_method=CALIBRATION_METHODS[self.options.calibration],
                calibration_cache_path=str(self.cache),
                extra_options={"ActivationSymmetric": self.options.symmetric_activations},
            )
        return out, cosine_min(self.reference, run_descriptors(out, self.images))


def prepare(fp32_path: Path, work: Path) -> Path:
    """ORT's recommended pre-processing (ONNX shape inference, graph optimisation). The
    symbolic shape inference pass is skipped: it fails on the L2 normalisation's Expand."""
    prepared = work / "prepared.onnx"
    try:
        with quiet():
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    except Exception as exc:  # noqa: BLE001 - ORT tooling raises anything
        raise EdgeVPRError(f"INT8 pre-processing of {fp32_path} failed: {exc}") from None
    return prepared


def quantize_int8(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calibration: np.ndarray,
    options: Int8Options | None = None,
    progress: Callable[[str], None] | None = None,
) -> Int8Result:
    """Write the INT8 model of ``fp32_path`` to ``out_path`` (atomically).

    ``calibration``: preprocessed images (``edgevpr.core.preprocess``), N x 3 x H x W.
    """
    options = options or Int8Options()
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if len(calibration) < MIN_CALIBRATION_IMAGES:
        raise EdgeVPRError(
            f"INT8 calibration needs at least {MIN_CALIBRATION_IMAGES} images, "
            f"got {len(calibration)}"
        )
    say = progress or (lambda _msg: None)
    source = onnx.load(str(fp32_path))
    metadata = ModelMetadata.from_props(
        {p.key: p.value for p in source.metadata_props}, str(fp32_path)
    )
    with tempfile.TemporaryDirectory(prefix="edgevpr-int8-") as tmp:
        work = Path(tmp)
        prepared = prepare(fp32_path, work)
        model = onnx.load(str(prepared))
        always = fp32_nodes(model) + matching_nodes(model, options.keep_float)
        say(f"calibrating on {len(calibration)} images")
        quantizer = Quantizer(prepared, calibration, options, work)
        best_path, best_cos = quantizer.quantize(always)
        trials = [{"float_blocks": [], "cosine_min": best_cos}]
        float_blocks: list[str] = []
        if best_cos < options.target_cosine and options.search:
            best_path, best_cos, float_blocks = search_float_blocks(
                quantizer, model, always, best_path, best_cos, trials, say
            )
        result_model = onnx.load(str(best_path))
        set_metadata(result_model, replace(metadata, precision="int8"))
        onnx.checker.check_model(result_model)
        save_onnx_atomic(result_model, out_path)
    quantized = sum(1 for n in result_model.graph.node if n.op_type == "DequantizeLinear")
    kept = always + [n for b in float_blocks for n in compute_blocks(model, set())[b]]
    return Int8Result(
        path=out_path,
        calibration_images=len(calibration),
        cosine_min=best_cos,
        float_nodes=kept,
        float_blocks=float_blocks,
        quantized_nodes=quantized,
        trials=trials,
    )


def search_float_blocks(
    quantizer: Quantizer,
    model: onnx.ModelProto,
    always: list[str],
    best_path: Path,
    best_cos: float,
    trials: list[dict],
    say: Callable[[str], None],
) -> tuple[Path, float, list[str]]:
    """Rank blocks by how much keeping each one float alone helps, then keep the top 1, 2,
    4... float until the target is met (or the limit is reached; the gate then judges)."""
    options = quantizer.options
    blocks = compute_blocks(model, set(always))
    say(f"INT8 cosine {best_cos:.4f} < {options.target_cosine}: measuring {len(blocks)} blocks")
    gains = []
    for block, names in blocks.items():
        _, cos = quantizer.quantize(always + names)
        gains.append((cos, block))
    gains.sort(key=lambda item: -item[0])
    chosen: list[str] = []
    count = 1
    while count <= min(options.max_float_blocks, len(gains)):
        chosen = [block for _, block in gains[:count]]
        names = [n for b in chosen for n in blocks[b]]
        path, cos = quantizer.quantize(always + names)
        trials.append({"float_blocks": chosen, "cosine_min": cos})
        say(f"  float {', '.join(chosen)}: cosine {cos:.4f}")
        if cos > best_cos:
            best_path, best_cos = path, cos
        if cos >= options.target_cosine:
            return path, cos, chosen
        count *= 2
    best = max(trials, key=lambda t: t["cosine_min"])
    return best_path, best_cos, list(best["float_blocks"])
