"""What a place map is made of (``MapParts``: what ``persist`` reads and writes), how a new
one is checked and assembled, and what a query returns (``Neighbours``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgevpr.core.checks import ranged
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.provenance import utc_now
from edgevpr.runtime.placemap.kinds import IndexKind, SearchIndex, index_kind
from edgevpr.runtime.placemap.place_record import PlaceRecord
from edgevpr.runtime.placemap.projection import Projection
from edgevpr.runtime.placemap.records import RecordTable
from edgevpr.runtime.placemap.vectors import VectorStore


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


@dataclass(frozen=True)
class MapSpec:
    """How a new map is made (``PlaceMap.create``'s arguments)."""

    dim: int
    fingerprint: str
    index: str
    storage: str | None
    params: dict[str, Any]
    projection: Projection | None
    store: str
    rerank: int
    capacity: int
    model: dict[str, Any] | None


def new_parts(spec: MapSpec) -> MapParts:
    """The parts of an empty map, every argument checked (see ``PlaceMap.create``)."""
    dim = ranged(spec.dim, "descriptor_dim")
    if not isinstance(spec.fingerprint, str) or not spec.fingerprint:
        raise EdgeVPRError("a place map needs the fingerprint of the model that embeds it")
    capacity = ranged(spec.capacity, "capacity")
    rerank = ranged(spec.rerank, "rerank")
    if spec.model is not None and not isinstance(spec.model, dict):
        raise EdgeVPRError(f"model must be a dict, not {type(spec.model).__name__}")
    projection = spec.projection
    if projection is not None and (
        not isinstance(projection, Projection) or projection.source_dim != dim
    ):
        raise EdgeVPRError(f"projection must be a Projection of {dim}-d descriptors")
    kind = index_kind(spec.index)
    searched = dim if projection is None else projection.dims
    built = kind.create(searched, spec.storage, spec.params, capacity)
    vectors = VectorStore(dim, spec.store)
    if not vectors.keeps and not kind.keeps_vectors:
        raise EdgeVPRError(f"a {kind.name} map needs its descriptors stored (store f32/f16)")
    return MapParts(kind, built, RecordTable(), vectors, projection, rerank, spec.fingerprint,
                    dict(spec.model or {}), utc_now())  # fmt: skip
