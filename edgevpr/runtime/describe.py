"""``edgevpr info`` for what the runtime reads: ONNX models, TensorRT engines, place maps.

Torch-free and onnx-free: ONNX facts come from ONNX Runtime plus a few top-level protobuf
fields (IR version, opsets) read directly from the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO

import click

from edgevpr.core.engine_header import (
    EngineHeader,
    check_engine_compatibility,
    header_path,
    read_engine_header,
)
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.formats import format_of
from edgevpr.core.metadata import ModelMetadata

# ModelProto field numbers (onnx.proto3)
ONNX_IR_VERSION, ONNX_PRODUCER, ONNX_OPSET_IMPORT = 1, 2, 8
OPSET_DOMAIN, OPSET_VERSION = 1, 2


def describe_artifact(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a file is, as its format describes it (a flat-ish dict for printing): a place
    map, an ONNX model, a TensorRT engine, or (with torch) a checkpoint."""
    path = Path(path)
    if not path.exists():
        raise EdgeVPRError(f"{path} does not exist")
    return format_of(path).describe(path)


def describe_place_map(path: Path) -> dict[str, Any]:
    """A map's facts, its every checksum verified (the large descriptor section too)."""
    from edgevpr.runtime.placemap import PlaceMap
    from edgevpr.runtime.placemap.fileformat.persist import file_facts

    placemap = PlaceMap.load(path, verify=True)
    facts = file_facts(path)
    ids = placemap.ids()
    sources = placemap.sources()
    embedded_by = [f"{s.get('file')} ({s.get('precision')}): {s['places']} places" for s in sources]
    unknown = len(ids) - sum(s["places"] for s in sources)
    if unknown:
        embedded_by.append(f"not recorded: {unknown} places")
    projection = placemap.projection
    return {
        **_file_fields("place map", path),
        "format_version": facts["format_version"],
        "integrity": "ok (sha256 verified)",
        "places": len(placemap),
        "descriptor_dim": placemap.descriptor_dim,
        "fingerprint": placemap.fingerprint,
        "model": placemap.model,
        "coordinates": placemap.coordinate_kind() or "none",
        "places_without_coordinates": placemap.without_coordinates(ids) if len(ids) else 0,
        "embedded_by": "; ".join(embedded_by),
        "drives": "; ".join(_drive_line(d) for d in placemap.drives()) or "none",
        "index": f"{placemap.index_kind} ({placemap.storage})",
        "index_params": placemap.index_params(),
        "projection": "none" if projection is None else f"{projection.kind} to {projection.dims}",
        "descriptors_stored": placemap.store,
        "rerank": placemap.rerank,
        "sections": facts.get("sections", {}),
        "created": facts.get("created"),
        "saved": facts.get("saved"),
        "edgevpr_version": facts.get("edgevpr_version"),
    }


def _drive_line(drive: dict[str, Any]) -> str:
    span = "" if drive["first"] is None else f", frames {drive['first']}-{drive['last']}"
    return f"{drive['name']}: {drive['places']} places{span}, {drive['metres']:.0f} m"


def describe_onnx(path: Path) -> dict[str, Any]:
    # only here: the map and engine paths don't need onnxruntime
    import onnxruntime as ort

    from edgevpr.runtime.backends.onnxruntime import model_io, open_cpu_session

    session = open_cpu_session(path)
    info = _file_fields("onnx model", path)
    info.update(_onnx_header_fields(path))
    for label, values in (("input", session.get_inputs()), ("output", session.get_outputs())):
        for i, value in enumerate(values):
            name = label if len(values) == 1 else f"{label}_{i}"
            info[name] = f"{value.name} {list(value.shape)} {value.type}"
    props = session.get_modelmeta().custom_metadata_map
    try:
        metadata = ModelMetadata.from_props(props, source=f"ONNX model {path}")
        model_io(session, metadata, path)
    except EdgeVPRError as exc:
        info["edgevpr_metadata"] = f"missing or unreadable: {exc}"
        return info
    info.update(_metadata_fields(metadata))
    info["providers_here"] = ort.get_available_providers()
    return info


def describe_engine(path: Path) -> dict[str, Any]:
    header = read_engine_header(path)
    info = _file_fields("tensorrt engine", path)
    info.update(
        {
            "header": str(header_path(path)),
            "trt_version": header.trt_version,
            "gpu_name": header.gpu_name,
            "compute_capability": header.compute_capability,
            "hardware_compatibility": header.hardware_compatibility,
            "precision": header.precision,
            "batch_min_opt_max": [header.batch_min, header.batch_opt, header.batch_max],
            "onnx_sha256": header.onnx_sha256,
        }
    )
    info.update(_metadata_fields(header.model_metadata(source=f"engine header of {path}")))
    info["runs_here"] = _engine_runs_here(header)
    return info


def _file_fields(kind: str, path: Path) -> dict[str, Any]:
    return {"kind": kind, "file": str(path), "size_bytes": path.stat().st_size}


def _engine_runs_here(header: EngineHeader) -> str:
    """Checked without loading the engine; unknown where TensorRT or a GPU is missing."""
    try:
        import tensorrt
    except ImportError:
        return "unknown (tensorrt is not installed here)"
    from edgevpr.runtime.backends.tensorrt import local_gpu

    try:
        name, capability = local_gpu()
    except EdgeVPRError as exc:
        return f"unknown ({exc})"
    try:
        check_engine_compatibility(header, tensorrt.__version__, capability, name)
    except EdgeVPRError as exc:
        return f"no: {exc}"
    return "yes"


def _metadata_fields(metadata: ModelMetadata) -> dict[str, Any]:
    config = metadata.model_config
    return {
        "fingerprint": metadata.fingerprint,
        "descriptor_dim": metadata.descriptor_dim,
        "precision": metadata.precision,
        "backbone": config.get("backbone"),
        "aggregator": config.get("aggregator"),
        "preprocess": json.dumps(metadata.preprocess.to_dict(), sort_keys=True),
        "edgevpr_version": metadata.edgevpr_version,
    }


# ------------------------------------------------------------------ protobuf, minimally
def _varint(fh: BinaryIO) -> int | None:
    result, shift = 0, 0
    while True:
        byte = fh.read(1)
        if not byte:
            return None
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(fh: BinaryIO, end: int) -> Any:
    """Yield (field number, wire type, value) of one message; length-delimited values are
    returned as their offset and length, and skipped, so that big graphs are never read."""
    while fh.tell() < end:
        key = _varint(fh)
        if key is None:
            return
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, _varint(fh)
        elif wire == 1:
            fh.seek(8, os.SEEK_CUR)
        elif wire == 2:
            length = _varint(fh) or 0
            start = fh.tell()
            yield number, wire, (start, length)
            fh.seek(start + length)
        elif wire == 5:
            fh.seek(4, os.SEEK_CUR)
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _onnx_header_fields(path: Path) -> dict[str, Any]:
    """IR version and opsets from the ModelProto's top level (empty if unparsable)."""
    found: dict[str, Any] = {}
    opsets: dict[str, int] = {}
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            for number, wire, value in _fields(fh, size):
                if number == ONNX_IR_VERSION and wire == 0:
                    found["ir_version"] = value
                elif number == ONNX_PRODUCER and wire == 2:
                    fh.seek(value[0])
                    found["producer"] = fh.read(min(value[1], 200)).decode(errors="replace")
                elif number == ONNX_OPSET_IMPORT and wire == 2:
                    domain, version = "ai.onnx", 0
                    for inner, inner_wire, inner_value in _fields(fh, value[0] + value[1]):
                        if inner == OPSET_DOMAIN and inner_wire == 2:
                            fh.seek(inner_value[0])
                            domain = fh.read(inner_value[1]).decode(errors="replace") or "ai.onnx"
                        elif inner == OPSET_VERSION and inner_wire == 0:
                            version = inner_value
                    opsets[domain] = version
                    fh.seek(value[0] + value[1])
    except (OSError, ValueError):
        return found
    if opsets:
        found["opset"] = opsets.get("ai.onnx", max(opsets.values()))
        others = {d: v for d, v in opsets.items() if d != "ai.onnx"}
        if others:
            found["other_opsets"] = others
    return found


def print_description(info: dict[str, Any]) -> None:
    """A description as aligned ``key  value`` lines (nested values as JSON)."""
    width = max(len(k) for k in info)
    for key, value in info.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        click.echo(f"{key:<{width}}  {value}")
