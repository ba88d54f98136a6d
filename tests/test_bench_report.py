"""Report formatting: Markdown tables, CSV and JSON round trips, number formats."""

from __future__ import annotations

import csv
import io
import json

from edgevpr.bench.machine import machine_info
from edgevpr.bench.report import (
    CSV_FIELDS,
    EMBED_COLUMNS,
    PIPELINE_COLUMNS,
    SEARCH_COLUMNS,
    SKIPPED,
    STAGE_EMBED,
    STAGE_END_TO_END,
    STAGE_PREPROCESS,
    STAGE_SEARCH,
    ModelInfo,
    Report,
    Row,
    fmt_count,
    fmt_ms,
    pipeline_lines,
    render,
)


def sample_report() -> Report:
    timing = dict(mean_ms=80.0, p50_ms=79.5, p90_ms=85.26, p99_ms=101.0, iterations=40)
    rows = [
        Row(STAGE_EMBED, "r50", "pytorch", "fp32", 1, throughput=6.9, gflops=116.0, size_mb=43.6,
            peak_rss_mb=612.0, speedup=1.0, reason="reference", mean_ms=145.0, p50_ms=144.0,
            p90_ms=150.0, p99_ms=160.0, iterations=20),
        Row(STAGE_EMBED, "r50", "ort-cpu", "fp32", 1, throughput=12.5, gflops=210.0,
            size_mb=43.6, peak_rss_mb=300.0, speedup=1.81, cos_min=0.9999998, **timing),
        Row(STAGE_EMBED, "r50", "ort-cuda", "fp32", 0, status=SKIPPED,
            reason="no NVIDIA GPU (nvidia-smi found none)"),
        Row(STAGE_SEARCH, "r50", "exact (numpy)", map_size=100_000, dim=4096, k=10, top1=1.0,
            recall_at_k=1.0, mean_ms=54.0, p50_ms=53.0, p90_ms=56.0, p99_ms=60.0,
            throughput=18.5),
        Row(STAGE_SEARCH, "r50", "hnswlib:f32", map_size=100_000, dim=4096, k=10,
            params="breadth=128", build_s=480.0, top1=0.995, recall_at_k=0.97,
            mean_ms=0.9, p50_ms=0.5, p90_ms=1.1, p99_ms=1.9, throughput=1111.0,
            warnings=["long tail: p90 is 1.40x p50"]),
        Row(STAGE_PREPROCESS, "r50", "opencv+numpy", mean_ms=1.2, p50_ms=1.0, p90_ms=1.3,
            p99_ms=1.5, reason="JPG 640x480 -> 320x320"),
        Row(STAGE_END_TO_END, "r50", "ort-cpu", "fp32", 1, map_size=100_000, k=10,
            params="hnswlib:f32 breadth=128", mean_ms=83.0, p50_ms=82.0, p90_ms=88.0, p99_ms=99.0,
            throughput=12.0, vs_embed=1.0375),
    ]
    info = ModelInfo("r50", "resnet50 + mixvpr", 16.84, {"backbone": 13.38, "aggregator": 3.46},
                     4096, "320x320")
    settings = {"warmup": 3, "seconds": 2.0, "min_iters": 5, "peak_memory": "peak RSS"}
    return Report(machine_info(), settings, [info], rows, ["a note"])


def test_number_formats() -> None:
    assert fmt_ms(None) == "-"
    assert fmt_ms(145.4) == "145"
    assert fmt_ms(12.345) == "12.3"
    assert fmt_ms(1.2345) == "1.23"
    assert fmt_ms(0.01234) == "0.012"
    assert fmt_count(100_000) == "100k"
    assert fmt_count(2500) == "2500"


def test_markdown_has_machine_model_and_one_table_per_stage() -> None:
    text = render(sample_report(), "md")
    assert "| CPU |" in text and "| GPU |" in text and "onnxruntime" in text
    assert "16.84 GFLOP/image (backbone 13.38, aggregator 3.46)" in text
    for columns in (EMBED_COLUMNS, SEARCH_COLUMNS, PIPELINE_COLUMNS):
        header = "| " + " | ".join(h for h, _ in columns) + " |"
        assert header in text
    lines = text.splitlines()
    ort = next(line for line in lines if line.startswith("| ort-cpu | fp32 | 1 |"))
    assert "| 1.81x |" in ort and "| 80.0 |" in ort and "| 85.3 |" in ort
    skipped = next(line for line in lines if line.startswith("| ort-cuda |"))
    assert "skipped" in skipped and "no NVIDIA GPU" in skipped and "| - |" in skipped
    hnsw = next(line for line in lines if "| hnswlib:f32 |" in line)
    assert "| 100k | 4096 |" in hnsw and "0.995" in hnsw and "ok ⚠" in hnsw
    pipeline = next(line for line in lines if line.startswith("| ort-cpu | fp32 | ok |"))
    # decode+preprocess p50, embed p50, search p50 and their sum, then end to end
    assert "| 1.00 | 79.5 | 0.500 | 81.0 | 83.0 |" in pipeline
    assert "1.04x" in pipeline
    # every table row has as many cells as its header
    for line in lines:
        if line.startswith("| ") and line.count("|") > 3:
            assert line.count("|") in {len(c) + 1 for c in (EMBED_COLUMNS, SEARCH_COLUMNS,
                                                             PIPELINE_COLUMNS)} | {3}


def test_pipeline_pairs_rows_of_the_same_backend() -> None:
    lines = pipeline_lines(sample_report().rows)
    assert len(lines) == 1
    line = lines[0]
    assert line.embed is not None and line.embed.backend == "ort-cpu"
    assert line.search is not None and line.search.params == "breadth=128"
    assert line.stage_sum_ms == 1.0 + 79.5 + 0.5


def test_csv_round_trip() -> None:
    report = sample_report()
    parsed = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert len(parsed) == len(report.rows)
    assert list(parsed[0].keys()) == CSV_FIELDS
    assert parsed[1]["backend"] == "ort-cpu" and float(parsed[1]["p90_ms"]) == 85.26
    assert float(parsed[1]["per_image_ms"]) == 80.0
    assert parsed[2]["status"] == "skipped" and parsed[2]["mean_ms"] == ""
    assert parsed[4]["warnings"] == "long tail: p90 is 1.40x p50"
    assert "Xeon" in parsed[0]["machine"] or parsed[0]["machine"]


def test_json_round_trip() -> None:
    data = json.loads(render(sample_report(), "json"))
    assert set(data) == {"machine", "settings", "models", "rows", "notes"}
    assert data["models"][0]["gflop_per_image"] == 16.84
    assert data["rows"][1]["cos_min"] == 0.9999998
    assert data["rows"][6]["vs_embed"] == 1.0375
    assert data["machine"]["cpu"]["cores"] >= 1
