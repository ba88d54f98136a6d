"""ONNX -> TensorRT engine with the TensorRT Python API, the JSON header beside it, and a
report of the layers the builder chose.

- Batch: one optimisation profile for MIN:OPT:MAX on the ``images`` input (the height and
  width are fixed by the model: MixVPR's mixer layers are H*W wide).
- Precision comes from the graph wherever TensorRT can build strongly typed networks (the
  flag exists since TensorRT 10.0; TensorRT 11 builds nothing else): for FP16 the ONNX graph
  is converted to mixed FP16 first (``fp16.convert_to_fp16``: LayerNorm and the final L2
  normalisation stay FP32) and the network's types decide, not layer names. INT8 is built
  the same way from a Q/DQ ONNX model (TensorRT 11 has no calibrator). Weakly typed networks
  (the FP16 flag and FP32 pins, ``trt_pins``) remain only where strong typing is missing, and
  for DLA on TensorRT 10, whose documented route is the FP16 flag with GPU fallback.
- A timing cache file is read and written back, so rebuilding (or building a second
  precision) on the same GPU skips most kernel timing; a cache TensorRT refuses (another GPU
  or version) is replaced by a fresh one, said on stderr.
- ``<engine>.json`` records what the engine is bound to: the full TensorRT version, GPU name
  and compute capability, precision, batch range, the ONNX and engine sha256 and the model
  metadata. It is written before the engine, and the runtime checks the engine's sha256
  against it, so an interrupted export never leaves an engine that passes for another.
- ``<engine>.layers.json``: the engine inspector's detailed layer list and which layers run
  in FP32.

On a Jetson, run the same ``edgevpr export CKPT --trt`` on the board with JetPack's
TensorRT (its Python bindings come with JetPack, not from PyPI): an engine is built for,
and only runs on, the GPU and TensorRT it was built with.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx
from onnx import numpy_helper

from edgevpr.core.engine_header import EngineHeader, header_path
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.files import file_sha256, write_bytes_atomic
from edgevpr.core.metadata import INPUT_NAME, ModelMetadata
from edgevpr.core.provenance import utc_now
from edgevpr.export.fp16 import convert_to_fp16
from edgevpr.export.graph import fp32_nodes
from edgevpr.export.trt_pins import pin_fp32
from edgevpr.runtime.backends.tensorrt import TrtLog, local_gpu, trt_log

MAX_BATCH = 1024
DEFAULT_WORKSPACE_MB = 2048
DEFAULT_OPT_LEVEL = 3  # TensorRT's own default; 5 searches longest, 0 fastest to build
TRT_INSTALL_HINT = (
    "TensorRT is not installed: pip install 'edgevpr[trt-cu12]' (CUDA 12 drivers) or "
    "'edgevpr[trt-cu13]' (CUDA 13), or on a Jetson use the TensorRT that comes with JetPack "
    "in a virtual environment made with --system-site-packages"
)
PRECISIONS = ("fp16", "fp32", "int8")
AMPERE = (8, 0)


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


@dataclass(frozen=True)
class EngineOptions:
    """How to build an engine (each field is an ``edgevpr export`` option)."""

    precision: str = "fp16"
    batch: BatchRange = field(default_factory=BatchRange)
    timing_cache: Path | None = None
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    opt_level: int = DEFAULT_OPT_LEVEL
    dla_core: int | None = None  # Jetson Orin's DLA, with GPU fallback
    hardware_compatible: bool = False  # runs on any GPU from Ampere (8.0) on
    version_compatible: bool = False  # runs on later TensorRT releases of the same major

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EdgeVPRError(f"TensorRT precision must be one of {', '.join(PRECISIONS)}")
        if not 1 <= self.workspace_mb <= 1 << 20:
            raise EdgeVPRError(f"workspace {self.workspace_mb} MB is out of range [1, 1048576]")
        if not 0 <= self.opt_level <= 5:
            raise EdgeVPRError(f"builder optimisation level {self.opt_level} is not in 0..5")
        if self.dla_core is not None and (self.dla_core < 0 or self.precision == "fp32"):
            raise EdgeVPRError("DLA runs FP16 or INT8 engines on core 0 or 1, not FP32")
        if self.dla_core is not None and self.hardware_compatible:
            raise EdgeVPRError("a DLA engine cannot be hardware-compatible across GPUs")
        if self.dla_core is not None and self.batch.min != self.batch.max:
            raise EdgeVPRError(f"DLA takes no dynamic dimensions: give a fixed batch "
                               f"(--trt-batch {self.batch.opt}), not {self.batch}")  # fmt: skip


def engine_header(
    *,
    trt_version: str,
    gpu: tuple[str, str],
    options: EngineOptions,
    onnx_sha256: str,
    engine_sha256: str,
    metadata: ModelMetadata,
    strongly_typed: bool,
    fp32_layers: list[str],
) -> EngineHeader:
    """The header the runtime checks before it loads the engine."""
    batch = options.batch
    return EngineHeader(
        trt_version=trt_version,
        gpu_name=gpu[0],
        compute_capability=gpu[1],
        precision=options.precision,
        batch_min=batch.min,
        batch_opt=batch.opt,
        batch_max=batch.max,
        onnx_sha256=onnx_sha256,
        metadata=metadata.to_props(),
        hardware_compatibility="ampere_plus" if options.hardware_compatible else "none",
        version_compatible=options.version_compatible,
        engine_sha256=engine_sha256,
        extra={
            "input_shape": [3, metadata.preprocess.height, metadata.preprocess.width],
            "strongly_typed": strongly_typed,
            "fp32_layers": fp32_layers,
            "dla_core": options.dla_core,
            "opt_level": options.opt_level,
            "workspace_mb": options.workspace_mb,
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


def builds_strongly_typed(trt: Any, options: EngineOptions) -> bool:
    """Strongly typed wherever TensorRT has it, except DLA on TensorRT 10 (whose documented
    route is the FP16 flag with GPU fallback). TensorRT 11 builds nothing else, whether or
    not it still names the (deprecated) flag: its weak path would need the FP16 flag, which
    11 removed."""
    major = trt_major(trt.__version__)
    if major >= 11:
        return True
    if not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        return False
    return options.dla_core is None


def network_flags(trt: Any, strong: bool) -> int:
    # The flag's value differs between releases (STRONGLY_TYPED is 1 in TensorRT 10, where
    # EXPLICIT_BATCH is 0, and 0 in TensorRT 11), so it is read from the module; a TensorRT
    # 11 without it is strongly typed by default and takes no flag.
    flags = 0
    strong_flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strong and strong_flag is not None:
        flags |= 1 << int(strong_flag)
    if trt_major(trt.__version__) < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return flags


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise EdgeVPRError(TRT_INSTALL_HINT) from None
    return trt


def fp32_tensors(model: onnx.ModelProto, nodes: list[str]) -> set[str]:
    wanted = set(nodes)
    return {out for node in model.graph.node if node.name in wanted for out in node.output}


def is_qdq(model: onnx.ModelProto) -> bool:
    return any(node.op_type == "QuantizeLinear" for node in model.graph.node)


def asymmetric_quantisation(model: onnx.ModelProto) -> str | None:
    """The first Q/DQ node with a non-zero zero-point (TensorRT's ONNX parser takes only
    symmetric quantisation), or None."""
    initializers = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zero = initializers.get(node.input[2])
        if zero is not None and numpy_helper.to_array(zero).any():
            return node.name or node.output[0]
    return None


def unsigned_quantisation(model: onnx.ModelProto) -> bool:
    """Whether any Q/DQ pair quantises to uint8 (TensorRT takes signed int8 only)."""
    types = {t.name: t.data_type for t in model.graph.initializer}
    return any(
        node.op_type == "QuantizeLinear"
        and len(node.input) > 2
        and types.get(node.input[2]) == onnx.TensorProto.UINT8
        for node in model.graph.node
    )


def typed_model(model: onnx.ModelProto, options: EngineOptions, strong: bool) -> onnx.ModelProto:
    """The graph TensorRT parses: mixed FP16 for strongly typed FP16 builds, Q/DQ for INT8."""
    if options.precision == "int8":
        if not strong or not is_qdq(model):
            raise EdgeVPRError(
                "a TensorRT INT8 engine is built from the Q/DQ INT8 ONNX model "
                "(export --int8 --activations int8 writes it) on a TensorRT with strongly "
                "typed networks (10.0 or later)"
            )
        if unsigned_quantisation(model):
            raise EdgeVPRError(
                "TensorRT takes signed int8 Q/DQ only: export with --int8-activations int8"
            )
        asymmetric = asymmetric_quantisation(model)
        if asymmetric is not None:
            raise EdgeVPRError(
                f"TensorRT takes symmetric quantisation only, and {asymmetric} has a non-zero "
                "zero-point: export with --trt --trt-precision int8, which quantises for it"
            )
        return model
    if strong and options.precision == "fp16":
        return convert_to_fp16(model, set(fp32_nodes(model)))
    return model


def check_target(trt: Any, builder: Any, options: EngineOptions, capability: str) -> None:
    """Refuse options this GPU and TensorRT cannot honour, before the long build."""
    major, minor = (int(p) for p in capability.split("."))
    if options.hardware_compatible and (major, minor) < AMPERE:
        raise EdgeVPRError(
            f"hardware-compatible engines need an Ampere or later GPU to build on; this one "
            f"has compute capability {capability}"
        )
    if options.version_compatible and not hasattr(trt.BuilderFlag, "VERSION_COMPATIBLE"):
        raise EdgeVPRError(f"TensorRT {trt.__version__} cannot build version-compatible engines")
    if options.dla_core is not None:
        cores = int(getattr(builder, "num_DLA_cores", 0))
        if options.dla_core >= cores:
            raise EdgeVPRError(
                f"DLA core {options.dla_core} was asked for, but this device has {cores} DLA "
                "cores (Jetson AGX Orin and Orin NX have them; TensorRT 10.8-11.4.0 dropped DLA)"
            )


def configure(trt: Any, config: Any, options: EngineOptions, strong: bool) -> None:
    """Builder settings common to every precision."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    config.builder_optimization_level = options.opt_level
    if hasattr(trt, "ProfilingVerbosity"):
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # for the layer report
    if options.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 convolutions miss the 1e-4 gate
    if options.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if not strong and options.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)


def _took_cache(config: Any, data: bytes) -> bool:
    """Whether TensorRT made a cache of ``data`` and took it: ``create_timing_cache`` gives
    None for bytes it cannot read (damaged, another version), which is a refusal too."""
    cache = config.create_timing_cache(data)
    return cache is not None and bool(config.set_timing_cache(cache, ignore_mismatch=False))


def attach_timing_cache(config: Any, path: Path | None) -> None:
    """Start from the cache file where TensorRT accepts it, else from an empty cache."""
    cached = path.read_bytes() if path is not None and path.is_file() else b""
    if _took_cache(config, cached):
        return
    if cached:
        print(
            f"TensorRT refused the timing cache {path} (made by another GPU or TensorRT); "
            "starting a new one",
            file=sys.stderr,
        )
        if _took_cache(config, b""):
            return
    raise EdgeVPRError("TensorRT refused an empty timing cache")


def timing_cache_bytes(config: Any) -> bytes | None:
    cache = config.get_timing_cache()
    return None if cache is None else bytes(cache.serialize())


def output_datatype(output: dict[str, Any]) -> str:
    """A layer output's data type as the inspector writes it: TensorRT 10's
    "Format/Datatype" ("Row major linear FP32"), or TensorRT 11's separate "Datatype" (and
    "Format") fields."""
    return " ".join(str(output.get(k, "")) for k in ("Format/Datatype", "Datatype", "Format"))


def on_dla(layer: dict[str, Any]) -> bool:
    """Whether the inspector places a layer on the DLA (a DLA subgraph is one layer whose
    type or name says so, e.g. "{ForeignNode[...]}" of type "DLA")."""
    kind = " ".join(str(layer.get(k, "")) for k in ("LayerType", "Origin", "TacticName"))
    return "DLA" in kind.upper() or str(layer.get("Name", "")).startswith("{ForeignNode")


def layer_report(trt: Any, log: TrtLog, blob: bytes, options: EngineOptions) -> dict[str, Any]:
    """The engine inspector's layer list, the layers whose outputs are FP32 and, for DLA
    builds, how many layers run on the DLA."""
    runtime = trt.Runtime(log.logger)
    if options.version_compatible:
        runtime.engine_host_code_allowed = True  # the engine carries its lean runtime
    engine = runtime.deserialize_cuda_engine(blob)
    if engine is None or not hasattr(engine, "create_engine_inspector"):
        return {"error": "the engine could not be inspected"}
    text = engine.create_engine_inspector().get_engine_information(
        trt.LayerInformationFormat.JSON
    )
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return {"inspector": text}
    layers = [lay for lay in info.get("Layers", []) if isinstance(lay, dict)]
    fp32 = [
        str(lay.get("Name"))
        for lay in layers
        if any("FP32" in output_datatype(o) for o in lay.get("Outputs", []))
    ]
    report = {"layers": len(layers), "fp32_layers": fp32, "inspector": info}
    if options.dla_core is not None:
        report["dla_layers"] = sum(on_dla(lay) for lay in layers)
    return report


def check_dla_placement(report: dict[str, Any], options: EngineOptions) -> None:
    """Refuse a DLA build where GPU fallback moved every layer to the GPU; say how many
    layers the DLA runs otherwise."""
    if options.dla_core is None or "dla_layers" not in report:
        return
    placed, total = report["dla_layers"], report["layers"]
    if not placed:
        raise EdgeVPRError(f"no layer of the engine runs on DLA core {options.dla_core} (GPU "
                           f"fallback took all {total}): build without --dla-core")  # fmt: skip
    print(f"DLA core {options.dla_core}: {placed} of {total} layers run on the DLA, the rest "
          "on the GPU", file=sys.stderr)  # fmt: skip


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    options: EngineOptions | None = None,
) -> EngineHeader:
    """Build the engine; write its header, the engine, the layer report and the timing cache
    (each atomically, the header first); returns the header."""
    options = options or EngineOptions()
    trt = import_tensorrt()
    gpu_name, capability = local_gpu()
    gpu = (gpu_name, f"{capability[0]}.{capability[1]}")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        needs = " (an INT8 engine is built from the INT8 model: add --int8)" * (
            options.precision == "int8"
        )
        raise EdgeVPRError(f"{onnx_path} does not exist{needs}")
    source = onnx.load(str(onnx_path))
    metadata = ModelMetadata.from_props({p.key: p.value for p in source.metadata_props})
    log = trt_log(trt)
    mark = log.mark()
    builder = trt.Builder(log.logger)
    check_target(trt, builder, options, gpu[1])
    strong = builds_strongly_typed(trt, options)
    model = typed_model(source, options, strong)
    network = builder.create_network(network_flags(trt, strong))
    parser = trt.OnnxParser(network, log.logger)
    if not parser.parse(model.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgeVPRError(f"TensorRT cannot parse {onnx_path}: {errors[:300]}")
    config = builder.create_builder_config()
    configure(trt, config, options, strong)
    keep = fp32_nodes(source)
    pinned = []
    if not strong and options.precision == "fp16":
        pinned = pin_fp32(trt, network, set(keep), fp32_tensors(source, keep))
    profile = builder.create_optimization_profile()
    height, width = metadata.preprocess.height, metadata.preprocess.width
    profile.set_shape(
        INPUT_NAME,
        *((n, 3, height, width) for n in (options.batch.min, options.batch.opt, options.batch.max)),
    )
    config.add_optimization_profile(profile)
    attach_timing_cache(config, options.timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeVPRError(
            f"TensorRT could not build an engine from {onnx_path}: {log.cause(mark)}"
        )
    blob = bytes(serialized)
    header = engine_header(
        trt_version=trt.__version__,
        gpu=gpu,
        options=options,
        onnx_sha256=file_sha256(onnx_path),
        engine_sha256=hashlib.sha256(blob).hexdigest(),
        metadata=replace(metadata, precision=options.precision),
        strongly_typed=strong,
        fp32_layers=pinned or keep,
    )
    report = layer_report(trt, log, blob, options)
    check_dla_placement(report, options)
    write_header(engine_path, header)
    write_bytes_atomic(engine_path, blob)
    layers_file = engine_path.with_name(engine_path.name + ".layers.json")
    write_bytes_atomic(layers_file, json.dumps(report, indent=1).encode())
    cache = timing_cache_bytes(config)
    if options.timing_cache is not None and cache is not None:
        write_bytes_atomic(options.timing_cache, cache)
    elif options.timing_cache is not None:
        print("TensorRT returned no timing cache; none was written", file=sys.stderr)
    return header
