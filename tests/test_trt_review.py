"""The TensorRT review's items that are not the builder's or the engine backend's control flow
(those are in test_export_tensorrt_fake.py and test_runtime_tensorrt_fake.py): symmetric
INT8 for TensorRT, an engine build that needs no torch, ONNX Runtime's TensorRT provider
running the graph's own precision, an all-zero descriptor refused, the FP32 nodes of
intermediate normalisations and GeM, Local Function layer tags, the INT8 search's 0 target,
and a provider that did not start named."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import tomllib
from onnx import TensorProto, helper, numpy_helper
from test_export_logic import DIM, tiny_descriptor_model

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.metadata import ModelMetadata
from edgevpr.core.preprocess import PreprocessSpec
from edgevpr.export.graph import fp32_nodes
from edgevpr.export.onnx_io import save_onnx_atomic, set_metadata
from edgevpr.export.quantize import Int8Options
from edgevpr.export.trt_pins import LayerView, tagged_nodes, ties_to

ROOT = Path(__file__).resolve().parents[1]


def image_model(layer_norm: bool = True) -> onnx.ModelProto:
    """3 x 8 x 8 images -> flatten -> the tiny descriptor model: an exported model's shape
    (without ``layer_norm``: a Relu where its LayerNorm was)."""
    model = tiny_descriptor_model()
    if not layer_norm:
        ln = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
        relu = helper.make_node("Relu", [ln.input[0]], list(ln.output), name="act")
        index = list(model.graph.node).index(ln)
        model.graph.node.remove(ln)
        model.graph.node.insert(index, relu)
    flat = helper.make_node("Flatten", ["images"], ["flat"], name="flatten", axis=1)
    w1 = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w1"))
    wide = np.concatenate([w1] * (3 * 8 * 8 // DIM), axis=0) / 12.0
    model.graph.initializer.append(numpy_helper.from_array(wide.astype(np.float32), "w_in"))
    model.graph.node[0].input[:] = ["flat", "w_in"]
    nodes = [flat, *model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.input[:]
    model.graph.input.append(helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                           ["batch", 3, 8, 8]))  # fmt: skip
    set_metadata(model, ModelMetadata(DIM, PreprocessSpec(8, 8), {"backbone": "x"}, "ab" * 32,
                                      "fp32", "0.1.0"))  # fmt: skip
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def image_onnx(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.onnx"
    save_onnx_atomic(image_model(), path)
    return path


# ------------------------------------------------------------------ 1. symmetric INT8
def test_int8_for_tensorrt_has_only_zero_zero_points(tmp_path: Path) -> None:
    from edgevpr.export.quantize import quantize_int8

    image_onnx = tmp_path / "relu.onnx"
    save_onnx_atomic(image_model(layer_norm=False), image_onnx)
    calibration = np.random.default_rng(0).random((16, 3, 8, 8), dtype=np.float32)
    options = Int8Options(activations="int8", symmetric_activations=True, search=False,
                          per_channel=False)
    quantize_int8(image_onnx, tmp_path / "sym.onnx", calibration, options)
    quantize_int8(image_onnx, tmp_path / "asym.onnx", calibration,
                  Int8Options(activations="int8", search=False, per_channel=False))  # fmt: skip
    from edgevpr.export.tensorrt_build import asymmetric_quantisation

    assert asymmetric_quantisation(onnx.load(str(tmp_path / "sym.onnx"))) is None
    assert asymmetric_quantisation(onnx.load(str(tmp_path / "asym.onnx"))) is not None
    with pytest.raises(EdgeVPRError, match="symmetric activations are signed"):
        Int8Options(symmetric_activations=True)


# ------------------------------------------------------------------ 2. engines without torch
def test_building_an_engine_from_onnx_needs_no_torch(image_onnx: Path, tmp_path: Path) -> None:
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
        "            raise ImportError('no torch here: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edgevpr.cli import main\n"
        f"main(['export', {str(image_onnx)!r}, '--trt', '--out', {str(tmp_path / 'out')!r}])\n"
    )
    done = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert "no torch here" not in done.stderr, done.stderr
    assert "TensorRT is not installed" in done.stderr  # it got as far as TensorRT itself
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]  # fmt: skip
    assert any(d.startswith("onnx") for d in extras["engine"])
    assert not any(d.startswith("torch") for d in extras["engine"])
    for name in ("trt-cu12", "trt-cu13"):
        assert any(d.startswith("onnx>") for d in extras[name])


# ------------------------------------------------------------------ 4. the TensorRT provider
def test_the_tensorrt_provider_never_turns_fp16_on_for_an_fp32_graph(monkeypatch, tmp_path):
    from edgevpr.runtime.backends import trt_provider

    monkeypatch.setattr(trt_provider, "cache_root", lambda: tmp_path)
    monkeypatch.setattr(trt_provider, "gpu_name", lambda: "gpu")
    options = trt_provider.provider_options("images", ["batch", 3, 8, 8], 8)
    assert options["trt_fp16_enable"] is False
    assert "trt_layer_norm_fp32_fallback" not in options
    assert options["trt_profile_max_shapes"] == "images:8x3x8x8"


def test_export_fp16_writes_and_gates_the_mixed_precision_graph(cli, image_onnx, tmp_path):
    out = tmp_path / "out"
    result = cli("export", image_onnx, "--fp16", "--out", out, "--parity-images", "16")
    assert result.code == 0, result.err
    mixed = onnx.load(str(out / "tiny_fp16.onnx"))
    types = {t.name: t.data_type for t in mixed.graph.initializer}
    assert types["w2__fp16"] == TensorProto.FLOAT16 and types["ln_scale"] == TensorProto.FLOAT
    props = {p.key: p.value for p in mixed.metadata_props}
    assert ModelMetadata.from_props(props).precision == "fp16"
    assert "ONNX FP16" in result.out and "pass" in result.out.split("ONNX FP16")[1].split("\n")[0]


class ZeroBackend:
    """A backend whose every descriptor is zero: FP16's x / inf."""

    min_batch, max_batch, device, description = 1, 8, "cuda", "a GPU provider"

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((len(batch), DIM), np.float32)


def test_an_all_zero_descriptor_is_refused(image_onnx: Path) -> None:
    from edgevpr.runtime.embedder import Embedder

    embedder = Embedder(image_onnx, providers=["cpu"])
    embedder._backend = ZeroBackend()  # type: ignore[assignment]
    with pytest.raises(EdgeVPRError, match="all-zero descriptor on a GPU provider"):
        embedder.embed_images([np.full((8, 8, 3), 100, np.uint8)])


def test_a_provider_that_did_not_start_is_named(image_onnx, monkeypatch, caplog) -> None:
    from edgevpr.runtime.backends import onnxruntime as ort_backend

    real = ort_backend.resolve_providers
    monkeypatch.setattr(ort_backend, "resolve_providers", lambda requested, available: [
        ("CUDAExecutionProvider", {}), *real(requested, available)])  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="edgevpr.onnxruntime"):
        backend = ort_backend.OnnxBackend(image_onnx)
    assert backend.provider == "CPUExecutionProvider"
    assert "CUDAExecutionProvider could not start" in caplog.text


# ------------------------------------------------------------------ 11. FP32 normalisations
def normalising_model() -> onnx.ModelProto:
    """x -> an intra-normalisation (ReduceL2, Clip, Div) -> GeM (Pow 3, ReduceMean, Pow 1/3)
    -> MatMul -> the final L2 normalisation."""
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axes"),
             numpy_helper.from_array(np.array(1e-12, np.float32), "eps"),
             numpy_helper.from_array(np.array(3.0, np.float32), "p"),
             numpy_helper.from_array(np.array(1 / 3, np.float32), "inv_p"),
             numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")]  # fmt: skip
    nodes = [
        helper.make_node("ReduceL2", ["x", "axes"], ["n1"], name="intra_norm", keepdims=1),
        helper.make_node("Clip", ["n1", "eps"], ["c1"], name="intra_clip"),
        helper.make_node("Div", ["x", "c1"], ["y"], name="intra_div"),
        helper.make_node("Pow", ["y", "p"], ["cubed"], name="gem_pow"),
        helper.make_node("ReduceMean", ["cubed", "axes"], ["mean"], name="gem_mean", keepdims=1),
        helper.make_node("Pow", ["mean", "inv_p"], ["gem"], name="gem_root"),
        helper.make_node("Mul", ["y", "gem"], ["z"], name="scale"),
        helper.make_node("MatMul", ["z", "w"], ["h"], name="mm"),
        helper.make_node("ReduceL2", ["h", "axes"], ["n2"], name="final_norm", keepdims=1),
        helper.make_node("Div", ["h", "n2"], ["out"], name="final_div"),
    ]
    graph = helper.make_graph(
        nodes, "norms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", 4])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_intermediate_normalisations_and_gem_stay_fp32() -> None:
    kept = set(fp32_nodes(normalising_model()))
    assert {"intra_norm", "intra_clip", "intra_div"} <= kept
    assert {"gem_pow", "gem_mean", "gem_root"} <= kept
    assert {"final_norm", "final_div"} <= kept
    assert "mm" not in kept and "scale" not in kept


# ------------------------------------------------------------------ 14. local functions
def test_layers_of_local_functions_tie_to_their_nodes() -> None:
    assert tagged_nodes("[ONNX Layer: node_div]") == {"node_div"}
    assert tagged_nodes("[ONNX Layer: node_div | Local Function: normalize]") == {"node_div"}
    inside = LayerView("op_7", "[ONNX Layer: node_div | Local Function: normalize]", (),
                       ("t",), True)  # fmt: skip
    assert ties_to(inside, {"node_div"}, set())
    assert not ties_to(inside, {"node_di"}, set())


# ------------------------------------------------------------------ 15. the INT8 search
def test_an_int8_target_of_zero_means_no_search(cli) -> None:
    assert Int8Options(target_cosine=0.0).target_cosine == 0.0
    help_text = cli("export", "--help").out
    assert "0: no search" in help_text
