"""Export logic that needs neither a trained model nor TensorRT: which nodes stay FP32, the
FP16 graph rewrite, batch ranges, the engine header, the gates and the parity data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgevpr.core.engine_header import read_engine_header
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.metadata import ModelMetadata
from edgevpr.core.preprocess import PreprocessSpec
from edgevpr.export.fp16 import convert_to_fp16
from edgevpr.export.graph import block_of, fp32_nodes
from edgevpr.export.parity import DEFAULT_GATES, Gate, ParityData, compare, load_parity_data
from edgevpr.export.tensorrt_build import (
    BatchRange,
    EngineOptions,
    engine_header,
    parse_batch_range,
    write_header,
)
from edgevpr.export.trt_pins import LayerView, layers_to_pin, ties_to

DIM = 16


def tiny_descriptor_model() -> onnx.ModelProto:
    """images (N x DIM) -> MatMul -> LayerNorm -> MatMul -> L2 normalisation, laid out as the
    dynamo exporter writes F.normalize (ReduceL2, Clip, Expand to the input's shape, Div)."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((DIM, DIM)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.ones(DIM, np.float32), "ln_scale"),
        numpy_helper.from_array(np.zeros(DIM, np.float32), "ln_bias"),
        numpy_helper.from_array(rng.standard_normal((DIM, DIM)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
        numpy_helper.from_array(np.array(1e-12, np.float32), "eps"),
    ]
    nodes = [
        helper.make_node("MatMul", ["images", "w1"], ["h1"], name="mm1"),
        helper.make_node(
            "LayerNormalization", ["h1", "ln_scale", "ln_bias"], ["ln"], name="ln0", axis=-1
        ),
        helper.make_node("MatMul", ["ln", "w2"], ["h2"], name="mm2"),
        helper.make_node("ReduceL2", ["h2", "axes"], ["norm"], name="l2", keepdims=1),
        helper.make_node("Clip", ["norm", "eps"], ["clamped"], name="clamp"),
        helper.make_node("Shape", ["h2"], ["shape"], name="shape"),
        helper.make_node("Expand", ["clamped", "shape"], ["expanded"], name="expand"),
        helper.make_node("Div", ["h2", "expanded"], ["descriptors"], name="div"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", DIM])],
        [helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["batch", DIM])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model


def test_fp32_nodes_are_layernorm_and_the_l2_normalisation_tail() -> None:
    kept = fp32_nodes(tiny_descriptor_model())
    assert set(kept) == {"ln0", "l2", "clamp", "expand", "div", "shape"}
    assert "mm1" not in kept and "mm2" not in kept


def test_block_of_reads_the_exporters_module_scopes() -> None:
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="node_Conv_7")
    node.metadata_props.add(
        key="pkg.torch.onnx.name_scopes",
        value="['', 'backbone', 'backbone.model.blocks.1', 'backbone.model.blocks.1.bn1', 'x']",
    )
    assert block_of(node) == "backbone.model.blocks.1"
    mixer = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    mixer.metadata_props.add(
        key="pkg.torch.onnx.name_scopes", value="['', 'aggregator', 'aggregator.mix.2.mix.1']"
    )
    assert block_of(mixer) == "aggregator.mix.2"
    assert block_of(helper.make_node("Relu", ["x"], ["y"], name="plain")) == "plain"


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})[0]


def test_fp16_conversion_keeps_io_float_and_the_kept_nodes_fp32() -> None:
    model = tiny_descriptor_model()
    half = convert_to_fp16(model)
    types = {
        i.name: i.type.tensor_type.elem_type
        for i in onnx.shape_inference.infer_shapes(half).graph.value_info
    }
    inits = {t.name: t.data_type for t in half.graph.initializer}
    nodes = {n.name: n for n in half.graph.node}
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    # MatMuls compute in FP16 (weights stored FP16), LayerNorm and the division in FP32.
    assert all(types.get(i, inits.get(i)) == TensorProto.FLOAT16 for i in nodes["mm1"].input)
    assert all(types.get(i, inits.get(i)) == TensorProto.FLOAT for i in nodes["ln0"].input)
    assert all(types.get(i, inits.get(i)) == TensorProto.FLOAT for i in nodes["div"].input)
    assert inits["eps"] == TensorProto.FLOAT  # 1e-12 would be 0 in FP16
    x = np.random.default_rng(1).standard_normal((4, DIM)).astype(np.float32)
    reference, converted = run(model, x), run(half, x)
    cosine = np.sum(reference * converted, axis=1)
    assert cosine.min() > 0.999
    assert np.allclose(np.linalg.norm(converted, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1:8:32", BatchRange(1, 8, 32)),
        ("4", BatchRange(4, 4, 4)),
        (" 2:2:16 ", BatchRange(2, 2, 16)),
    ],
)
def test_batch_range_parses(text: str, expected: BatchRange) -> None:
    assert parse_batch_range(text) == expected


@pytest.mark.parametrize("text", ["8:1:32", "a:b:c", "1:2", "0:1:2", "1:2:3:4", "1:8:99999"])
def test_bad_batch_ranges_are_one_line_errors(text: str) -> None:
    with pytest.raises(EdgeVPRError, match="batch range"):
        parse_batch_range(text)


def view(name: str, inputs: tuple[str, ...], outputs: tuple[str, ...], meta: str = "",
         floats: bool = True) -> LayerView:  # fmt: skip
    return LayerView(name, meta, inputs, outputs, floats)


def test_layers_tie_to_fp32_nodes_exactly() -> None:
    nodes, tensors = {"node_layer_norm", "node_div"}, {"layer_norm", "descriptors"}
    assert ties_to(view("node_layer_norm", (), ("x",)), nodes, tensors)
    assert ties_to(view("anything", (), ("descriptors",)), nodes, tensors)
    assert ties_to(view("op_12", (), ("t",), "[ONNX Layer: node_div]"), nodes, tensors)
    assert not ties_to(view("node_div_1", (), ("t",)), nodes, tensors)  # not a prefix match
    assert not ties_to(view("node_MatMul_3", (), ("m",), "[ONNX Layer: node_MatMul_3]"), nodes,
                       tensors)  # fmt: skip


def test_unnamed_helpers_are_pinned_only_where_they_feed_pinned_layers() -> None:
    layers = [
        view("mm", ("x",), ("h",)),
        view("(Unnamed Layer* 1) [ElementWise]", ("h",), ("sq",)),  # x*x of ReduceL2
        view("(Unnamed Layer* 2) [Reduce]", ("sq",), ("sum",)),
        view("l2", ("sum",), ("norm",), "[ONNX Layer: l2]"),
        view("(Unnamed Layer* 3) [Shuffle]", ("h",), ("h2",)),  # feeds the MatMul too
        view("(Unnamed Layer* 4) [Shape]", ("h",), ("dims",), floats=False),
        view("div", ("h2", "norm", "dims"), ("out",)),
        view("mm2", ("h2",), ("y",)),
    ]
    pinned = layers_to_pin(layers, {"l2", "div"}, {"norm", "out"})
    assert pinned == [1, 2, 3, 6]


def metadata() -> ModelMetadata:
    return ModelMetadata(
        descriptor_dim=512,
        preprocess=PreprocessSpec(128, 128),
        model_config={"backbone": "efficientnet_lite0", "aggregator": "mixvpr"},
        checkpoint_sha256="ab" * 32,
        precision="fp16",
        edgevpr_version="0.1.0",
    )


def test_engine_header_is_what_the_runtime_reads(tmp_path) -> None:
    engine = tmp_path / "model_fp16.engine"
    header = engine_header(
        trt_version="10.13.3.9",
        gpu=("NVIDIA Jetson Orin", "8.7"),
        options=EngineOptions(batch=BatchRange(1, 4, 16)),
        onnx_sha256="cd" * 32,
        engine_sha256="ef" * 32,
        metadata=metadata(),
        strongly_typed=False,
        fp32_layers=["node_layer_norm"],
    )
    path = write_header(engine, header)
    assert path.name == "model_fp16.engine.json"
    raw = json.loads(path.read_text())
    for key in ("trt_version", "gpu_name", "compute_capability", "precision", "onnx_sha256"):
        assert raw[key] == getattr(header, key)
    assert (raw["batch_min"], raw["batch_opt"], raw["batch_max"]) == (1, 4, 16)
    read = read_engine_header(engine)
    assert read.model_metadata() == metadata()
    assert read.extra["fp32_layers"] == ["node_layer_norm"]
    assert read.extra["input_shape"] == [3, 128, 128]


def test_build_without_tensorrt_says_how_to_get_it(tmp_path) -> None:
    pytest.importorskip("edgevpr.runtime")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here")
    from edgevpr.export.tensorrt_build import build_engine

    with pytest.raises(EdgeVPRError, match=r"pip install 'edgevpr\[trt-cu12\]'.*JetPack") as info:
        build_engine(tmp_path / "missing.onnx", tmp_path / "m.engine")
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def descriptors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 32)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def route_data(n_db: int) -> ParityData:
    images = [np.zeros((4, 4, 3), np.uint8)] * (2 * n_db)
    positives = [np.array([i]) for i in range(n_db)]  # query i sees database i
    return ParityData("test", images, [str(i) for i in range(2 * n_db)], n_db, positives)


def test_identical_descriptors_pass_every_gate() -> None:
    reference = descriptors(20, 0)
    metrics = compare(reference, reference.copy(), route_data(10))
    assert metrics.cosine_min == pytest.approx(1.0)
    assert metrics.max_abs == 0.0
    assert metrics.top1_agreement == 100.0 and metrics.top5_overlap == 100.0
    for gate in DEFAULT_GATES.values():
        assert gate.failures(metrics) == []


def test_a_perturbed_artifact_fails_and_the_failure_names_the_numbers() -> None:
    reference = descriptors(20, 0)
    noisy = reference + 0.05 * descriptors(20, 1)
    metrics = compare(reference, noisy, route_data(10))
    failures = DEFAULT_GATES["fp32"].failures(metrics)
    assert any(f.startswith("cosine min 0.99") for f in failures)
    assert any(f.startswith("max abs error") for f in failures)


def test_recall_gate_is_one_sided() -> None:
    data = route_data(10)
    # Queries are copies of their own database entry: the reference finds all of them.
    db = descriptors(10, 0)
    reference = np.concatenate([db, db])
    worse = reference.copy()
    worse[10:12] = worse[[2, 3]]  # two queries now match the wrong place
    gate = Gate(min_cosine=-1.0, max_recall1_drop=1.0)
    lost = compare(reference, worse, data)
    assert lost.recall_reference[1] == 100.0 and lost.recall_artifact[1] == 80.0
    assert gate.failures(lost) == [
        "Recall@1 80.0 vs reference 100.0 (at most 1 points lower allowed)"
    ]
    assert gate.failures(compare(worse, reference, data)) == []  # better is not a failure


def write_jpeg(path, value: int) -> None:
    cv2.imwrite(str(path), np.full((24, 32, 3), value, np.uint8))


def test_parity_data_from_a_layout_and_from_a_plain_folder(tmp_path) -> None:
    split = tmp_path / "set" / "images" / "test"
    for folder in ("database", "queries"):
        (split / folder).mkdir(parents=True)
        for i in range(10):
            write_jpeg(split / folder / f"@0@{i * 50}@@@@@{i:04d}@@@@@@@@.jpg", i * 20)
    data = load_parity_data(tmp_path / "set", max_images=8)
    assert (data.database, data.queries) == (4, 4)
    assert data.has_retrieval and all(len(p) == 1 for p in data.positives or [])
    assert len(data.map_images()) == 4
    plain = tmp_path / "plain"
    plain.mkdir()
    for i in range(5):
        write_jpeg(plain / f"img{i}.jpg", i)
    flat = load_parity_data(plain, max_images=3)
    assert len(flat.images) == 3 and not flat.has_retrieval
    with pytest.raises(EdgeVPRError, match="no images"):
        load_parity_data(tmp_path / "set" / "images", max_images=8)


class TableQuantizer:
    """Stands in for ONNX Runtime: the cosine of a quantisation is a base value plus a gain
    for every block kept float, so the search's choices can be checked exactly."""

    def __init__(self, gains: dict[str, float], base: float, target: float) -> None:
        from edgevpr.export.quantize import Int8Options

        self.gains, self.base = gains, base
        self.options = Int8Options(target_cosine=target, max_float_blocks=4)
        self.calls: list[list[str]] = []

    def quantize(self, exclude: list[str]) -> tuple[Path, float]:
        self.calls.append(exclude)
        blocks = {name.split("/")[0] for name in exclude}
        return Path(f"q{len(self.calls)}.onnx"), self.base + sum(
            self.gains.get(b, 0) for b in blocks
        )


def scoped_model(blocks: list[str]) -> onnx.ModelProto:
    nodes = []
    for i, block in enumerate(blocks):
        node = helper.make_node("MatMul", [f"t{i}", "w"], [f"t{i + 1}"], name=f"{block}/mm")
        node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=f"['', '{block}']")
        nodes.append(node)
    graph = helper.make_graph(
        nodes,
        "scoped",
        [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info(f"t{len(blocks)}", TensorProto.FLOAT, [2, 2])],
        [numpy_helper.from_array(np.eye(2, dtype=np.float32), "w")],
    )
    return helper.make_model(graph)


def test_int8_search_keeps_the_most_helpful_blocks_float_until_the_target() -> None:
    from edgevpr.export.quantize import search_float_blocks

    blocks = ["backbone.model.b0", "backbone.model.b1", "backbone.model.b2", "backbone.model.b3"]
    gains = dict(zip(blocks, [0.004, 0.0005, 0.002, 0.001], strict=True))
    quantizer = TableQuantizer(gains, base=0.985, target=0.9905)
    trials: list[dict] = []
    path, cos, chosen = search_float_blocks(
        quantizer, scoped_model(blocks), [], Path("q0.onnx"), 0.985, trials, lambda _m: None
    )
    # one at a time measures each block; then b0 alone (0.989) misses, b0 + b2 (0.991) hits
    assert chosen == ["backbone.model.b0", "backbone.model.b2"]
    assert cos == pytest.approx(0.991)
    assert [t["float_blocks"] for t in trials] == [["backbone.model.b0"], chosen]
    assert path == Path(f"q{len(quantizer.calls)}.onnx")


def test_int8_search_returns_its_best_try_when_the_target_is_out_of_reach() -> None:
    from edgevpr.export.quantize import search_float_blocks

    blocks = ["m.b0", "m.b1"]
    quantizer = TableQuantizer({"m.b0": 0.001, "m.b1": 0.002}, base=0.9, target=0.99)
    trials = [{"float_blocks": [], "cosine_min": 0.9}]
    _, cos, chosen = search_float_blocks(
        quantizer, scoped_model(blocks), [], Path("q0.onnx"), 0.9, trials, lambda _m: None
    )
    assert chosen == ["m.b1", "m.b0"] and cos == pytest.approx(0.903)
