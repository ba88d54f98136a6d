"""FP32 ONNX -> mixed FP16 ONNX for strongly typed TensorRT (11 builds no other kind): the
precision lives in the graph's types, so FP16 means rewriting the graph.

Every float tensor computed by an FP16 node becomes FLOAT16; the nodes of
``graph.fp32_nodes`` (LayerNorm, the final L2 normalisation) keep FLOAT, and Cast nodes are
inserted where the two meet. Float initializers read by FP16 nodes are stored as FP16 (an
FP32 copy is kept where FP32 nodes read them too). The graph's input and output stay FLOAT,
so the runtime feeds and reads the same arrays as for the FP32 model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgevpr.export.graph import consumers, fp32_nodes

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
# Inputs that the operator defines as float32 whatever the data type (index per op).
FIXED_FLOAT_INPUTS = {"Resize": {1, 2}}
# Ops whose float inputs carry no arithmetic (only their shape is read).
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})
FP16_MAX = float(np.finfo(np.float16).max)


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor of the graph, after ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for info in [*graph.input, *graph.output, *graph.value_info]:
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    return types


class Converter:
    def __init__(self, model: onnx.ModelProto, keep_fp32: set[str]) -> None:
        self.model = model
        self.keep = keep_fp32
        self.types = tensor_types(model)
        self.initializers = {t.name: t for t in model.graph.initializer}
        # tensor name -> its element type in the converted graph
        self.now: dict[str, int] = {}
        self.casts: dict[tuple[str, int], str] = {}
        self.half_weights: dict[str, str] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.new_initializers: list[onnx.TensorProto] = []

    def is_float(self, name: str) -> bool:
        return self.types.get(name) == FLOAT

    def current(self, name: str) -> int:
        return self.now.get(name, self.types.get(name, 0))

    def as_type(self, name: str, dtype: int) -> str:
        """``name`` converted to ``dtype``: an FP16 initializer copy or a Cast node."""
        if self.current(name) == dtype:
            return name
        if name in self.initializers and dtype == HALF:
            if name not in self.half_weights:
                array = numpy_helper.to_array(self.initializers[name])
                half = np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16)
                new = f"{name}__fp16"
                self.new_initializers.append(numpy_helper.from_array(half, new))
                self.half_weights[name] = new
                self.now[new] = HALF
            return self.half_weights[name]
        key = (name, dtype)
        if key not in self.casts:
            out = f"{name}__to_{'fp16' if dtype == HALF else 'fp32'}"
            self.nodes.append(helper.make_node("Cast", [name], [out], name=f"cast_{out}", to=dtype))
            self.casts[key] = out
            self.now[out] = dtype
        return self.casts[key]

    def convert_node(self, node: onnx.NodeProto) -> None:
        dtype = FLOAT if node.name in self.keep else HALF
        fixed = FIXED_FLOAT_INPUTS.get(node.op_type, set())
        new = onnx.NodeProto()
        new.CopyFrom(node)
        if node.op_type not in SHAPE_ONLY_OPS:
            for i, name in enumerate(node.input):
                if name and self.is_float(name):
                    new.input[i] = self.as_type(name, FLOAT if i in fixed else dtype)
        if dtype == HALF:
            retype_attributes(new)
        for name in node.output:
            if name and self.is_float(name):
                self.now[name] = dtype
        self.nodes.append(new)

    def run(self) -> onnx.ModelProto:
        graph = self.model.graph
        for node in graph.node:
            self.convert_node(node)
        outputs = []
        for out in graph.output:
            if self.is_float(out.name) and self.current(out.name) == HALF:
                # keep_io_types: rename the FP16 tensor and cast back under the output's name
                inner = f"{out.name}__fp16_out"
                for node in self.nodes:
                    for i, name in enumerate(node.output):
                        if name == out.name:
                            node.output[i] = inner
                    for i, name in enumerate(node.input):
                        if name == out.name:
                            node.input[i] = inner
                self.nodes.append(
                    helper.make_node("Cast", [inner], [out.name], name=f"cast_{inner}", to=FLOAT)
                )
            outputs.append(out)
        converted = onnx.ModelProto()
        converted.CopyFrom(self.model)
        del converted.graph.node[:]
        converted.graph.node.extend(self.nodes)
        converted.graph.initializer.extend(self.new_initializers)
        used = {name for node in converted.graph.node for name in node.input}
        keep = [t for t in converted.graph.initializer if t.name in used]
        del converted.graph.initializer[:]
        converted.graph.initializer.extend(keep)
        del converted.graph.value_info[:]
        return converted


def retype_attributes(node: onnx.NodeProto) -> None:
    """Float-typed attributes of an FP16 node: Cast targets and constant values."""
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
            attr.i = HALF
        elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT:
            array = numpy_helper.to_array(attr.t)
            half = np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16)
            attr.t.CopyFrom(numpy_helper.from_array(half, attr.t.name))


def constants_only_for(model: onnx.ModelProto, keep: set[str]) -> set[str]:
    """Constant nodes read only by FP32 nodes stay FP32 (a clamp's 1e-12 is 0 in FP16)."""
    readers = consumers(model.graph)
    return {
        node.name
        for node in model.graph.node
        if node.op_type in ("Constant", "ConstantOfShape")
        and all(r.name in keep for out in node.output for r in readers.get(out, []))
    }


def convert_to_fp16(model: onnx.ModelProto, keep_fp32: set[str] | None = None) -> onnx.ModelProto:
    """The mixed-precision copy of ``model``; ``keep_fp32`` defaults to ``fp32_nodes``."""
    keep = set(fp32_nodes(model)) if keep_fp32 is None else set(keep_fp32)
    keep |= constants_only_for(model, keep)
    converted = Converter(model, keep).run()
    onnx.checker.check_model(converted)
    return converted
