"""Close to the hardware: the OpenVINO backend (FP32, BF16, INT8, chosen by name, never
automatically), its rows in the benchmark's backend table, the default projection of wide
descriptors that `index build` makes (and the benchmark's default spec measures), and a
report written from contended rows refused."""

from __future__ import annotations

import numpy as np
import pytest

from edgevpr.core.errors import EdgeVPRError
from edgevpr.runtime.backends import (
    OPENVINO,
    OPENVINO_BF16,
    OPENVINO_RUNTIME,
    PROVIDERS,
    runtime_of,
)
from edgevpr.runtime.placemap.build.defaults import (
    FIT_ROWS_PER_DIM,
    PROJECTED_DIMS,
    default_projection,
)


# ------------------------------------------------------------------ OpenVINO
def test_openvino_is_chosen_by_name_only() -> None:
    assert runtime_of(["openvino"]) == OPENVINO_RUNTIME
    assert runtime_of([("ov-bf16", {})]) == OPENVINO_RUNTIME
    assert runtime_of(["cpu"]) != OPENVINO_RUNTIME and runtime_of(None) != OPENVINO_RUNTIME
    assert not any(p.automatic for p in PROVIDERS if p.runtime == OPENVINO_RUNTIME)


def test_openvino_runs_the_model_in_fp32_bf16_and_int8(embedder, exported, tmp_path) -> None:
    pytest.importorskip("openvino")
    from edgevpr.runtime.embedder import Embedder

    images = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), np.uint8) for i in range(6)]
    reference = embedder.embed_images(images)
    with Embedder(exported["onnx"], providers=["openvino"]) as fp32:
        assert fp32.backend.startswith("openvino") and "float32" in fp32.backend
        same = fp32.embed_images(images)
    assert np.abs(same - reference).max() < 1e-4
    with Embedder(exported["onnx"], providers=[OPENVINO_BF16]) as bf16:
        assert "bfloat16" in bf16.backend or "float32" in bf16.backend  # CPU without BF16
        half = bf16.embed_images(images)
    assert (half * reference).sum(axis=1).min() > 0.98
    with pytest.raises(EdgeVPRError, match="no GPU9 device"):
        Embedder(exported["onnx"], providers=[(OPENVINO, {"device": "GPU9"})])


def test_openvino_missing_is_one_line(exported, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino":
            raise ImportError("no openvino")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    from edgevpr.runtime.embedder import Embedder

    with pytest.raises(EdgeVPRError, match=r"pip install 'edgevpr\[openvino\]'"):
        Embedder(exported["onnx"], providers=["openvino"])


def test_the_benchmark_has_openvino_and_pytorch_cpu_rows() -> None:
    from edgevpr.bench.backends import BACKENDS, ONNX_FP32, ONNX_INT8

    assert BACKENDS["openvino-bf16"].providers == (OPENVINO_BF16,)
    assert BACKENDS["openvino-int8"].artifact == ONNX_INT8
    assert BACKENDS["openvino"].artifact == ONNX_FP32
    assert BACKENDS["pytorch-bf16"].precision == "bf16"
    assert BACKENDS["pytorch-nhwc"].torch_mode == "channels-last"
    assert BACKENDS["ort-trt"].precision == "fp32"  # no trt_fp16_enable on an FP32 graph


# ------------------------------------------------------------------ the default map
def test_wide_descriptors_are_projected_by_default_where_the_map_can_fit_it() -> None:
    enough = FIT_ROWS_PER_DIM * PROJECTED_DIMS
    assert default_projection(4096, enough) == PROJECTED_DIMS
    assert default_projection(4096, enough - 1) is None  # too few places to fit 256 dims
    assert default_projection(512, 1_000_000) is None


def test_index_build_applies_the_rule_and_pca_0_turns_it_off(cli, tmp_path) -> None:
    """A 1024-d model (the rule's smallest) on a folder of enough places."""
    from edgevpr.runtime.placemap import PlaceMap
    from edgevpr.runtime.placemap.build.resumable import MapOptions, build_from_checkpoint

    class Places:
        folder = tmp_path
        embedded = FIT_ROWS_PER_DIM * PROJECTED_DIMS

        def places(self):
            from edgevpr.runtime.placemap.place_record import PlaceRecord

            rng = np.random.default_rng(0)
            for start in range(0, self.embedded, 1024):
                rows = rng.standard_normal((min(1024, self.embedded - start), 1024))
                rows /= np.linalg.norm(rows, axis=1, keepdims=True)
                yield rows.astype(np.float32), [PlaceRecord(east=float(i), north=0.0)
                                                for i in range(start, start + len(rows))]

        def remove(self) -> None:
            pass

    class Model:
        descriptor_dim, fingerprint = 1024, "a" * 64

        def model_summary(self) -> dict:
            return {}

    made = build_from_checkpoint(Places(), Model(), MapOptions())  # type: ignore[arg-type]
    assert isinstance(made, PlaceMap) and made.projection is not None
    assert made.projection.dims == PROJECTED_DIMS
    plain = build_from_checkpoint(Places(), Model(), MapOptions(pca=None))  # type: ignore[arg-type]
    assert plain.projection is None
    help_text = cli("index", "build", "--help").out
    assert "projected to 256" in help_text and "0: never" in help_text


def test_the_benchmarks_default_spec_is_what_index_build_makes() -> None:
    from edgevpr.bench.mapsearch import IndexSpec
    from edgevpr.bench.options import BenchOptions

    assert BenchOptions().indexes[0] == "default"
    spec = IndexSpec.parse("default")
    assert spec.resolved(4096, 100_000).pca == PROJECTED_DIMS
    assert spec.resolved(512, 100_000).pca is None
    assert spec.resolved(4096, 100_000).label == "default (faiss-ivf:sq8:pca256)"
    tuned = IndexSpec.parse("faiss-ivf:sq8:pca256:store-f16:nlist4096:rerank64")
    assert (tuned.nlist, tuned.rerank, tuned.store) == (4096, 64, "f16")
    with pytest.raises(EdgeVPRError, match="nlistN"):
        IndexSpec.parse("hnswlib:nlist5")


# ------------------------------------------------------------------ contended rows
def test_a_report_from_contended_rows_is_refused() -> None:
    from edgevpr.bench.cli import contended_rows
    from edgevpr.bench.report import Row

    quiet = Row(stage="embed", model="m", backend="ort-cpu", precision="fp32", batch=1,
                foreign_cpu=0.02)  # fmt: skip
    busy = Row(stage="embed", model="m", backend="openvino", precision="bf16", batch=8,
               foreign_cpu=0.4)  # fmt: skip
    assert contended_rows([quiet]) == []
    assert contended_rows([quiet, busy]) == ["openvino bf16 batch 8"]


def test_bench_does_not_write_a_contended_report(cli, monkeypatch, tmp_path) -> None:
    from edgevpr.bench import cli as bench_cli
    from edgevpr.bench.report import Report, Row

    busy = Row(stage="embed", model="m", backend="ort-cpu", precision="fp32", batch=1,
               foreign_cpu=0.5, status="ok")  # fmt: skip
    report = Report(machine={}, settings={}, rows=[busy])
    monkeypatch.setattr(bench_cli, "run_bench", lambda opts, say: report)
    monkeypatch.setattr(bench_cli, "render", lambda report, fmt: "table\n")
    out = tmp_path / "bench.md"
    refused = cli("bench", "model.onnx", "--out", out)
    assert refused.code == 2 and "ort-cpu fp32 batch 1" in refused.err and not out.exists()
    allowed = cli("bench", "model.onnx", "--out", out, "--allow-contended")
    assert allowed.code == 0 and out.read_text() == "table\n"
