"""Count the work in an ONNX graph: 2 FLOP per multiply-accumulate of its Conv, MatMul and
Gemm nodes (and their INT8 forms), from the shapes ONNX shape inference gives at a fixed batch.

Element-wise work (normalisation, activations, the final L2 norm) is left out, as in the FLOP
figures papers quote; for MixVPR it is well under 1% of the total. Needs the ``onnx`` package.
"""

from __future__ import annotations

import ast
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

# op type -> index of the weight input whose shape gives the kernel (input channels x kernel).
CONV_WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}
# op type -> index of the left operand A (..., M, K).
MATMUL_A_INPUT = {"MatMul": 0, "MatMulInteger": 0, "QLinearMatMul": 0, "FusedMatMul": 0}
MATMUL_B_INPUT = {"MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3, "FusedMatMul": 1}
# Nodes a weight passes through on its way from an initializer to the op that uses it.
WEIGHT_PASSTHROUGH = {
    "Transpose", "Reshape", "Cast", "DequantizeLinear", "Identity", "Squeeze", "Unsqueeze",
}


@dataclass
class FlopCount:
    """FLOP for one forward pass of ``batch`` images."""

    total: int = 0
    batch: int = 1
    by_part: dict[str, int] = field(default_factory=dict)
    by_op: dict[str, int] = field(default_factory=dict)
    uncounted: list[str] = field(default_factory=list)

    @property
    def per_image(self) -> float:
        return self.total / self.batch

    def to_dict(self) -> dict[str, Any]:
        return {
            "gflop_per_image": self.per_image / 1e9,
            "by_part_gflop_per_image": {k: v / self.batch / 1e9 for k, v in self.by_part.items()},
            "by_op_gflop_per_image": {k: v / self.batch / 1e9 for k, v in self.by_op.items()},
            "uncounted_nodes": list(self.uncounted),
        }


def fix_batch(model: Any, batch: int) -> None:
    """Replace the symbolic batch axis of the graph inputs by ``batch`` everywhere it appears,
    and drop stale intermediate shapes so inference recomputes them."""
    symbols = set()
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            symbols.add(dims[0].dim_param)
        if dims and not dims[0].dim_param and not dims[0].dim_value:
            dims[0].dim_value = batch
    for value in [*model.graph.input, *model.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_value = batch
    del model.graph.value_info[:]


def known_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    graph = model.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    for init in graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes


def scope_part(node: Any) -> str | None:
    """The top-level module a node came from, from the torch exporter's node metadata."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            named = [s for s in scopes if s]
            return named[0].split(".")[0] if named else None
    return None


def weight_part(name: str, producers: dict[str, Any], initializers: set[str]) -> str | None:
    """The model part ('backbone', 'aggregator', ...) of the initializer behind ``name``."""
    for _ in range(8):
        if name in initializers:
            return name.split(".")[0] if "." in name else None
        node = producers.get(name)
        if node is None or node.op_type not in WEIGHT_PASSTHROUGH or not node.input:
            return None
        name = node.input[0]
    return None


def node_flops(node: Any, shapes: dict[str, tuple[int, ...]]) -> tuple[int, str] | None:
    """(FLOP, name of the weight input) for a counted node; None when shapes are unknown."""
    op = node.op_type
    out = shapes.get(node.output[0]) if node.output else None
    if op in CONV_WEIGHT_INPUT:
        weight_name = node.input[CONV_WEIGHT_INPUT[op]]
        weight = shapes.get(weight_name)
        if op == "ConvTranspose":
            data = shapes.get(node.input[0])
            if data is None or weight is None:
                return None
            return 2 * math.prod(data) * math.prod(weight[1:]), weight_name
        if out is None or weight is None:
            return None
        return 2 * math.prod(out) * math.prod(weight[1:]), weight_name
    if op in MATMUL_A_INPUT:
        a = shapes.get(node.input[MATMUL_A_INPUT[op]])
        if out is None or a is None:
            return None
        return 2 * math.prod(out) * a[-1], node.input[MATMUL_B_INPUT[op]]
    if op == "Gemm":
        a = shapes.get(node.input[0])
        if out is None or a is None or len(a) != 2:
            return None
        trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
        k = a[0] if trans_a else a[1]
        return 2 * math.prod(out) * k, node.input[1]
    return None


COUNTED_OPS = {*CONV_WEIGHT_INPUT, *MATMUL_A_INPUT, "Gemm"}


def count_flops(model: str | os.PathLike[str] | Any, batch: int = 1) -> FlopCount:
    """FLOP of one forward pass at ``batch`` for an ONNX file or ``onnx.ModelProto``."""
    import onnx

    proto = onnx.load(os.fspath(model)) if isinstance(model, (str, os.PathLike)) else model
    proto = onnx.ModelProto.FromString(proto.SerializeToString())  # never touch the caller's
    fix_batch(proto, batch)
    proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    shapes = known_shapes(proto)
    producers = {out: node for node in proto.graph.node for out in node.output}
    initializers = {init.name for init in proto.graph.initializer}
    count = FlopCount(batch=batch)
    by_part: dict[str, int] = defaultdict(int)
    by_op: dict[str, int] = defaultdict(int)
    for node in proto.graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        found = node_flops(node, shapes)
        if found is None:
            count.uncounted.append(node.name or node.op_type)
            continue
        flop, weight_name = found
        count.total += flop
        by_op[node.op_type] += flop
        part = scope_part(node) or weight_part(weight_name, producers, initializers)
        by_part[part or "other"] += flop
    count.by_part = dict(by_part)
    count.by_op = dict(by_op)
    return count
