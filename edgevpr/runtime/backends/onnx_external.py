"""External tensor data of an ONNX file, confined to the model's own folder.

ONNX can keep tensors in other files (how models over 2 GB are stored); the model names them
by a path relative to itself. A hostile model could name ``../../etc/passwd`` or an absolute
path and have the reader open it, so every location is checked here, from the raw protobuf,
before ONNX Runtime or onnx is given the file. Allowed: a relative path that resolves
(symbolic links followed) to an existing file inside the model's folder.

Torch-free and onnx-free: the file is walked with a minimal protobuf reader that knows only
the messages that can hold tensors; everything else (including the weights themselves) is
skipped without being read.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from edgevpr.core.errors import EdgeVPRError

WIRE_VARINT, WIRE_FIXED64, WIRE_BYTES, WIRE_START_GROUP, WIRE_END_GROUP, WIRE_FIXED32 = range(6)
# protobuf's own parser refuses deeper nesting than this
MAX_DEPTH = 100

# message -> {field number: message it holds} for every path from ModelProto to a TensorProto
# (onnx.proto: ModelProto.graph 7, .training_info 20, .functions 25; TrainingInfoProto 1, 2;
# GraphProto.node 1, .initializer 5, .sparse_initializer 15; NodeProto.attribute 5;
# AttributeProto.t 5, .g 6, .tensors 10, .graphs 11, .sparse_tensor 22, .sparse_tensors 23;
# FunctionProto.node 7, .attribute_proto 11; SparseTensorProto.values 1, .indices 2)
SCHEMA: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "function": {7: "node", 11: "attribute"},
    "sparse": {1: "tensor", 2: "tensor"},
}
TENSOR_EXTERNAL_DATA = 13  # repeated StringStringEntryProto {key = 1, value = 2}
ENTRY_KEY, ENTRY_VALUE = 1, 2


class _Malformed(Exception):
    pass


def _varint(buf: mmap.mmap | bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("bad varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _value_span(buf: mmap.mmap | bytes, pos: int, end: int, wire: int) -> tuple[int, int]:
    """Where a field's value lies (a length-delimited one's payload, after its length)."""
    if wire == WIRE_VARINT:
        return pos, _varint(buf, pos, end)[1]
    if wire == WIRE_FIXED64:
        return pos, pos + 8
    if wire == WIRE_FIXED32:
        return pos, pos + 4
    if wire == WIRE_BYTES:
        length, pos = _varint(buf, pos, end)
        return pos, pos + length
    raise _Malformed(f"unexpected wire type {wire}")


def _skip_group(buf: mmap.mmap | bytes, pos: int, end: int, number: int) -> int:
    """Past the end-group tag that closes group ``number`` (nested groups included)."""
    open_groups = [number]
    while open_groups:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == WIRE_START_GROUP:
            if len(open_groups) > MAX_DEPTH:
                raise _Malformed("nested too deeply")
            open_groups.append(field)
        elif wire == WIRE_END_GROUP and field == open_groups[-1]:
            open_groups.pop()
        else:
            _, pos = _value_span(buf, pos, end, wire)
        if pos > end:
            raise _Malformed("field runs past its message")
    return pos


def _fields(buf: mmap.mmap | bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, stop) of each length-delimited field of one message
    (start:stop is the payload); the other fields are skipped."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == WIRE_START_GROUP:  # deprecated; protobuf skips unknown ones, so do we
            pos = _skip_group(buf, pos, end, number)
            continue
        start, pos = _value_span(buf, pos, end, wire)
        if pos > end:
            raise _Malformed("field runs past its message")
        if wire == WIRE_BYTES:
            yield number, wire, start, pos


def _locations(
    buf: mmap.mmap | bytes, kind: str, start: int, end: int, depth: int
) -> Iterator[str]:
    if depth > MAX_DEPTH:
        raise _Malformed("nested too deeply")
    if kind == "tensor":
        for number, wire, s, e in _fields(buf, start, end):
            if number == TENSOR_EXTERNAL_DATA and wire == WIRE_BYTES:
                entry = {n: bytes(buf[a:b]) for n, w, a, b in _fields(buf, s, e) if w == WIRE_BYTES}
                if entry.get(ENTRY_KEY) == b"location":
                    yield entry.get(ENTRY_VALUE, b"").decode("utf-8", errors="replace")
        return
    children = SCHEMA[kind]
    for number, wire, s, e in _fields(buf, start, end):
        child = children.get(number)
        if child is not None and wire == WIRE_BYTES:
            yield from _locations(buf, child, s, e, depth + 1)


def external_data_locations(path: str | os.PathLike[str], action: str = "read") -> list[str]:
    """Every external-data location an ONNX file names (empty for a self-contained file).

    A file that does not parse is an error here (``cannot <action> ONNX model ...``): what
    cannot be checked is not handed to a reader."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                return []
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return list(dict.fromkeys(_locations(buf, "model", 0, len(buf), 0)))
    except OSError as exc:
        raise EdgeVPRError(f"cannot {action} ONNX model {path}: {exc.strerror or exc}") from None
    except _Malformed as exc:
        raise EdgeVPRError(
            f"cannot {action} ONNX model {path}: not a complete ONNX file ({exc})"
        ) from None


def check_external_data(path: str | os.PathLike[str], action: str = "read") -> None:
    """Refuse an ONNX file whose external data lies outside its own folder (or is missing),
    before anything follows the paths it names."""
    path = Path(path)
    folder = path.resolve().parent
    for location in external_data_locations(path, action):
        escapes = (
            not location
            or "\0" in location
            or PurePosixPath(location).is_absolute()
            or PureWindowsPath(location).is_absolute()
            or PureWindowsPath(location).drive
            or ".." in PurePosixPath(location.replace("\\", "/")).parts
        )
        target = (folder / location).resolve() if not escapes else None
        if target is None or not target.is_relative_to(folder):
            raise EdgeVPRError(
                f"refusing ONNX model {path}: its external data '{location[:200]}' lies outside "
                "the model's folder"
            )
        if not target.is_file():
            raise EdgeVPRError(
                f"ONNX model {path} keeps its weights in '{location[:200]}', which is not a file "
                "beside it: copy the model together with its data file"
            )
