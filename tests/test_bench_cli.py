"""``edgevpr bench`` end to end on a tiny Lite0 model (64x64) and a tiny synthetic set: every
expected row and column is there, with sane values. No timing asserts."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgevpr.bench.report import CSV_FIELDS

pytestmark = pytest.mark.slow  # benchmarks real exports of every backend

pytest.importorskip("torch")
pytest.importorskip("onnx")

# --allow-contended: these tests read the report's shape, not its timings, and CI machines
# run other processes beside them; the refusal itself is tested in test_speed.py.
FAST = ["--seconds", "0.2", "--warmup", "1", "--min-iters", "3", "--allow-contended"]
GPU_BACKENDS = {"pytorch-cuda", "ort-cuda", "ort-trt", "tensorrt"}


def edgevpr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgevpr.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    import torch

    from edgevpr.core.images import list_images, read_image
    from edgevpr.core.preprocess import preprocess
    from edgevpr.data.synth import SynthConfig, generate
    from edgevpr.export.onnx_export import export_onnx
    from edgevpr.export.quantize import Int8Options, quantize_int8
    from edgevpr.model import build_model, get_preset
    from edgevpr.model.checkpoint import load_checkpoint, save_checkpoint

    root = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    model = build_model(get_preset("mixvpr_lite0_512").with_size(64, 64), pretrained=True)
    save_checkpoint(root / "lite0.pt", model)
    config = SynthConfig(places=24, val_places=0, train_places=0, height=64, width=96)
    generate(root / "synth", config)
    # An INT8 file given beside the checkpoint (the FP32 ONNX is still exported on the fly):
    # quantised without edgevpr export's float-block search, which takes half a minute here.
    fp32 = root / "made" / "lite0.onnx"
    export_onnx(load_checkpoint(root / "lite0.pt"), fp32)
    images = [read_image(p) for p in list_images(root / "synth/images/test/database")[:16]]
    int8 = root / "lite0_int8.onnx"
    quantize_int8(fp32, int8, preprocess(images, model.config.preprocess),
                  Int8Options(search=False))
    return {"root": root, "ckpt": root / "lite0.pt", "int8": int8, "images": root / "synth",
            "cache": root / "cache"}


@pytest.fixture(scope="module")
def full_run(setup) -> tuple[dict, str]:
    out = setup["root"] / "report.json"
    result = edgevpr(
        "bench", str(setup["ckpt"]), str(setup["int8"]), *FAST, "--batch", "1,2",
        "--map-size", "600",
        "--ef", "16,64", "--map-images", "16", "--images", str(setup["images"]),
        "--index", "hnswlib", "--index", "usearch:i8:pca64", "--prior", "100,2000",
        "--cache-dir", str(setup["cache"]), "--out", str(out),
    )
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text()), result.stdout


def has_gpu(report: dict) -> bool:
    return bool(report["machine"]["gpus"])


@pytest.mark.slow
def test_embed_rows_for_every_backend_and_batch(full_run) -> None:
    report, _ = full_run
    embed = [r for r in report["rows"] if r["stage"] == "embed"]
    ok = {(r["backend"], r["precision"], r["batch"]) for r in embed if r["status"] == "ok"}
    for backend, precision in (("pytorch", "fp32"), ("ort-cpu", "fp32"), ("ort-cpu", "int8")):
        assert {(backend, precision, 1), (backend, precision, 2)} <= ok
    if not has_gpu(report):
        skipped = {r["backend"] for r in embed if r["status"] == "skipped"}
        assert GPU_BACKENDS <= skipped
        assert all(r["reason"] for r in embed if r["status"] == "skipped")
    for row in (r for r in embed if r["status"] == "ok"):
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["mean_ms"] > 0 and row["throughput"] > 0 and row["iterations"] >= 3
        assert row["gflops"] > 0 and row["size_mb"] > 0 and row["peak_rss_mb"] > 10
        assert row["per_image_ms"] == pytest.approx(row["mean_ms"] / row["batch"])
        assert row["speedup"] > 0
        if row["backend"] != "pytorch":
            # same descriptors as PyTorch: FP32 essentially exactly, INT8 closely
            assert row["cos_min"] > (0.99999 if row["precision"] == "fp32" else 0.9)
    assert len(report["models"]) == 1  # the checkpoint and its INT8 file are one model
    model = report["models"][0]
    assert model["descriptor_dim"] == 512 and model["input_size"] == "64x64"
    assert any("ONNX FP32 (exported by bench" in label for label in model["files"])
    assert model["files"]["ONNX INT8"].endswith("lite0_int8.onnx")
    assert 0 < model["gflop_per_image"] < 1
    assert set(model["gflop_parts"]) == {"backbone", "aggregator"}


@pytest.mark.slow
def test_search_and_pipeline_rows(full_run) -> None:
    report, _ = full_run
    search = [r for r in report["rows"] if r["stage"] == "search"]
    methods = sorted((r["backend"], r["params"]) for r in search if r["prior_m"] is None)
    assert methods[0] == ("exact (numpy)", "")
    for spec in ("hnswlib:f32", "usearch:i8:pca64"):
        breadths = {p.rsplit("=", 1)[1] for m, p in methods if m == spec}
        assert {"16", "64"} <= breadths  # and the runtime's default, used end to end
        priors = {r["prior_m"] for r in search if r["backend"] == spec and r["prior_m"]}
        assert priors == {100.0, 2000.0}
    for row in search:
        assert row["status"] == "ok" and row["map_size"] == 600 and row["dim"] == 512
        assert 0 <= row["top1"] <= 1 and 0 <= row["recall_at_k"] <= 1 and row["k"] == 10
    maps = [r for r in search if r["backend"] != "exact (numpy)"]
    assert all(r["build_s"] > 0 and r["size_mb"] > 0 and r["load_s"] > 0 for r in maps)
    # structured maps: each index finds the places, with a prior too (exact within it)
    assert all(max(r["top1"] for r in maps if r["backend"] == m) >= 0.9 for m, _ in methods[1:])
    assert all(r["top1"] >= 0.9 for r in maps if r["prior_m"])
    preprocess = [r for r in report["rows"] if r["stage"] == "decode+preprocess"]
    assert len(preprocess) == 1 and preprocess[0]["p50_ms"] > 0
    e2e = {(r["backend"], r["precision"]): r for r in report["rows"] if r["stage"] == "end-to-end"}
    assert {("ort-cpu", "fp32"), ("ort-cpu", "int8")} <= set(e2e)  # OpenVINO's too, if here
    assert all(backend.startswith(("ort-", "openvino")) for backend, _ in e2e)
    assert all(r["vs_embed"] > 0 and r["map_size"] == 600 for r in e2e.values())


@pytest.mark.slow
def test_markdown_on_the_terminal(full_run) -> None:
    _, stdout = full_run
    for text in ("## edgevpr bench", "| CPU |", "#### Embed", "#### Search", "#### Pipeline",
                 "| Backend | Precision | Batch | Status | Size (MB) | Mean (ms) | p50 (ms) |",
                 "| GFLOP/s | Peak RSS (MB) | Speed-up | Cos vs ref (min) |", "Top-1 agree",
                 "E2E / embed"):
        assert text in stdout


@pytest.mark.slow
def test_csv_from_the_cache_with_chosen_backend_and_stage(setup, full_run) -> None:
    result = edgevpr(
        "bench", str(setup["ckpt"]), *FAST, "--batch", "1", "--backend", "ort-cpu",
        "--stages", "embed", "--images", str(setup["images"]), "--map-images", "16",
        "--cache-dir", str(setup["cache"]), "--format", "csv",
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows and list(rows[0]) == CSV_FIELDS
    assert {(r["stage"], r["backend"], r["precision"], r["batch"]) for r in rows} == {
        ("embed", "ort-cpu", "fp32", "1")
    }
    assert "exporting" not in result.stderr  # the FP32 export came from the cache


def test_bad_arguments_are_one_line_errors(tmp_path) -> None:
    cases = [
        (["bench", "no-such-model.pt"], "no such file, and not a preset name"),
        (["bench", "--backend", "cuda9", "x.onnx"], "unknown backend cuda9"),
        (["bench", "--batch", "1,x"], "'x' is not a whole number"),
        (["bench", "--stages", "everything"], "unknown stage everything"),
    ]
    for args, message in cases:
        result = edgevpr(*args, "--cache-dir", str(tmp_path))
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0


def test_corrupt_onnx_is_a_one_line_error(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    result = edgevpr("bench", str(bad), "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 2
    assert "error: cannot read ONNX model" in result.stderr and "Traceback" not in result.stderr
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
