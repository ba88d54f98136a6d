"""The ONNX FLOP counter against hand calculations and the spec's MixVPR R50 figure."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgevpr.bench.flops import count_flops  # noqa: E402


def tiny_graph() -> onnx.ModelProto:
    """Conv 3->4 (3x3, pad 1) -> grouped Conv 4->4 (groups 2) -> [N,4,64] @ [64,16] ->
    [N,64] Gemm [64,10], on 8x8 inputs with a symbolic batch."""

    def init(name: str, shape: tuple[int, ...], dtype=np.float32) -> onnx.TensorProto:
        return numpy_helper.from_array(np.zeros(shape, dtype=dtype), name)

    nodes = [
        helper.make_node("Conv", ["x", "backbone.conv1.weight"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node(
            "Conv", ["c1", "backbone.conv2.weight"], ["c2"], pads=[1, 1, 1, 1], group=2
        ),
        helper.make_node("Reshape", ["c2", "shape_rows"], ["rows"]),
        helper.make_node("Transpose", ["head.mix.weight"], ["mix_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["rows", "mix_t"], ["mixed"]),
        helper.make_node("Reshape", ["mixed", "shape_flat"], ["flat"]),
        helper.make_node("Gemm", ["flat", "head.fc.weight"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        initializer=[
            init("backbone.conv1.weight", (4, 3, 3, 3)),
            init("backbone.conv2.weight", (4, 2, 3, 3)),
            init("head.mix.weight", (16, 64)),
            init("head.fc.weight", (64, 10)),
            numpy_helper.from_array(np.array([0, 4, 64], dtype=np.int64), "shape_rows"),
            numpy_helper.from_array(np.array([0, 64], dtype=np.int64), "shape_flat"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


# 2 FLOP per multiply-accumulate, by hand:
CONV1 = 2 * 4 * 8 * 8 * (3 * 3 * 3)  # out channels x out pixels x (in channels x kernel)
CONV2 = 2 * 4 * 8 * 8 * (2 * 3 * 3)  # groups of 2: each output sees 2 input channels
MATMUL = 2 * 4 * 16 * 64  # [4,64] @ [64,16]
GEMM = 2 * 10 * 64


def test_hand_counted_graph() -> None:
    count = count_flops(tiny_graph())
    assert count.uncounted == []
    assert count.total == CONV1 + CONV2 + MATMUL + GEMM
    assert count.by_op == {"Conv": CONV1 + CONV2, "MatMul": MATMUL, "Gemm": GEMM}
    # Parts come from the weights' names, also through the Transpose in front of MatMul.
    assert count.by_part == {"backbone": CONV1 + CONV2, "head": MATMUL + GEMM}


def test_batch_scales_total_not_per_image() -> None:
    one = count_flops(tiny_graph(), batch=1)
    three = count_flops(tiny_graph(), batch=3)
    assert three.total == 3 * one.total
    assert three.per_image == one.per_image


def test_counting_leaves_the_callers_model_alone(tmp_path) -> None:
    model = tiny_graph()
    before = model.SerializeToString()
    count_flops(model, batch=5)
    assert model.SerializeToString() == before
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    assert count_flops(path).total == CONV1 + CONV2 + MATMUL + GEMM


def test_unknown_shapes_are_reported_not_guessed() -> None:
    model = tiny_graph()
    # An input of unknown rank and size: the first Conv's output shape cannot be inferred.
    del model.graph.input[0].type.tensor_type.shape.dim[:]
    model.graph.input[0].type.tensor_type.ClearField("shape")
    count = count_flops(model)
    assert count.uncounted  # said, not silently zero


@pytest.mark.slow
def test_mixvpr_resnet50_320_matches_the_spec() -> None:
    """16.84 GFLOP per image (backbone 13.38, aggregator 3.46). ~15 s to export."""
    pytest.importorskip("torch")
    from edgevpr.export.onnx_export import trace_to_onnx
    from edgevpr.model import build_model

    model = build_model("mixvpr_resnet50_4096").eval()
    count = count_flops(trace_to_onnx(model, 320, 320, 18))
    assert count.uncounted == []
    assert count.per_image / 1e9 == pytest.approx(16.84, rel=0.01)
    assert count.by_part["backbone"] / 1e9 == pytest.approx(13.38, rel=0.01)
    assert count.by_part["aggregator"] / 1e9 == pytest.approx(3.46, rel=0.01)
