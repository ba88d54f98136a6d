"""build_engine's control flow against a stand-in ``tensorrt`` module (TensorRT cannot be
installed here) that behaves like the real one where it matters: helper layers of a node are
unnamed, STRONGLY_TYPED is 1 in TensorRT 10 and 0 in 11, a timing cache can be refused or
missing, a failed build logs its cause. TensorRT 10 and 11 build strongly typed from the
FP16 graph; weakly typed builds (no strong typing, DLA on 10) pin exact layers and their
helpers. Real builds run where TensorRT is installed
(tests/test_export_parity.py::test_trt_engine_passes_its_gate)."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto
from test_export_logic import tiny_descriptor_model

from edgevpr.core.engine_header import check_engine_bytes, read_engine_header
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.files import write_bytes_atomic
from edgevpr.core.metadata import ModelMetadata
from edgevpr.core.preprocess import PreprocessSpec
from edgevpr.export import tensorrt_build
from edgevpr.export.onnx_io import save_onnx_atomic, set_metadata
from edgevpr.export.tensorrt_build import BatchRange, EngineOptions, build_engine
from edgevpr.runtime.backends import tensorrt as tensorrt_backend


class Tensor:
    def __init__(self, name: str, dtype: str = "float32") -> None:
        self.name, self.dtype = name, dtype


class Layer:
    """A layer as onnx-tensorrt leaves it: the node's last layer carries its name, metadata
    and output names; helper layers are unnamed, untagged, with generated output names."""

    count = 0

    def __init__(self, name: str | None, inputs: list[Tensor], outputs: list[Tensor],
                 kind: str) -> None:  # fmt: skip
        Layer.count += 1
        self.name = name or f"(Unnamed Layer* {Layer.count}) [{kind}]"
        self.metadata = f"[ONNX Layer: {name}]" if name else ""
        self.inputs, self.outputs = inputs, outputs
        self.num_inputs, self.num_outputs = len(inputs), len(outputs)
        self.precision = None
        self.output_types: dict[int, str] = {}

    def get_input(self, i: int) -> Tensor:
        return self.inputs[i]

    def get_output(self, i: int) -> Tensor:
        return self.outputs[i]

    def set_output_type(self, i: int, dtype: str) -> None:
        self.output_types[i] = dtype


def layers_of(node: onnx.NodeProto) -> list[Layer]:
    """ReduceL2 becomes x*x (ElementWise), a sum (Reduce) and a square root (the named Unary)."""
    inputs = [Tensor(i) for i in node.input if i]
    dtype = "int64" if node.op_type == "Shape" else "float32"
    if node.op_type != "ReduceL2":
        return [Layer(node.name, inputs, [Tensor(o, dtype) for o in node.output], node.op_type)]
    square = Layer(None, inputs[:1], [], "ElementWise")
    square.outputs, square.num_outputs = [Tensor(square.name + "_output")], 1
    summed = Layer(None, square.outputs, [], "Reduce")
    summed.outputs, summed.num_outputs = [Tensor(summed.name + "_output")], 1
    root = Layer(node.name, summed.outputs, [Tensor(o) for o in node.output], "Unary")
    return [square, summed, root]


class Network:
    def __init__(self, flags: int) -> None:
        self.flags, self.layers, self.model = flags, [], None

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_layer(self, i: int) -> Layer:
        return self.layers[i]


class Config:
    """Like TensorRT's: set_timing_cache says whether it took the cache (False for one made
    elsewhere), get_timing_cache may give None."""

    def __init__(self, cache_returned: bool) -> None:
        self.flags: set[str] = {"TF32"}
        self.profiles: list = []
        self.cache = None
        self.cache_returned = cache_returned
        self.workspace = None
        self.builder_optimization_level = 3
        self.default_device_type, self.DLA_core = "GPU", -1
        self.hardware_compatibility_level = "NONE"
        self.profiling_verbosity = "LAYER_NAMES_ONLY"

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def clear_flag(self, flag: str) -> None:
        self.flags.discard(flag)

    def set_memory_pool_limit(self, _pool: str, size: int) -> None:
        self.workspace = size

    def add_optimization_profile(self, profile: dict) -> None:
        self.profiles.append(profile)

    def create_timing_cache(self, data: bytes) -> bytes | None:
        return None if data.startswith(b"corrupt") else data  # TensorRT: None, no exception

    def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
        if cache.startswith(b"foreign"):
            return False
        self.cache = cache
        return True

    def get_timing_cache(self) -> types.SimpleNamespace | None:
        if not self.cache_returned:
            return None
        return types.SimpleNamespace(serialize=lambda: self.cache + b"+timed")


class Profile(dict):
    def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
        self[name] = (lo, opt, hi)


def fake_tensorrt(version: str, built: dict, **behaviour: object) -> types.ModuleType:
    """A stand-in for the ``tensorrt`` module of ``version``: 8.x without strong typing,
    10.x with STRONGLY_TYPED = 1 beside EXPLICIT_BATCH = 0, 11.x with STRONGLY_TYPED = 0 and
    no FP16 flag."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.float32, trt.float16 = "float32", "float16"
    major = int(version.split(".")[0])

    class ILogger:
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO = 0, 1, 2, 3

        def __init__(self) -> None:
            pass

    class Builder:
        num_DLA_cores = int(behaviour.get("dla_cores", 0))

        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> Network:
            built["network"] = Network(flags)
            return built["network"]

        def create_builder_config(self) -> Config:
            built["config"] = Config(bool(behaviour.get("cache_returned", True)))
            return built["config"]

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            if behaviour.get("fails"):
                self.logger.log(ILogger.Severity.ERROR, "out of workspace for the MatMul")
                return None
            dynamic = any(lo != hi for lo, _, hi in config.profiles[0].values())
            if config.default_device_type == "DLA" and dynamic:
                self.logger.log(ILogger.Severity.ERROR, "DLA does not support dynamic shapes")
                return None
            return b"ENGINE"

    class OnnxParser:
        errors: list[str] = []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

        def __init__(self, network: Network, logger: ILogger) -> None:
            self.network = network

        def parse(self, data: bytes) -> bool:
            model = onnx.load_from_string(data)
            zeros = {t.name: t for t in model.graph.initializer}
            for node in model.graph.node:
                if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
                    if onnx.numpy_helper.to_array(zeros[node.input[2]]).any():
                        self.errors = ["TensorRT only supports symmetric quantization"]
                        return False
            self.network.model = model
            self.network.layers = [lay for n in model.graph.node for lay in layers_of(n)]
            return True

    class Inspector:
        """TensorRT 10 writes "Format/Datatype"; 11 splits it into "Format" and "Datatype".
        On a DLA build the first ``dla_layers`` layers run as one DLA foreign node."""

        def get_engine_information(self, _format: str) -> str:
            network = built["network"]
            layers = []
            for lay in network.layers:
                fp32 = lay.precision == "float32"
                output = ({"Format/Datatype": "Row major linear FP32" if fp32
                           else "Row major linear FP16 format"} if major < 11 else
                          {"Format": "Row major linear", "Datatype": "FP32" if fp32
                           else "Half"})  # fmt: skip
                layers.append({"Name": lay.name, "LayerType": "CaskConvolution",
                               "Outputs": [output]})  # fmt: skip
            dla = int(behaviour.get("dla_layers", 0))
            if dla:
                layers = [{"Name": "{ForeignNode[mm1...div]}", "LayerType": "DLA",
                           "Outputs": [{}]}] * dla + layers[dla:]  # fmt: skip
            return json.dumps({"Layers": layers})

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            pass

        def deserialize_cuda_engine(self, blob: bytes) -> types.SimpleNamespace:
            return types.SimpleNamespace(create_engine_inspector=Inspector)

    trt.ILogger, trt.Builder, trt.OnnxParser, trt.Runtime = ILogger, Builder, OnnxParser, Runtime
    flags = {"EXPLICIT_BATCH": 0} if major < 11 else {}
    if major >= 10 and not behaviour.get("flag_removed"):
        flags["STRONGLY_TYPED"] = 1 if major == 10 else 0
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**flags)
    names = ["FP16", "OBEY_PRECISION_CONSTRAINTS"] if major < 11 else []
    names += ["TF32", "GPU_FALLBACK", "VERSION_COMPATIBLE"]
    trt.BuilderFlag = types.SimpleNamespace(**{f: f for f in names})
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.ProfilingVerbosity = types.SimpleNamespace(DETAILED="DETAILED")
    trt.LayerInformationFormat = types.SimpleNamespace(JSON="JSON")
    trt.DeviceType = types.SimpleNamespace(DLA="DLA", GPU="GPU")
    trt.HardwareCompatibilityLevel = types.SimpleNamespace(AMPERE_PLUS="AMPERE_PLUS")
    return trt


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    model = tiny_descriptor_model()
    set_metadata(
        model,
        ModelMetadata(16, PreprocessSpec(32, 32), {"backbone": "x"}, "ab" * 32, "fp32", "0.1.0"),
    )
    path = tmp_path / "tiny.onnx"
    save_onnx_atomic(model, path)
    return path


def build_with(
    version: str,
    onnx_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    options: EngineOptions | None = None,
    gpu: tuple[str, tuple[int, int]] = ("NVIDIA Jetson AGX Orin", (8, 7)),
    **behaviour: object,
) -> dict:
    built: dict = {}
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(version, built, **behaviour))
    monkeypatch.setattr(tensorrt_build, "local_gpu", lambda: gpu)
    monkeypatch.setattr(tensorrt_backend, "_PROCESS_LOG", None)  # one per (fake) process
    cache = onnx_path.parent / "timing.cache"
    if not cache.exists():
        cache.write_bytes(b"old")
    engine = onnx_path.parent / "tiny_fp16.engine"
    options = options or EngineOptions(batch=BatchRange(1, 4, 16))
    built["header"] = build_engine(onnx_path, engine, replace(options, timing_cache=cache))
    built["engine"], built["cache"] = engine, cache
    return built


def pinned_names(network: Network) -> set[str]:
    return {layer.name for layer in network.layers if layer.precision == "float32"}


def test_tensorrt_10_builds_strongly_typed_from_the_fp16_graph(tiny_onnx, monkeypatch) -> None:
    built = build_with("10.3.0.26", tiny_onnx, monkeypatch)
    network, config = built["network"], built["config"]
    assert network.flags == 1 << 1  # STRONGLY_TYPED is 1 in TensorRT 10
    assert "FP16" not in config.flags and not pinned_names(network)  # the graph's types decide
    inits = {t.name: t.data_type for t in network.model.graph.initializer}
    assert inits["w1__fp16"] == TensorProto.FLOAT16 and inits["ln_scale"] == TensorProto.FLOAT
    assert config.profiles == [{"images": ((1, 3, 32, 32), (4, 3, 32, 32), (16, 3, 32, 32))}]
    assert config.workspace == 2048 << 20 and config.builder_optimization_level == 3
    assert built["cache"].read_bytes() == b"old+timed"  # read, then written back
    assert built["engine"].read_bytes() == b"ENGINE"
    header = read_engine_header(built["engine"])
    assert (header.trt_version, header.compute_capability) == ("10.3.0.26", "8.7")
    assert header.precision == "fp16" and header.model_metadata().precision == "fp16"
    assert header.extra["strongly_typed"] is True
    assert header.engine_sha256 == hashlib.sha256(b"ENGINE").hexdigest()


def test_tensorrt_11_uses_its_own_strongly_typed_flag_value(tiny_onnx: Path, monkeypatch) -> None:
    built = build_with("11.4.0.106", tiny_onnx, monkeypatch)
    assert built["network"].flags == 1 << 0  # STRONGLY_TYPED is 0 in TensorRT 11
    header = read_engine_header(built["engine"])
    assert header.extra["strongly_typed"] is True and header.batch_max == 16


def rename_node(path: Path, old: str, new: str) -> None:
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.name == old:
            node.name = new
    onnx.save(model, str(path))


def test_weakly_typed_pins_exact_layers_and_unnamed_helpers(tiny_onnx: Path, monkeypatch) -> None:
    rename_node(tiny_onnx, "mm2", "ln0_1")  # a MatMul whose name starts with an FP32 node's
    built = build_with("8.6.1.6", tiny_onnx, monkeypatch)  # no strong typing there
    network, config = built["network"], built["config"]
    assert network.flags == 1 << 0  # EXPLICIT_BATCH before TensorRT 10
    assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= config.flags
    pinned = pinned_names(network)
    helpers = {lay.name for lay in network.layers if lay.name.startswith("(Unnamed")}
    assert len(helpers) == 2 and helpers <= pinned  # the x*x and the sum of ReduceL2
    assert pinned == {"ln0", "l2", "clamp", "expand", "div"} | helpers
    assert "ln0_1" not in pinned and "mm1" not in pinned
    shape = next(layer for layer in network.layers if layer.name == "shape")
    assert shape.precision is None and shape.output_types == {}  # integer: left alone
    header = read_engine_header(built["engine"])
    assert header.extra["strongly_typed"] is False and set(header.extra["fp32_layers"]) == pinned
    report = json.loads(built["engine"].with_name("tiny_fp16.engine.layers.json").read_text())
    assert set(report["fp32_layers"]) == pinned and report["layers"] == len(network.layers)


def test_dla_on_tensorrt_10_takes_the_fp16_flag_with_gpu_fallback(tiny_onnx, monkeypatch) -> None:
    options = EngineOptions(dla_core=1, workspace_mb=512, opt_level=5, batch=BatchRange(4, 4, 4))
    built = build_with("10.3.0.26", tiny_onnx, monkeypatch, options, dla_cores=2, dla_layers=3)
    config = built["config"]
    assert {"FP16", "GPU_FALLBACK"} <= config.flags
    assert (config.default_device_type, config.DLA_core) == ("DLA", 1)
    assert config.workspace == 512 << 20 and config.builder_optimization_level == 5
    assert read_engine_header(built["engine"]).extra["dla_core"] == 1
    with pytest.raises(EdgeVPRError, match="this device has 0 DLA cores"):
        build_with("10.3.0.26", tiny_onnx, monkeypatch, options)
    with pytest.raises(EdgeVPRError, match="not FP32"):
        EngineOptions(dla_core=0, precision="fp32")


def test_compatibility_options_reach_the_builder_and_the_header(tiny_onnx, monkeypatch) -> None:
    options = EngineOptions(hardware_compatible=True, version_compatible=True)
    built = build_with("10.3.0.26", tiny_onnx, monkeypatch, options)
    config = built["config"]
    assert config.hardware_compatibility_level == "AMPERE_PLUS"
    assert "VERSION_COMPATIBLE" in config.flags
    header = read_engine_header(built["engine"])
    assert header.hardware_compatibility == "ampere_plus" and header.version_compatible
    with pytest.raises(EdgeVPRError, match="Ampere or later GPU to build on"):
        build_with("10.3.0.26", tiny_onnx, monkeypatch, options, gpu=("T4", (7, 5)))


def test_a_refused_timing_cache_is_replaced_and_a_missing_one_not_written(
    tiny_onnx: Path, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tiny_onnx.parent / "timing.cache").write_bytes(b"foreign GPU")
    built = build_with("10.3.0.26", tiny_onnx, monkeypatch)
    assert "refused the timing cache" in capsys.readouterr().err
    assert built["cache"].read_bytes() == b"+timed"  # a fresh cache, written back
    built["cache"].write_bytes(b"kept")
    built = build_with("10.3.0.26", tiny_onnx, monkeypatch, cache_returned=False)
    assert built["cache"].read_bytes() == b"kept" and built["engine"].read_bytes() == b"ENGINE"
    assert read_engine_header(built["engine"]).engine_sha256  # engine and header both written


def test_a_failed_build_names_its_cause_and_writes_nothing(tiny_onnx: Path, monkeypatch) -> None:
    with pytest.raises(EdgeVPRError, match="out of workspace for the MatMul"):
        build_with("10.3.0.26", tiny_onnx, monkeypatch, fails=True)
    assert not (tiny_onnx.parent / "tiny_fp16.engine").exists()
    assert not (tiny_onnx.parent / "tiny_fp16.engine.json").exists()


def test_an_engine_left_from_before_does_not_pass_for_the_new_header(
    tiny_onnx: Path, monkeypatch
) -> None:
    engine = tiny_onnx.parent / "tiny_fp16.engine"
    engine.write_bytes(b"OLD ENGINE")

    def engine_write_fails(path: Path, data: bytes) -> None:
        if path == engine:
            raise OSError("disk full")
        write_bytes_atomic(path, data)

    monkeypatch.setattr(tensorrt_build, "write_bytes_atomic", engine_write_fails)
    with pytest.raises(OSError):
        build_with("10.3.0.26", tiny_onnx, monkeypatch)
    header = read_engine_header(engine)  # the header went first
    with pytest.raises(EdgeVPRError, match="not the engine its header describes"):
        check_engine_bytes(header, engine.read_bytes(), "engine")
    check_engine_bytes(header, b"ENGINE", "engine")


def test_int8_engines_need_a_signed_qdq_model(tiny_onnx: Path, monkeypatch) -> None:
    with pytest.raises(EdgeVPRError, match="Q/DQ INT8 ONNX model"):
        build_with("10.3.0.26", tiny_onnx, monkeypatch, EngineOptions(precision="int8"))


def test_dla_takes_a_fixed_batch_and_must_run_layers_on_the_dla(tiny_onnx, monkeypatch,
                                                               capsys) -> None:  # fmt: skip
    with pytest.raises(EdgeVPRError, match="DLA takes no dynamic dimensions"):
        EngineOptions(dla_core=0, batch=BatchRange(1, 8, 32))
    # the stand-in refuses it as TensorRT does, had it got that far
    built: dict = {}
    trt = fake_tensorrt("10.3.0.26", built)
    logged: list[str] = []
    logger = types.SimpleNamespace(log=lambda severity, message: logged.append(message))
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    config.default_device_type = "DLA"
    config.add_optimization_profile({"images": ((1, 3, 32, 32), (8, 3, 32, 32), (32, 3, 32, 32))})
    assert builder.build_serialized_network(builder.create_network(0), config) is None
    assert logged == ["DLA does not support dynamic shapes"]
    fixed = EngineOptions(dla_core=0, batch=BatchRange(8, 8, 8))
    with pytest.raises(EdgeVPRError, match="no layer of the engine runs on DLA core 0"):
        build_with("10.3.0.26", tiny_onnx, monkeypatch, fixed, dla_cores=2, dla_layers=0)
    assert not (tiny_onnx.parent / "tiny_fp16.engine").exists()
    build_with("10.3.0.26", tiny_onnx, monkeypatch, fixed, dla_cores=2, dla_layers=2)
    assert "2 of " in capsys.readouterr().err


def test_tensorrt_11_inspector_fields_are_read(tiny_onnx, monkeypatch) -> None:
    built = build_with("11.4.0.106", tiny_onnx, monkeypatch)
    report = json.loads(built["engine"].with_name("tiny_fp16.engine.layers.json").read_text())
    assert report["layers"] == len(built["network"].layers)
    from edgevpr.export.tensorrt_build import output_datatype

    assert "FP32" in output_datatype({"Format": "Row major linear", "Datatype": "FP32"})
    assert "FP32" in output_datatype({"Format/Datatype": "Row major linear FP32"})
    assert "FP32" not in output_datatype({"Format": "Row major linear", "Datatype": "Half"})


def test_tensorrt_11_without_the_deprecated_flag_stays_strongly_typed(tiny_onnx, monkeypatch):
    built = build_with("11.9.0.1", tiny_onnx, monkeypatch, flag_removed=True)
    assert built["network"].flags == 0  # strongly typed by default, no flag to set
    assert "FP16" not in built["config"].flags  # (11 has no FP16 flag at all)
    assert read_engine_header(built["engine"]).extra["strongly_typed"] is True


def test_an_unreadable_timing_cache_is_a_refused_one(tiny_onnx, monkeypatch, capsys) -> None:
    (tiny_onnx.parent / "timing.cache").write_bytes(b"corrupt bytes")
    built = build_with("10.3.0.26", tiny_onnx, monkeypatch)
    assert "refused the timing cache" in capsys.readouterr().err
    assert built["cache"].read_bytes() == b"+timed"


def qdq_model(zero_point: int, dtype: int = TensorProto.INT8) -> onnx.ModelProto:
    """The tiny model with one Q/DQ pair on its input, quantised around ``zero_point``."""
    model = tiny_descriptor_model()
    first = model.graph.node[0]
    scale = onnx.helper.make_tensor("q_scale", TensorProto.FLOAT, [], [0.05])
    zero = onnx.helper.make_tensor("q_zero", dtype, [], [zero_point])
    model.graph.initializer.extend([scale, zero])
    quant = onnx.helper.make_node("QuantizeLinear", [first.input[0], "q_scale", "q_zero"],
                                  ["q_out"], name="q")  # fmt: skip
    dequant = onnx.helper.make_node("DequantizeLinear", ["q_out", "q_scale", "q_zero"],
                                    ["dq_out"], name="dq")  # fmt: skip
    first.input[0] = "dq_out"
    nodes = [quant, dequant, *model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    set_metadata(model, ModelMetadata(16, PreprocessSpec(32, 32), {"backbone": "x"}, "ab" * 32,
                                      "int8", "0.1.0"))  # fmt: skip
    return model


def test_int8_with_a_non_zero_zero_point_is_refused_before_building(tmp_path, monkeypatch):
    options = EngineOptions(precision="int8")
    asymmetric = tmp_path / "asym.onnx"
    save_onnx_atomic(qdq_model(3), asymmetric)
    with pytest.raises(EdgeVPRError, match="symmetric quantisation only, and q has a non-zero"):
        build_with("10.3.0.26", asymmetric, monkeypatch, options)
    assert not list(tmp_path.glob("*.engine*"))
    symmetric = tmp_path / "sym.onnx"
    save_onnx_atomic(qdq_model(0), symmetric)
    built = build_with("10.3.0.26", symmetric, monkeypatch, options)
    assert built["engine"].read_bytes() == b"ENGINE"
    unsigned = tmp_path / "u8.onnx"
    save_onnx_atomic(qdq_model(128, TensorProto.UINT8), unsigned)
    with pytest.raises(EdgeVPRError, match="signed int8 Q/DQ only"):
        build_with("10.3.0.26", unsigned, monkeypatch, options)
