"""Reading an exported ONNX graph: which nodes must keep FP32 arithmetic in every reduced-
precision artifact (INT8 for CPUs, FP16 for TensorRT), and which module each node came from.

The rule is the same for INT8 and FP16: LayerNormalization nodes (their mean and
variance overflow or lose precision in FP16 and quantise badly); the final L2
normalisation - every node downstream of the tensor that the last ``ReduceL2`` reads, up to
the output (the descriptor's norm is a sum of D squares, which FP16 cannot hold for
D = 4096); every intermediate L2 normalisation (NetVLAD's and SALAD's per-cluster ones: the
norm and the nodes that divide by it); and generalised-mean pooling (GeM: x^p, its mean,
and the 1/p root, which overflow FP16 for p around 3 on activations above ~40).
"""

from __future__ import annotations

import ast

import onnx

ALWAYS_FP32_OPS = frozenset({"LayerNormalization"})
NORM_OPS = frozenset({"ReduceL2", "LpNormalization"})
COMPUTE_OPS = frozenset({"Conv", "MatMul", "Gemm"})
NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                readers.setdefault(name, []).append(node)
    return readers


def descendants(graph: onnx.GraphProto, tensor: str) -> list[onnx.NodeProto]:
    """Every node that depends, directly or not, on ``tensor``."""
    readers = consumers(graph)
    seen: dict[str, onnx.NodeProto] = {}
    frontier = [tensor]
    while frontier:
        for node in readers.get(frontier.pop(), []):
            if node.name not in seen:
                seen[node.name] = node
                frontier.extend(o for o in node.output if o)
    return list(seen.values())


def l2_normalisation_nodes(graph: onnx.GraphProto) -> list[str]:
    """The final L2 normalisation: every node that reads the tensor the last norm reduces,
    and everything after it (shape helpers, clamp, division)."""
    norms = [node for node in graph.node if node.op_type in NORM_OPS]
    if not norms:
        return []
    return [node.name for node in descendants(graph, norms[-1].input[0])]


DIVIDES = frozenset({"Div", "Reciprocal"})
POOLS = frozenset({"ReduceMean", "ReduceSum", "GlobalAveragePool", "AveragePool"})
NORM_TO_DIVISION = 4  # nodes between a norm and its division (clip, expand, unsqueeze)


def intermediate_normalisations(graph: onnx.GraphProto) -> list[str]:
    """Every L2 norm before the last one, with the nodes from it to the division by it."""
    readers = consumers(graph)
    keep: list[str] = []
    for norm in [n for n in graph.node if n.op_type in NORM_OPS][:-1]:
        keep.append(norm.name)
        frontier = [(o, 0) for o in norm.output]
        while frontier:
            tensor, depth = frontier.pop()
            for node in readers.get(tensor, []):
                keep.append(node.name)
                if node.op_type not in DIVIDES and depth < NORM_TO_DIVISION:
                    frontier.extend((o, depth + 1) for o in node.output)
    return keep


def generalised_means(graph: onnx.GraphProto) -> list[str]:
    """GeM pooling: each Pow, and the pooling that reads a Pow's output."""
    readers = consumers(graph)
    keep = []
    for node in graph.node:
        if node.op_type == "Pow":
            keep.append(node.name)
            keep += [r.name for o in node.output for r in readers.get(o, [])
                     if r.op_type in POOLS]  # fmt: skip
    return keep


def fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """Node names that keep FP32 arithmetic in FP16 and INT8 artifacts, in graph order."""
    graph = model.graph
    keep = {node.name for node in graph.node if node.op_type in ALWAYS_FP32_OPS}
    keep.update(l2_normalisation_nodes(graph))
    keep.update(intermediate_normalisations(graph))
    keep.update(generalised_means(graph))
    return [node.name for node in graph.node if node.name in keep]


def module_of(node: onnx.NodeProto) -> str:
    """The PyTorch module a node was traced from (e.g. ``backbone.model.blocks.1``), read
    from the exporter's name scopes; the node name where the exporter left none."""
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                break
            modules = [s for s in scopes if isinstance(s, str) and "." in s]
            if modules:
                return modules[-1]
            break
    return node.name


def block_of(node: onnx.NodeProto, depth: int = 3) -> str:
    """The enclosing block of a node, ``depth`` names deep plus a trailing index
    (``backbone.model.blocks.1.conv_dw`` -> ``backbone.model.blocks.1``,
    ``aggregator.mix.2.mix.1`` -> ``aggregator.mix.2``): the unit in which sensitivity to
    quantisation is measured and reported."""
    parts = module_of(node).split(".")
    # Keep a trailing index with its container: blocks.1, layer3.4, mix.2.
    cut = depth + 1 if len(parts) > depth and parts[depth].isdigit() else depth
    return ".".join(parts[:cut])

