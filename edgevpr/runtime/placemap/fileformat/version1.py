"""The place-map file: one file, written atomically, checked on every load.

Layout (little-endian)::

    magic            14 bytes  b"EDGEVPRMAP\\r\\n\\x1a\\n"  (catches text-mode transfers)
    format_version    u16
    metadata_length   u64      bytes of the UTF-8 JSON metadata section
    index_length      u64      bytes of the hnswlib index section
    sha256            32 bytes over the metadata and index sections
    metadata          JSON     (format, fingerprint, dimension, HNSW parameters, records)
    index             bytes    exactly what hnswlib's save_index writes

No pickle anywhere: the metadata is JSON and the index is hnswlib's own binary format, which
is read only after the checksum has matched.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from edgevpr.core.checks import ranged, whole
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.formats import MAP_MAGIC
from edgevpr.runtime.placemap.kinds import HNSWLIB, INDEX_KINDS
from edgevpr.runtime.placemap.place_record import PlaceRecord

MAGIC = MAP_MAGIC
FORMAT_NAME = "edgevpr.placemap"
FORMAT_VERSION = 1
HEADER = struct.Struct("<14sHQQ32s")
CHUNK = 1 << 20
REBUILD_HINT = "rebuild it with 'edgevpr index build' or restore a copy"


@dataclass(frozen=True)
class MapHeader:
    format_version: int
    metadata_length: int
    index_length: int
    sha256: bytes

    @property
    def total_size(self) -> int:
        return HEADER.size + self.metadata_length + self.index_length


def is_place_map(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` starts like a place map (cheap: reads 14 bytes)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _open_map(path: Path) -> BinaryIO:
    if not path.exists():
        raise EdgeVPRError(f"place map {path} does not exist")
    if not path.is_file():
        raise EdgeVPRError(f"place map {path} is not a file")
    try:
        return open(path, "rb")
    except OSError as exc:
        raise EdgeVPRError(f"cannot read place map {path}: {exc.strerror or exc}") from None


def _read_header(fh: BinaryIO, path: Path) -> MapHeader:
    raw = fh.read(HEADER.size)
    if not raw:
        raise EdgeVPRError(f"place map {path} is empty")
    if not raw.startswith(MAGIC[: len(raw)]):
        raise EdgeVPRError(f"{path} is not an edgevpr place map")
    if len(raw) < HEADER.size:
        raise EdgeVPRError(f"place map {path} is truncated (only {len(raw)} bytes); {REBUILD_HINT}")
    _, version, metadata_length, index_length, digest = HEADER.unpack(raw)
    if version != FORMAT_VERSION:
        newer = "a newer edgevpr" if version > FORMAT_VERSION else "an older edgevpr"
        raise EdgeVPRError(
            f"place map {path} has format version {version} (made by {newer}); "
            f"this edgevpr reads version {FORMAT_VERSION}"
        )
    header = MapHeader(version, metadata_length, index_length, digest)
    size = os.fstat(fh.fileno()).st_size
    if size < header.total_size:
        raise EdgeVPRError(
            f"place map {path} is truncated ({size} of {header.total_size} bytes); {REBUILD_HINT}"
        )
    if size > header.total_size:
        raise EdgeVPRError(
            f"place map {path} is corrupt ({size - header.total_size} unexpected bytes at the end)"
        )
    return header


def _parse_metadata(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        metadata = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgeVPRError(f"place map {path} has unreadable metadata ({exc})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise EdgeVPRError(f"place map {path} has metadata of another format")
    return metadata


def read_map_metadata(path: str | os.PathLike[str]) -> tuple[MapHeader, dict[str, Any]]:
    """Verify the whole file's checksum and return its header and metadata, without
    loading the index (for ``edgevpr info``)."""
    path = Path(path)
    with _open_map(path) as fh:
        header = _read_header(fh, path)
        metadata_bytes = fh.read(header.metadata_length)
        digest = hashlib.sha256(metadata_bytes)
        _hash_copy(fh, header.index_length, digest, None)
    _check_digest(digest, header, path)
    return header, _parse_metadata(metadata_bytes, path)


@contextmanager
def open_map(path: str | os.PathLike[str]) -> Iterator[tuple[dict[str, Any], Path]]:
    """Verify a map file and yield (metadata, path of its index section as a temporary file).

    hnswlib loads only from a path, so the index section is copied out while it is hashed;
    nothing of it is parsed before the checksum matched.
    """
    path = Path(path)
    with _open_map(path) as fh, tempfile.TemporaryDirectory(prefix="edgevpr-map-") as tmp:
        header = _read_header(fh, path)
        metadata_bytes = fh.read(header.metadata_length)
        digest = hashlib.sha256(metadata_bytes)
        index_path = Path(tmp) / "index.hnsw"
        with open(index_path, "wb") as out:
            _hash_copy(fh, header.index_length, digest, out)
        _check_digest(digest, header, path)
        yield _parse_metadata(metadata_bytes, path), index_path


def _hash_copy(src: BinaryIO, length: int, digest: Any, dst: BinaryIO | None) -> None:
    remaining = length
    while remaining:
        block = src.read(min(CHUNK, remaining))
        if not block:
            break
        digest.update(block)
        if dst is not None:
            dst.write(block)
        remaining -= len(block)


def _check_digest(digest: Any, header: MapHeader, path: Path) -> None:
    if digest.digest() != header.sha256:
        raise EdgeVPRError(f"place map {path} is corrupt (checksum mismatch); {REBUILD_HINT}")


# ------------------------------------------------------------------ the metadata section
@dataclass
class MapContents:
    """A map file's metadata, checked: everything but the index itself."""

    dim: int
    fingerprint: str
    params: dict[str, int]  # the index's (M, ef_construction, ef)
    records: list[PlaceRecord]  # in id order, ids set
    sources_of_records: np.ndarray  # per record: index into ``sources``, or -1
    next_id: int
    model: dict[str, Any]
    created: str
    sources: list[dict[str, Any]]


def parse_map_metadata(metadata: dict[str, Any], path: Path) -> MapContents:
    """Check the metadata of a map file (already verified by its checksum, so a problem here
    is a map written by something else, or edited): one line naming the file."""
    try:
        dim = ranged(metadata["descriptor_dim"], "descriptor_dim")
        hnsw = metadata["hnsw"]
        params = {name: hnsw[name] for name in ("M", "ef_construction", "ef")}
        params = INDEX_KINDS[HNSWLIB].checked_params(params, from_file=True)
        sources = metadata.get("sources", [])
        if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
            raise TypeError("sources is not a list of objects")
        records, record_sources = _parse_records(metadata["records"], len(sources))
        next_id = whole(metadata["next_id"], "next_id", 0)
        fingerprint = metadata["fingerprint"]
        model = metadata.get("model") or {}
        if not isinstance(fingerprint, str) or not fingerprint or not isinstance(model, dict):
            raise TypeError("fingerprint must be a string and model an object")
        if records and (records[-1].id >= next_id):  # type: ignore[operator]
            raise ValueError(f"record id {records[-1].id} is not below next_id {next_id}")
    except (KeyError, TypeError, ValueError, EdgeVPRError) as exc:
        raise EdgeVPRError(f"place map {path} has broken metadata ({exc})") from None
    return MapContents(
        dim,
        fingerprint,
        params,
        records,
        np.asarray(record_sources, np.int32),
        next_id,
        dict(model),
        str(metadata.get("created", "")),
        sources,
    )


def _parse_records(items: Any, sources: int) -> tuple[list[PlaceRecord], list[int]]:
    """Records in increasing id order, and each one's source (-1: not recorded)."""
    if not isinstance(items, list):
        raise TypeError("records is not a list")
    records: list[PlaceRecord] = []
    record_sources: list[int] = []
    for item in items:
        if not isinstance(item, dict):
            raise TypeError("a record is not an object")
        item = dict(item)
        source = item.pop("source", None)
        record = PlaceRecord.from_dict(item)
        if record.id is None or (records and record.id <= records[-1].id):  # type: ignore[operator]
            raise ValueError(f"record id {record.id} is missing, negative or out of order")
        if source is not None and whole(source, "source") not in range(sources):
            raise ValueError(f"record {record.id} names source {source}, which is absent")
        records.append(record)
        record_sources.append(-1 if source is None else source)
    return records, record_sources
