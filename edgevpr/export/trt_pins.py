"""FP32 pins for weakly typed TensorRT networks (TensorRT before strong typing, and DLA builds
on TensorRT 10): which layers must keep FP32 when the FP16 flag lets the builder choose.

The ONNX parser names a layer after its node, tags it in the layer's metadata
(``[ONNX Layer: name]``, or ``[ONNX Layer: name | Local Function: f]`` inside an ONNX local
function) and names the node's outputs as in the graph; any of the three ties
a layer to a node, matched exactly (a prefix would tie node ``x`` to an unrelated ``x_1``).
Some nodes become several layers, and the helpers are left unnamed: ReduceSumSquare and
ReduceL2, the L2 normalisation, square their input in an unnamed ElementWise layer before the
named Reduce. So an unnamed float layer whose outputs feed only pinned layers is pinned too
(walked back to a fixpoint). Layers with integer or shape outputs are never given a precision
(TensorRT warns, and their types are not FP16 to begin with).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

UNNAMED = "(Unnamed Layer"


@dataclass(frozen=True)
class LayerView:
    """What the pinning reads of one TensorRT layer."""

    name: str
    metadata: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    float_outputs: bool  # every output is FP32 or FP16


ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^|\]]*?)\s*(?:\|[^\]]*)?\]")


def tagged_nodes(metadata: str) -> set[str]:
    """The ONNX node names a layer's metadata tags: ``[ONNX Layer: n]``, and
    ``[ONNX Layer: n | Local Function: f]`` for nodes inside an ONNX local function."""
    return {match.group(1) for match in ONNX_LAYER.finditer(metadata)}


def ties_to(layer: LayerView, nodes: set[str], tensors: set[str]) -> bool:
    """Whether ``layer`` was built from one of the ONNX ``nodes`` (whose outputs are
    ``tensors``)."""
    if layer.name in nodes or any(t in tensors for t in layer.outputs):
        return True
    return bool(tagged_nodes(layer.metadata) & nodes)


def layers_to_pin(layers: list[LayerView], nodes: set[str], tensors: set[str]) -> list[int]:
    """Indices of the layers to keep in FP32, in network order."""
    pinned = {
        i for i, lay in enumerate(layers) if lay.float_outputs and ties_to(lay, nodes, tensors)
    }
    consumers: dict[str, list[int]] = {}
    for i, layer in enumerate(layers):
        for tensor in layer.inputs:
            consumers.setdefault(tensor, []).append(i)
    changed = True
    while changed:
        changed = False
        for i, layer in enumerate(layers):
            if i in pinned or not layer.float_outputs or not layer.name.startswith(UNNAMED):
                continue
            fed = [c for t in layer.outputs for c in consumers.get(t, [])]
            if fed and all(c in pinned for c in fed):
                pinned.add(i)
                changed = True
    return sorted(pinned)


def layer_views(trt: Any, network: Any) -> list[LayerView]:
    """The network's layers as ``LayerView``s."""
    float_types = (trt.float32, trt.float16)
    views = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        ins = [layer.get_input(j) for j in range(layer.num_inputs)]
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        outs = [t for t in outs if t is not None]
        views.append(
            LayerView(
                name=layer.name,
                metadata=getattr(layer, "metadata", "") or "",
                inputs=tuple(t.name for t in ins if t is not None),
                outputs=tuple(t.name for t in outs),
                float_outputs=bool(outs) and all(t.dtype in float_types for t in outs),
            )
        )
    return views


def pin_fp32(trt: Any, network: Any, nodes: set[str], tensors: set[str]) -> list[str]:
    """Pin the layers built from ``nodes`` (and their unnamed helpers) to FP32; returns
    their names."""
    views = layer_views(trt, network)
    names = []
    for i in layers_to_pin(views, nodes, tensors):
        layer = network.get_layer(i)
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        names.append(views[i].name)
    return names
