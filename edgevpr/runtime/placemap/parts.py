"""What a place map is made of (``MapParts``: what ``persist`` reads and writes), how a new
one is checked and assembled, and what a query returns (``Neighbours``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgevpr.errors import EdgeVPRError
from edgevpr.provenance import utc_now
from edgevpr.runtime.checks import whole
from edgevpr.runtime.placemap.hnsw import (
    DEFAULT_EF,
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_M,
    MAX_PLACES,
    check_params,
)
from edgevpr.runtime.placemap.kinds import IndexKind, SearchIndex, index_kind
from edgevpr.runtime.placemap.mapfile import MAX_DIM
from edgevpr.runtime.placemap.place_record import PlaceRecord
from edgevpr.runtime.placemap.projection import Projection
from edgevpr.runtime.placemap.records import RecordTable
from edgevpr.runtime.placemap.vectors import VectorStore


def graph_params(params: dict[str, int]) -> dict[str, int]:
    """M, ef_construction and ef from a kind's parameters (an IVF has none: defaults)."""
    names = {"M": DEFAULT_M, "ef_construction": DEFAULT_EF_CONSTRUCTION, "ef": DEFAULT_EF}
    return {name: int(params.get(name, default)) for name, default in names.items()}


@dataclass(frozen=True)
class Neighbours:
    """The best places for one query, best first (fewer than k when a prior leaves fewer)."""

    ids: np.ndarray
    scores: np.ndarray
    records: list[PlaceRecord]
    distances_m: np.ndarray | None = None  # to the prior's position, when one was given

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class MapParts:
    """Everything a map is made of (what ``persist`` reads and writes)."""

    kind: IndexKind
    index: SearchIndex
    records: RecordTable
    store: VectorStore
    projection: Projection | None
    rerank: int
    fingerprint: str
    model: dict[str, Any]
    created: str
    next_id: int = 0
    sources: list[dict[str, Any]] | None = None


def new_parts(
    dim: int,
    fingerprint: str,
    M: int,  # noqa: N803 - the name everyone uses for HNSW's degree
    ef_construction: int,
    ef: int,
    capacity: int,
    model: dict[str, Any] | None,
    index: str,
    storage: str | None,
    projection: Projection | None,
    store: str,
    rerank: int,
    params: dict[str, int] | None,
) -> MapParts:
    """The parts of an empty map, every argument checked (see ``PlaceMap.create``)."""
    dim = whole(dim, "descriptor dimension", 1, MAX_DIM)
    if not isinstance(fingerprint, str) or not fingerprint:
        raise EdgeVPRError("a place map needs the fingerprint of the model that embeds it")
    M, ef_construction, ef = check_params(M, ef_construction, ef)
    capacity = whole(capacity, "capacity", 1, MAX_PLACES)
    rerank = whole(rerank, "rerank", 1, 100_000)
    if model is not None and not isinstance(model, dict):
        raise EdgeVPRError(f"model must be a dict, not {type(model).__name__}")
    if projection is not None and (
        not isinstance(projection, Projection) or projection.source_dim != dim
    ):
        raise EdgeVPRError(f"projection must be a Projection of {dim}-d descriptors")
    kind = index_kind(index)
    values = {"M": M, "ef_construction": ef_construction, "ef": ef, "capacity": capacity,
              "nprobe": ef, **(params or {})}  # fmt: skip
    searched = dim if projection is None else projection.dims
    built = kind.create(searched, storage, values)
    vectors = VectorStore(dim, store)
    if not vectors.keeps and not hasattr(built, "vectors"):
        raise EdgeVPRError(f"a {kind.name} map needs its descriptors stored (store f32/f16)")
    return MapParts(kind, built, RecordTable(), vectors, projection, rerank, fingerprint,
                    dict(model or {}), utc_now())  # fmt: skip
