"""A place map to and from its file: version 2 (``container``: sections, memory-mapped on
load) is written; version 1 (``mapfile``: JSON records and hnswlib's own file) is read.

What a version-2 file holds: the records as columns, the full-precision descriptors (unless
the map keeps none), the projection, and the index kind's own sections; the header's
metadata names the index kind, its storage and parameters, the projection and the store.
Removed places are never written; an index that still holds many of them (or any, for a
kind that cannot remove) is rebuilt from the live descriptors first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgevpr import __version__
from edgevpr.core.checks import ranged, whole
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.provenance import utc_now
from edgevpr.runtime.placemap.fileformat.container import (
    ROW_CHECKS,
    VECTORS,
    VERSION,
    MapFile,
    read_version,
    write_sections,
)
from edgevpr.runtime.placemap.fileformat.filerows import FileRows
from edgevpr.runtime.placemap.fileformat.version1 import (
    FORMAT_NAME,
    REBUILD_HINT,
    is_place_map,
    open_map,
    parse_map_metadata,
    read_map_metadata,
)
from edgevpr.runtime.placemap.kinds import HNSWLIB, TRAIN_ROWS, SearchIndex, index_kind
from edgevpr.runtime.placemap.kinds.hnswlib_index import HnswIndex
from edgevpr.runtime.placemap.parts import MapParts
from edgevpr.runtime.placemap.projection import Projection
from edgevpr.runtime.placemap.records import OPTIONAL_COLUMNS, RecordTable
from edgevpr.runtime.placemap.search import DEFAULT_RERANK
from edgevpr.runtime.placemap.vectors import NONE, STORES, VectorStore

# Rebuild an index on save when removed places are this share of what it holds.
COMPACT_SHARE = 0.25
REBUILD_CHUNK = 65536
RECORD_SECTIONS = ("ids", "sources", "zones", "floats", "path.offsets", "path.blob",
                   "path.present", "timestamp.offsets", "timestamp.blob",
                   "timestamp.present")  # fmt: skip


# ------------------------------------------------------------------ writing
def write_map_file(path: Path, parts: MapParts) -> None:
    if path.is_dir():
        raise EdgeVPRError(f"cannot write place map {path}: it is a folder")
    if path.exists() and not is_place_map(path):
        raise EdgeVPRError(f"refusing to overwrite {path}: it is not an edgevpr place map")
    index = parts.index
    held = parts.index.held()
    if held > len(parts.records) and (
        not parts.kind.removes or held - len(parts.records) >= COMPACT_SHARE * held
    ):
        index = rebuilt_index(parts)
    columns, zones = parts.records.columns(len(parts.sources or []))
    sections: dict[str, Any] = {f"records.{n}": a for n, a in columns.items()}
    if parts.store.keeps:
        sections[VECTORS], sections[ROW_CHECKS] = parts.store.section(parts.records.live_rows())
    if parts.projection is not None:
        sections.update({f"projection.{n}": a for n, a in parts.projection.arrays().items()})
    sections.update({f"index.{n}": a for n, a in index.sections().items()})
    write_sections(path, _metadata(parts, index, zones), sections)


def _metadata(parts: MapParts, index: SearchIndex, zones: list[str]) -> dict[str, Any]:
    projection = parts.projection
    return {
        "format": FORMAT_NAME,
        "format_version": VERSION,
        "edgevpr_version": __version__,
        "created": parts.created,
        "saved": utc_now(),
        "fingerprint": parts.fingerprint,
        "descriptor_dim": parts.store.dim,
        "space": "ip",
        "places": len(parts.records),
        "next_id": parts.next_id,
        "model": parts.model,
        "sources": parts.sources or [],
        "zones": zones,
        "index": {"kind": parts.kind.name, "storage": index.storage, "params": index.params()},
        "projection": None
        if projection is None
        else {"kind": projection.kind, "dims": projection.dims},
        "store": parts.store.kind,
        "rerank": parts.rerank,
    }


def rebuilt_index(parts: MapParts) -> SearchIndex:
    """A new index of the same kind over the live places only (from the stored
    descriptors, or from the index's own vectors for a map that keeps none)."""
    live = parts.records.live_ids()
    rows = parts.records.live_rows()
    dim = parts.store.dim if parts.projection is None else parts.projection.dims
    params = {k: v for k, v in parts.index.params().items() if k != "trained_rows"}
    fresh = parts.kind.create(dim, parts.index.storage, params, max(len(live), 1))

    def searched(chunk: slice) -> np.ndarray:
        if parts.store.keeps:
            vectors = parts.store.get(rows[chunk])
            return vectors if parts.projection is None else parts.projection.apply(vectors)
        return parts.index.vectors(live[chunk])

    if parts.kind.trains and len(live):
        fresh.train(searched(slice(0, min(len(live), TRAIN_ROWS))))
    for start in range(0, len(live), REBUILD_CHUNK):
        chunk = slice(start, start + REBUILD_CHUNK)
        fresh.add(searched(chunk), live[chunk], -1)
    return fresh


# ------------------------------------------------------------------ reading
def file_facts(path: Path) -> dict[str, Any]:
    """What a map file's header says (format version, dates, section sizes)."""
    version = read_version(path)
    if version == 1:
        header, metadata = read_map_metadata(path)
        sections = {"metadata": header.metadata_length, "index": header.index_length}
    else:
        mapped = MapFile(path)
        metadata = mapped.metadata
        sections = {e.name: e.length for e in mapped.entries}
    return {"format_version": version, "sections": sections,
            **{k: metadata.get(k) for k in ("created", "saved", "edgevpr_version")}}  # fmt: skip


def read_map(path: Path, verify: bool = False) -> MapParts:
    if not path.exists():
        raise EdgeVPRError(f"place map {path} does not exist")
    if not path.is_file():
        raise EdgeVPRError(f"place map {path} is not a file")
    version = read_version(path)
    if version == 1:
        return _read_version1(path)
    if version == VERSION:
        return _read_version2(path, verify)
    if version == 0:
        raise EdgeVPRError(f"{path} is not an edgevpr place map")
    if version < 0:
        raise EdgeVPRError(f"place map {path} is truncated; {REBUILD_HINT}")
    newer = "a newer edgevpr" if version > VERSION else "an older edgevpr"
    raise EdgeVPRError(
        f"place map {path} has format version {version} (made by {newer}); "
        f"this edgevpr reads versions 1 and {VERSION}"
    )


def _read_version2(path: Path, verify: bool) -> MapParts:
    where = f"place map {path}"
    mapped = MapFile(path, verify_all=verify)
    meta, sections = mapped.metadata, mapped.sections
    try:
        return _parts(meta, sections, mapped.rows, where)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EdgeVPRError(f"{where} has broken metadata ({type(exc).__name__}: {exc})") from None
    except EdgeVPRError as exc:
        message = str(exc)
        raise EdgeVPRError(message if str(path) in message else f"{where}: {message}") from None


def _parts(
    meta: dict[str, Any], sections: dict[str, np.ndarray], rows: FileRows | None, where: str
) -> MapParts:
    if meta.get("format") != FORMAT_NAME:
        raise EdgeVPRError(f"{where} has metadata of another format")
    dim = ranged(meta["descriptor_dim"], "descriptor_dim")
    sources = meta["sources"]
    if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
        raise TypeError("sources is not a list of objects")
    fingerprint, model = meta["fingerprint"], meta["model"]
    if not isinstance(fingerprint, str) or not fingerprint or not isinstance(model, dict):
        raise TypeError("fingerprint must be a string and model an object")
    columns = {n: sections[f"records.{n}"] for n in RECORD_SECTIONS}
    columns.update({n: sections[f"records.{n}"] for n in OPTIONAL_COLUMNS
                    if f"records.{n}" in sections})  # fmt: skip
    records = RecordTable.from_columns(columns, meta["zones"], len(sources))
    next_id = whole(meta["next_id"], "next_id", 0, 2**62)
    ids = records.live_ids()
    if len(ids) != meta["places"] or (len(ids) and ids[-1] >= next_id):
        raise ValueError("the records disagree with the header")
    projection = _projection(meta["projection"], sections, dim)
    store = _store(meta["store"], rows, dim, len(ids))
    described = meta["index"]
    kind = index_kind(described["kind"])
    params = described["params"]
    if not isinstance(params, dict):
        raise TypeError("index parameters must be an object")
    searched = dim if projection is None else projection.dims
    index_sections = {n[len("index."):]: a for n, a in sections.items() if n.startswith("index.")}
    index = kind.load(index_sections, searched, described["storage"], params, where)
    if not np.array_equal(np.sort(index.labels()), ids):
        raise EdgeVPRError(f"{where} is inconsistent: its index holds other places than its "
                           f"records; {REBUILD_HINT}")  # fmt: skip
    rerank = ranged(meta["rerank"], "rerank")
    return MapParts(kind, index, records, store, projection, rerank, fingerprint, dict(model),
                    str(meta.get("created", "")), next_id, list(sources))  # fmt: skip


def _projection(meta: Any, sections: dict[str, np.ndarray], dim: int) -> Projection | None:
    if meta is None:
        return None
    arrays = {n: sections[f"projection.{n}"] for n in ("basis", "mean", "scale")}
    projection = Projection.from_arrays(meta["kind"], arrays, dim)
    if projection.dims != meta["dims"]:
        raise ValueError("the projection's size disagrees with the header")
    return projection


def _store(kind: Any, rows: FileRows | None, dim: int, places: int) -> VectorStore:
    if kind == NONE:
        if rows is not None:
            raise ValueError("descriptors are stored in a map that says it keeps none")
        return VectorStore(dim, NONE)
    if kind not in STORES:
        raise ValueError(f"unknown descriptor store {kind!r}")
    if rows is None or rows.shape != (places, dim):
        raise ValueError("the stored descriptors do not fit the records")
    return VectorStore(dim, kind, rows)


def _read_version1(path: Path) -> MapParts:
    """A version-1 file: JSON records and hnswlib's file (copied out to be read); its
    descriptors are read back from hnswlib into a float32 store."""
    with open_map(path) as (metadata, index_path):
        contents = parse_map_metadata(metadata, path)
        where = f"place map {path}"
        index = HnswIndex.load_file(
            index_path, contents.dim, contents.params, len(contents.records), where
        )
    ids = np.asarray([r.id for r in contents.records], np.int64)
    if not np.isin(ids, index.labels()).all() or len(ids) > index.held():
        raise EdgeVPRError(f"{where} is inconsistent: records and index disagree")
    records = RecordTable()
    records.append(ids, contents.records, contents.sources_of_records)
    store = VectorStore(contents.dim, "f32")
    store.append(index.vectors(ids))
    return MapParts(index_kind(HNSWLIB), index, records, store, None, DEFAULT_RERANK,
                    contents.fingerprint, contents.model, contents.created, contents.next_id,
                    contents.sources)  # fmt: skip
