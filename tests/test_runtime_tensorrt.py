"""TensorRT engines: the header beside an engine and the checks made before loading it.

The checks are pure functions, tested here without TensorRT; running a real engine needs
TensorRT and an NVIDIA GPU and is skipped elsewhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from edgevpr.core.engine_header import (
    EngineHeader,
    check_engine_bytes,
    check_engine_compatibility,
    header_path,
    parse_compute_capability,
    read_engine_header,
    trt_version_fields,
)
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.metadata import ModelMetadata
from edgevpr.core.preprocess import PreprocessSpec
from edgevpr.runtime.describe import describe_artifact
from edgevpr.runtime.embedder import Embedder

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def model_metadata() -> ModelMetadata:
    return ModelMetadata(
        descriptor_dim=512,
        preprocess=PreprocessSpec(height=64, width=64),
        model_config={"backbone": "efficientnet_lite0", "aggregator": "mixvpr"},
        checkpoint_sha256="ab" * 32,
        precision="fp16",
        edgevpr_version="0.1.0",
    )


def header_dict(**changes: object) -> dict:
    """A header as export writes it (extra keys included)."""
    data = {
        "format": "edgevpr.tensorrt-engine",
        "format_version": 1,
        "trt_version": "10.3.0.26",
        "gpu_name": "NVIDIA L4",
        "compute_capability": "8.9",
        "precision": "fp16",
        "batch_min": 1,
        "batch_opt": 8,
        "batch_max": 32,
        "onnx_sha256": "cd" * 32,
        "metadata": model_metadata().to_props(),
        "extra": {"input_shape": [3, 64, 64], "strongly_typed": False, "fp32_layers": ["ln"]},
    }
    data.update(changes)
    return data


def write_engine(folder: Path, header: dict | None) -> Path:
    engine = folder / "model.engine"
    engine.write_bytes(b"\x00serialized engine bytes")
    if header is not None:
        header_path(engine).write_text(json.dumps(header))
    return engine


def test_header_round_trip_and_metadata(tmp_path: Path) -> None:
    engine = write_engine(tmp_path, header_dict())
    header = read_engine_header(engine)
    assert header_path(engine).name == "model.engine.json"
    assert (header.trt_version, header.compute_capability, header.batch_max) == (
        "10.3.0.26",
        "8.9",
        32,
    )
    assert header.extra["fp32_layers"] == ["ln"]
    assert header.model_metadata() == model_metadata()
    assert EngineHeader.from_dict(json.loads(json.dumps(header.to_dict()))) == header


def test_unknown_top_level_keys_are_kept_as_extra() -> None:
    header = EngineHeader.from_dict(header_dict(created="2026-01-01T00:00:00+00:00"))
    assert header.extra["created"] == "2026-01-01T00:00:00+00:00"


def test_same_release_and_gpu_family_is_accepted() -> None:
    header = EngineHeader.from_dict(header_dict())
    check_engine_compatibility(header, "10.3.0.26", "8.9", "NVIDIA GeForce RTX 4090")
    check_engine_compatibility(header, "10.3.0.26", (8, 9))


@pytest.mark.parametrize(
    ("installed", "part"),
    [("10.4.0.26", "minor"), ("10.3.1.1", "patch"), ("11.0.0.1", "major"), ("8.6.1", "major"),
     ("10.3.0.30", "build")],
)  # fmt: skip
def test_another_tensorrt_version_is_refused_with_the_fix(installed: str, part: str) -> None:
    header = EngineHeader.from_dict(header_dict())
    with pytest.raises(EdgeVPRError) as caught:
        check_engine_compatibility(header, installed, "8.9", engine="engine model.engine")
    message = str(caught.value)
    assert "TensorRT 10.3.0.26" in message and f"TensorRT {installed}" in message
    assert f"the {part} number differs" in message
    assert "edgevpr export CKPT --trt" in message and "\n" not in message


@pytest.mark.parametrize("capability", ["8.6", "9.0", "7.5", "sm_87"])
def test_another_gpu_family_is_refused_with_the_fix(capability: str) -> None:
    header = EngineHeader.from_dict(header_dict())
    with pytest.raises(
        EdgeVPRError, match=r"built for NVIDIA L4 \(compute capability 8.9\).*rebuild"
    ):
        check_engine_compatibility(header, "10.3.0.26", capability, "NVIDIA H100")


def test_hardware_compatible_engines_run_on_ampere_and_later() -> None:
    header = EngineHeader.from_dict(
        header_dict(hardware_compatibility="ampere_plus", compute_capability="8.0")
    )
    check_engine_compatibility(header, "10.3.0.26", "9.0")
    check_engine_compatibility(header, "10.3.0.26", "8.6")
    with pytest.raises(EdgeVPRError, match="compute capability 7.5"):
        check_engine_compatibility(header, "10.3.0.26", "7.5")


def test_version_compatible_engines_run_on_later_releases_of_their_major() -> None:
    header = EngineHeader.from_dict(header_dict(version_compatible=True))
    check_engine_compatibility(header, "10.3.0.26", "8.9")
    check_engine_compatibility(header, "10.16.1.11", "8.9")
    for installed in ("10.2.0.19", "11.0.0.114"):
        with pytest.raises(EdgeVPRError, match="version-compatible from TensorRT 10.3.0.26 on"):
            check_engine_compatibility(header, installed, "8.9")


def test_engine_bytes_must_match_the_header() -> None:
    header = EngineHeader.from_dict(header_dict(engine_sha256=hashlib.sha256(b"new").hexdigest()))
    check_engine_bytes(header, b"new", "engine")
    with pytest.raises(EdgeVPRError, match="not the engine its header describes"):
        check_engine_bytes(header, b"old", "engine")
    check_engine_bytes(EngineHeader.from_dict(header_dict()), b"old", "engine")  # older header


def test_version_and_capability_parsing() -> None:
    assert trt_version_fields("10.3.0.26") == (10, 3, 0, 26)
    assert trt_version_fields("11.0") == (11, 0, 0, 0)
    assert parse_compute_capability("sm_89") == (8, 9)
    assert parse_compute_capability("12.0") == (12, 0)
    assert parse_compute_capability((9, 0)) == (9, 0)
    with pytest.raises(EdgeVPRError, match="not a compute capability"):
        parse_compute_capability("ampere")
    with pytest.raises(EdgeVPRError, match="not a TensorRT version"):
        trt_version_fields("latest")


def test_missing_header_asks_for_a_rebuild(tmp_path: Path) -> None:
    engine = write_engine(tmp_path, None)
    with pytest.raises(
        EdgeVPRError, match=r"no header model.engine.json.*edgevpr export CKPT --trt"
    ):
        Embedder(engine)


@pytest.mark.parametrize(
    "header, expected",
    [
        (header_dict(batch_min=8, batch_opt=4), "min <= opt <= max"),
        ({k: v for k, v in header_dict().items() if k != "trt_version"}, "trt_version"),
        (header_dict(format="something.else"), "not an edgevpr engine header"),
        (header_dict(format_version=9), "newer"),
        (header_dict(compute_capability="x"), "not a compute capability"),
    ],
)
def test_broken_headers_are_one_line_errors(tmp_path: Path, header: dict, expected: str) -> None:
    engine = write_engine(tmp_path, header)
    with pytest.raises(EdgeVPRError, match=expected) as caught:
        read_engine_header(engine)
    assert "\n" not in str(caught.value)


def test_unparsable_header_file(tmp_path: Path) -> None:
    engine = write_engine(tmp_path, None)
    header_path(engine).write_text("{not json")
    with pytest.raises(EdgeVPRError, match="cannot read engine header"):
        read_engine_header(engine)


@pytest.mark.skipif(
    HAS_TENSORRT, reason="tensorrt is installed here: the missing-package path cannot be seen"
)
def test_engine_without_tensorrt_installed_is_a_one_line_error(tmp_path: Path) -> None:
    engine = write_engine(tmp_path, header_dict())
    with pytest.raises(EdgeVPRError, match=r"needs the 'tensorrt' package.*edgevpr\[trt\]"):
        Embedder(engine)
    with pytest.raises(EdgeVPRError, match="providers apply to ONNX models"):
        Embedder(engine, providers=["cpu"])


def test_describe_engine_from_its_header(tmp_path: Path) -> None:
    engine = write_engine(tmp_path, header_dict())
    info = describe_artifact(engine)
    assert info["kind"] == "tensorrt engine"
    assert info["trt_version"] == "10.3.0.26" and info["batch_min_opt_max"] == [1, 8, 32]
    assert info["fingerprint"] == "ab" * 32 and info["descriptor_dim"] == 512
    if not HAS_TENSORRT:
        assert info["runs_here"].startswith("unknown")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TENSORRT, reason="needs the tensorrt package and an NVIDIA GPU")
def test_engine_descriptors_match_onnx_runtime(tmp_path: Path) -> None:  # pragma: no cover
    """Where TensorRT exists: build an FP32 engine from a tiny exported model and compare
    the native backend with ONNX Runtime on the same images."""
    import numpy as np

    from edgevpr.export.onnx_export import export_onnx
    from edgevpr.export.tensorrt_build import BatchRange, EngineOptions, build_engine
    from edgevpr.model import build_model, get_preset
    from edgevpr.model.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(
        tmp_path / "m.pt", build_model(get_preset("mixvpr_lite0_512").with_size(64, 64))
    )
    export_onnx(load_checkpoint(tmp_path / "m.pt"), tmp_path / "m.onnx")
    build_engine(
        tmp_path / "m.onnx",
        tmp_path / "m.engine",
        EngineOptions(precision="fp32", batch=BatchRange(1, 4, 8)),
    )
    images = [
        np.random.default_rng(i).integers(0, 255, (48, 80, 3), dtype=np.uint8) for i in range(11)
    ]
    onnx_out = Embedder(tmp_path / "m.onnx", providers=["cpu"]).embed_images(images)
    with Embedder(tmp_path / "m.engine") as engine:
        engine_out = engine.embed_images(images)
    cosine = np.sum(onnx_out * engine_out, axis=1)
    assert cosine.min() >= 0.9999


def test_ort_tensorrt_provider_keeps_the_graphs_precision_and_keys_its_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    from edgevpr.runtime.backends import trt_provider

    monkeypatch.setattr(trt_provider, "cache_root", lambda: tmp_path)
    monkeypatch.setattr(trt_provider, "tensorrt_library_version", lambda: "10.3.0.26")
    monkeypatch.setattr(trt_provider, "gpu_name", lambda: "NVIDIA Jetson AGX Orin")
    options = trt_provider.provider_options("images", ["batch", 3, 64, 64], 8)
    assert options["trt_fp16_enable"] is False and options["trt_timing_cache_enable"] is True
    cache = Path(options["trt_engine_cache_path"])
    assert cache == Path(options["trt_timing_cache_path"]) and cache.is_dir()
    assert cache.parent == tmp_path / "ort-tensorrt"
    assert f"ort-{ort.__version__}" in cache.name and "trt-10.3.0.26" in cache.name
    assert options["trt_profile_max_shapes"] == "images:8x3x64x64"
    monkeypatch.setattr(trt_provider, "gpu_name", lambda: "NVIDIA L4")
    other = trt_provider.provider_options("images", ["batch", 3, 64, 64], 8)
    assert other["trt_engine_cache_path"] != str(cache)  # another GPU, another cache
