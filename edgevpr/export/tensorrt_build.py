"""ONNX -> TensorRT engine with the TensorRT Python API, and the JSON header beside it.

- Batch: one optimisation profile for MIN:OPT:MAX on the ``images`` input (the height and
  width are fixed by the model: MixVPR's mixer layers are H*W wide).
- FP16 on TensorRT 10: weakly typed network, the FP16 builder flag, and FP32 forced
  (layer precision and output types, OBEY_PRECISION_CONSTRAINTS) on the layers built from
  ``graph.fp32_nodes`` - LayerNorm and the final L2 normalisation.
- FP16 on TensorRT 11 (strongly typed only, no FP16 flag): the ONNX graph is converted to
  mixed FP16 first (``fp16.convert_to_fp16``, the same nodes kept FP32) and the network is
  built strongly typed, so the precision comes from the graph's types.
- A timing cache file is read and written back, so rebuilding (or building a second
  precision) on the same GPU skips most kernel timing.
- ``<engine>.json`` records what the engine is bound to: TensorRT version, GPU name and
  compute capability, precision, batch range, the ONNX sha256 and the model metadata. The
  runtime refuses an engine whose TensorRT version or GPU family differ, saying to rebuild.

On a Jetson, run the same ``edgevpr export CKPT --trt`` on the board with JetPack's
TensorRT (its Python bindings come with JetPack, not from PyPI): an engine is built for,
and only runs on, the GPU and TensorRT it was built with.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx

from edgevpr.errors import EdgeVPRError
from edgevpr.export.fp16 import convert_to_fp16
from edgevpr.export.graph import fp32_nodes
from edgevpr.files import file_sha256, write_bytes_atomic
from edgevpr.provenance import utc_now
from edgevpr.runtime.metadata import INPUT_NAME, ModelMetadata
from edgevpr.runtime.tensorrt_backend import EngineHeader, header_path

MAX_BATCH = 1024
DEFAULT_WORKSPACE_MB = 2048
TRT_INSTALL_HINT = (
    "TensorRT is not installed: pip install 'edgevpr[trt]' on a machine that can reach "
    "NVIDIA's package index (pypi.nvidia.com), or on a Jetson use the TensorRT that comes "
    "with JetPack"
)
PRECISIONS = ("fp16", "fp32")


@dataclass(frozen=True)
class BatchRange:
    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max <= MAX_BATCH:
            raise EdgeVPRError(
                f"batch range {self} must satisfy 1 <= MIN <= OPT <= MAX <= {MAX_BATCH}"
            )

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


def parse_batch_range(text: str) -> BatchRange:
    """``MIN:OPT:MAX`` (or a single N for a fixed batch) -> BatchRange."""
    parts = text.strip().split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise EdgeVPRError(
            f"batch range '{text}' must be MIN:OPT:MAX integers, e.g. 1:8:32"
        ) from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise EdgeVPRError(f"batch range '{text}' must be MIN:OPT:MAX, e.g. 1:8:32")
    lo, opt, hi = values
    if not 1 <= lo <= opt <= hi <= MAX_BATCH:
        raise EdgeVPRError(
            f"batch range '{text}' must satisfy 1 <= MIN <= OPT <= MAX <= {MAX_BATCH}"
        )
    return BatchRange(lo, opt, hi)


def engine_header(
    *,
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    precision: str,
    batch: BatchRange,
    onnx_sha256: str,
    metadata: ModelMetadata,
    strongly_typed: bool,
    fp32_layers: list[str],
) -> EngineHeader:
    """The header the runtime checks before it loads the engine."""
    return EngineHeader(
        trt_version=trt_version,
        gpu_name=gpu_name,
        compute_capability=compute_capability,
        precision=precision,
        batch_min=batch.min,
        batch_opt=batch.opt,
        batch_max=batch.max,
        onnx_sha256=onnx_sha256,
        metadata=metadata.to_props(),
        extra={
            "input_shape": [3, metadata.preprocess.height, metadata.preprocess.width],
            "strongly_typed": strongly_typed,
            "fp32_layers": fp32_layers,
            "created": utc_now(),
        },
    )


def write_header(engine: str | os.PathLike[str], header: EngineHeader) -> Path:
    path = header_path(engine)
    text = json.dumps(header.to_dict(), indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(path, text.encode())
    return path


def trt_major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        raise EdgeVPRError(f"cannot read the TensorRT version '{version}'") from None


def uses_strong_typing(version: str) -> bool:
    """TensorRT 11 builds only strongly typed networks; 10 keeps the FP16 builder flag."""
    return trt_major(version) >= 11


def layer_keeps_fp32(
    layer_name: str,
    layer_metadata: str,
    output_names: list[str],
    nodes: set[str],
    tensors: set[str],
) -> bool:
    """Whether a TensorRT layer comes from one of the FP32 ONNX ``nodes``.

    The ONNX parser names a layer after its node (decomposed nodes get a suffix), records
    the node in the layer's metadata (``[ONNX Layer: name]``), and names the node's output
    tensors as in the ONNX graph; any of the three identifies it.
    """
    if layer_name in nodes or any(t in tensors for t in output_names):
        return True
    if any(f"[ONNX Layer: {n}]" in layer_metadata for n in nodes):
        return True
    return any(layer_name.startswith(n + "_") for n in nodes)


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise EdgeVPRError(TRT_INSTALL_HINT) from None
    return trt


def gpu_identity() -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor') of CUDA device 0."""
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return props.name, f"{props.major}.{props.minor}"
    except ImportError:
        pass
    try:
        from cuda.bindings import runtime as cudart

        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name.decode(errors="replace").rstrip("\x00")
            return name, f"{props.major}.{props.minor}"
    except ImportError:
        pass
    raise EdgeVPRError("building a TensorRT engine needs an NVIDIA GPU, and none was found")


class TrtLogger:
    """Collects TensorRT's errors so that a failed build explains itself in one line."""

    def __init__(self, trt: Any) -> None:
        self.trt = trt
        self.errors: list[str] = []
        serious = (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR)

        class _Logger(trt.ILogger):
            def __init__(inner) -> None:  # noqa: N805 - TensorRT's subclassing pattern
                trt.ILogger.__init__(inner)

            def log(inner, severity: Any, msg: str) -> None:  # noqa: N805
                if severity in serious:
                    self.errors.append(msg)

        self.logger = _Logger()

    def last(self) -> str:
        return self.errors[-1] if self.errors else "no message from TensorRT"


def fp32_tensors(model: onnx.ModelProto, nodes: list[str]) -> set[str]:
    wanted = set(nodes)
    return {out for node in model.graph.node if node.name in wanted for out in node.output}


def force_fp32(trt: Any, network: Any, nodes: set[str], tensors: set[str]) -> list[str]:
    """Pin the layers built from ``nodes`` to FP32 (weakly typed networks only)."""
    pinned = []
    float_types = (trt.float32, trt.float16)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        names = [t.name for t in outputs if t is not None]
        meta = getattr(layer, "metadata", "") or ""
        if not layer_keeps_fp32(layer.name, meta, names, nodes, tensors):
            continue
        layer.precision = trt.float32
        for j, tensor in enumerate(outputs):
            if tensor is not None and tensor.dtype in float_types:
                layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
    return pinned


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    precision: str = "fp16",
    batch: BatchRange | None = None,
    timing_cache: str | os.PathLike[str] | None = None,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
) -> EngineHeader:
    """Build and write the engine and its header (both atomically); returns the header."""
    if precision not in PRECISIONS:
        raise EdgeVPRError(f"TensorRT precision must be one of {', '.join(PRECISIONS)}")
    trt = import_tensorrt()
    batch = batch or BatchRange()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    model = onnx.load(str(onnx_path))
    metadata = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})
    keep = fp32_nodes(model)
    strong = uses_strong_typing(trt.__version__)
    if strong and precision == "fp16":
        model = convert_to_fp16(model, set(keep))
    log = TrtLogger(trt)
    builder = trt.Builder(log.logger)
    flags = 0
    if strong:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif trt_major(trt.__version__) < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log.logger)
    if not parser.parse(model.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgeVPRError(f"TensorRT cannot parse {onnx_path}: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    pinned: list[str] = []
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 convolutions miss the 1e-4 gate
    if precision == "fp16" and not strong:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = force_fp32(trt, network, set(keep), fp32_tensors(model, keep))
    profile = builder.create_optimization_profile()
    height, width = metadata.preprocess.height, metadata.preprocess.width
    profile.set_shape(
        INPUT_NAME,
        (batch.min, 3, height, width),
        (batch.opt, 3, height, width),
        (batch.max, 3, height, width),
    )
    config.add_optimization_profile(profile)
    cache_file = Path(timing_cache) if timing_cache else None
    cached = cache_file.read_bytes() if cache_file and cache_file.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cached), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeVPRError(f"TensorRT could not build an engine from {onnx_path}: {log.last()}")
    gpu_name, capability = gpu_identity()
    write_bytes_atomic(engine_path, bytes(serialized))
    if cache_file is not None:
        write_bytes_atomic(cache_file, bytes(config.get_timing_cache().serialize()))
    header = engine_header(
        trt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=capability,
        precision=precision,
        batch=batch,
        onnx_sha256=file_sha256(onnx_path),
        metadata=replace(metadata, precision=precision),
        strongly_typed=strong,
        fp32_layers=pinned or keep,
    )
    write_header(engine_path, header)
    return header
