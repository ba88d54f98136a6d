"""build_engine's control flow against a stand-in ``tensorrt`` module (TensorRT cannot be
installed here): TensorRT 10 gets the FP16 flag and FP32 pinned on LayerNorm and the L2
normalisation; TensorRT 11 gets a strongly typed network parsed from the FP16 graph; both
get the batch profile, the timing cache and the header. Real builds run where TensorRT
is installed (tests/test_export_parity.py::test_trt_engine_passes_its_gate)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto
from test_export_logic import tiny_descriptor_model

from edgevpr.export import tensorrt_build
from edgevpr.export.onnx_io import save_onnx_atomic, set_metadata
from edgevpr.export.tensorrt_build import BatchRange, build_engine
from edgevpr.runtime.metadata import ModelMetadata
from edgevpr.runtime.preprocess import PreprocessSpec
from edgevpr.runtime.tensorrt_backend import read_engine_header


class Tensor:
    def __init__(self, name: str, dtype: str = "float32") -> None:
        self.name, self.dtype = name, dtype


class Layer:
    def __init__(self, node: onnx.NodeProto) -> None:
        self.name = node.name
        self.metadata = f"[ONNX Layer: {node.name}]"
        self.outputs = [
            Tensor(o, "int64" if node.op_type == "Shape" else "float32") for o in node.output
        ]
        self.num_outputs = len(self.outputs)
        self.precision = None
        self.output_types: dict[int, str] = {}

    def get_output(self, i: int) -> Tensor:
        return self.outputs[i]

    def set_output_type(self, i: int, dtype: str) -> None:
        self.output_types[i] = dtype


class Network:
    def __init__(self, flags: int) -> None:
        self.flags, self.layers, self.model = flags, [], None

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_layer(self, i: int) -> Layer:
        return self.layers[i]


class Config:
    def __init__(self) -> None:
        self.flags: set[str] = {"TF32"}
        self.profiles: list = []
        self.cache = None

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def clear_flag(self, flag: str) -> None:
        self.flags.discard(flag)

    def set_memory_pool_limit(self, _pool: str, _size: int) -> None:
        pass

    def add_optimization_profile(self, profile: dict) -> None:
        self.profiles.append(profile)

    def create_timing_cache(self, data: bytes) -> bytes:
        return data

    def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> None:
        self.cache = cache

    def get_timing_cache(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(serialize=lambda: self.cache + b"+timed")


class Profile(dict):
    def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
        self[name] = (lo, opt, hi)


def fake_tensorrt(version: str, built: dict) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.float32, trt.float16 = "float32", "float16"

    class ILogger:
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING = 0, 1, 2

        def __init__(self) -> None:
            pass

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> Network:
            built["network"] = Network(flags)
            return built["network"]

        def create_builder_config(self) -> Config:
            built["config"] = Config()
            return built["config"]

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            return b"ENGINE"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Network, logger: ILogger) -> None:
            self.network = network

        def parse(self, data: bytes) -> bool:
            model = onnx.load_from_string(data)
            self.network.model = model
            self.network.layers = [Layer(n) for n in model.graph.node]
            return True

    trt.ILogger, trt.Builder, trt.OnnxParser = ILogger, Builder, OnnxParser
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
    flags = ["FP16", "OBEY_PRECISION_CONSTRAINTS"] if version.startswith("10.") else []
    trt.BuilderFlag = types.SimpleNamespace(**{f: f for f in [*flags, "TF32"]})
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
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


def build_with(version: str, onnx_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    built: dict = {}
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(version, built))
    monkeypatch.setattr(tensorrt_build, "gpu_identity", lambda: ("NVIDIA Jetson AGX Orin", "8.7"))
    cache = onnx_path.parent / "timing.cache"
    cache.write_bytes(b"old")
    engine = onnx_path.parent / "tiny_fp16.engine"
    built["header"] = build_engine(onnx_path, engine, "fp16", BatchRange(1, 4, 16), cache)
    built["engine"], built["cache"] = engine, cache
    return built


def test_tensorrt_10_pins_layernorm_and_l2_to_fp32(tiny_onnx: Path, monkeypatch) -> None:
    built = build_with("10.13.3.9", tiny_onnx, monkeypatch)
    network, config = built["network"], built["config"]
    assert network.flags == 0  # weakly typed; explicit batch is implicit in TensorRT 10
    assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= config.flags
    pinned = {layer.name for layer in network.layers if layer.precision == "float32"}
    assert pinned == {"ln0", "l2", "clamp", "shape", "expand", "div"}
    shape = next(layer for layer in network.layers if layer.name == "shape")
    assert shape.output_types == {}  # an int64 shape tensor keeps its type
    assert next(lay for lay in network.layers if lay.name == "mm1").precision is None
    assert config.profiles == [{"images": ((1, 3, 32, 32), (4, 3, 32, 32), (16, 3, 32, 32))}]
    assert built["cache"].read_bytes() == b"old+timed"  # read, then written back
    assert built["engine"].read_bytes() == b"ENGINE"
    header = read_engine_header(built["engine"])
    assert (header.trt_version, header.compute_capability) == ("10.13.3.9", "8.7")
    assert header.precision == "fp16" and header.model_metadata().precision == "fp16"
    assert header.extra["strongly_typed"] is False


def test_tensorrt_11_builds_strongly_typed_from_the_fp16_graph(
    tiny_onnx: Path, monkeypatch
) -> None:
    built = build_with("11.4.0.106", tiny_onnx, monkeypatch)
    network, config = built["network"], built["config"]
    assert network.flags == 1 << 1  # STRONGLY_TYPED
    assert "FP16" not in config.flags
    assert all(layer.precision is None for layer in network.layers)  # not allowed there
    inits = {t.name: t.data_type for t in network.model.graph.initializer}
    assert inits["w1__fp16"] == TensorProto.FLOAT16 and inits["ln_scale"] == TensorProto.FLOAT
    header = read_engine_header(built["engine"])
    assert header.extra["strongly_typed"] is True and header.batch_max == 16
