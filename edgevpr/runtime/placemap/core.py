"""The place map: reference descriptors in an index, what is known of each place, and the
model that embedded them.

Inner product on unit vectors is cosine similarity, so a score is in [-1, 1] and higher is
closer. Every descriptor is L2-normalised on the way in (an FP16 engine's output is a hair off
unit length). Places get map-assigned integer ids that are never reused, so a removed place
can never be confused with a later one.

Concurrency: any number of threads may query while one thread adds or removes places.
Queries share a readers-writer lock; mutations take it exclusively in chunks of
``ADD_CHUNK`` places, so a long insertion delays a query by one chunk at most.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.errors import EdgeVPRError
from edgevpr.provenance import utc_now
from edgevpr.runtime.checks import file_path, place_ids, unit_rows, whole
from edgevpr.runtime.geo import GeoPrior, check_prior, distances_m
from edgevpr.runtime.placemap.hnsw import (
    DEFAULT_EF,
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_M,
    MAX_PLACES,
    FewerThanK,
    HnswIndex,
    check_params,
)
from edgevpr.runtime.placemap.mapfile import (
    MAX_DIM,
    MapContents,
    map_metadata,
    open_map,
    parse_map_metadata,
    write_map,
)
from edgevpr.runtime.placemap.records import (
    NO_SOURCE,
    PlaceRecord,
    RecordTable,
    records_for,
)
from edgevpr.runtime.placemap.search import among, exact
from edgevpr.runtime.rwlock import ReadWriteLock

INITIAL_CAPACITY = 1024
DEFAULT_K = 5  # places a query lists
ADD_CHUNK = 256


@dataclass(frozen=True)
class Neighbours:
    """The best places for one query, best first (fewer than k when a prior leaves fewer)."""

    ids: np.ndarray
    scores: np.ndarray
    records: list[PlaceRecord]
    distances_m: np.ndarray | None = None  # to the prior's position, when one was given

    def __len__(self) -> int:
        return len(self.ids)


class PlaceMap:
    """A map of places: create with :meth:`create` or :meth:`load`.

    Example::

        place_map = PlaceMap.create(embedder.descriptor_dim, embedder.fingerprint)
        ids = place_map.add(embedder.embed_paths(paths), [PlaceRecord(path=str(p), east=e,
                            north=n) for p, (e, n) in zip(paths, positions)])
        place_map.save("route.vprmap")
        found = PlaceMap.load("route.vprmap").query(query_descriptor, k=5,
                                                    prior=GeoPrior(e, n, 50.0))[0]
        print(found.ids, found.scores, found.records[0].path)
    """

    def __init__(
        self,
        index: HnswIndex,
        fingerprint: str,
        model: dict[str, Any],
        created: str,
        source: Path | None = None,
    ) -> None:
        self._index = index
        self._dim = index.dim
        self._fingerprint = fingerprint
        self._records = RecordTable()
        self._next_id = 0
        self._model = model
        self._created = created
        self._source = source
        # which exported models (file, precision) embedded places: a map may be built from
        # the FP32 model and extended with the INT8 one of the same checkpoint
        self._sources: list[dict[str, Any]] = []
        self._lock = ReadWriteLock()

    # ---------------------------------------------------------------- construction
    @classmethod
    def create(
        cls,
        dim: int,
        fingerprint: str,
        M: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        ef: int = DEFAULT_EF,
        capacity: int = INITIAL_CAPACITY,
        model: dict[str, Any] | None = None,
    ) -> PlaceMap:
        """An empty map for ``dim``-dimensional descriptors of the model ``fingerprint``.

        Args:
            dim: descriptor size (``Embedder.descriptor_dim``).
            fingerprint: the model's fingerprint (``Embedder.fingerprint``); a map answers
                only queries embedded by the same weights.
            M, ef_construction, ef: HNSW degree, build breadth and search breadth.
            capacity: places to make room for now (the map grows as needed).
            model: what to record about the model (``Embedder.model_summary()``).

        Returns:
            An empty :class:`PlaceMap`.
        """
        dim = whole(dim, "descriptor dimension", 1, MAX_DIM)
        if not isinstance(fingerprint, str) or not fingerprint:
            raise EdgeVPRError("a place map needs the fingerprint of the model that embeds it")
        M, ef_construction, ef = check_params(M, ef_construction, ef)
        capacity = whole(capacity, "capacity", 1, MAX_PLACES)
        if model is not None and not isinstance(model, dict):
            raise EdgeVPRError(f"model must be a dict, not {type(model).__name__}")
        index = HnswIndex.create(dim, M, ef_construction, ef, capacity)
        return cls(index, fingerprint, dict(model or {}), utc_now())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PlaceMap:
        """Load a map file; format version and checksum are verified before anything is
        parsed, and every problem is a one-line EdgeVPRError naming the file."""
        path = file_path(path, "place map")
        with open_map(path) as (metadata, index_path):
            contents = parse_map_metadata(metadata, path)
            where = f"place map {path}"
            index = HnswIndex.load(
                index_path, contents.dim, contents.params, len(contents.records), where
            )
        loaded = cls(index, contents.fingerprint, contents.model, contents.created, path)
        loaded._restore(contents)
        return loaded

    def _restore(self, contents: MapContents) -> None:
        ids = np.asarray([r.id for r in contents.records], np.int64)
        labels = self._index.labels()
        if any(i not in labels for i in ids.tolist()) or len(ids) > self._index.stored:
            raise EdgeVPRError(
                f"place map {self._source} is inconsistent: records and index disagree"
            )
        self._records.append(ids, contents.records, contents.sources_of_records)
        self._next_id = contents.next_id
        self._sources = contents.sources

    # ---------------------------------------------------------------- properties
    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def descriptor_dim(self) -> int:
        return self._dim

    @property
    def M(self) -> int:  # noqa: N802 - the name everyone uses for HNSW's degree
        return self._index.M

    @property
    def ef_construction(self) -> int:
        return self._index.ef_construction

    @property
    def ef(self) -> int:
        return self._index.ef

    @property
    def capacity(self) -> int:
        return self._index.capacity

    @property
    def model(self) -> dict[str, Any]:
        """What the map records of the model that embedded it (backbone, size, precision)."""
        return dict(self._model)

    @property
    def source(self) -> Path | None:
        """The file this map was loaded from, if any."""
        return self._source

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, place_id: object) -> bool:
        return place_id in self._records

    def ids(self) -> np.ndarray:
        with self._lock.reading():
            return self._records.live_ids()

    def record(self, place_id: int) -> PlaceRecord:
        place_id = whole(place_id, "place id")
        with self._lock.reading():
            found = self._records.record(place_id)
        if found is None:
            raise EdgeVPRError(f"no place with id {place_id} in this map")
        return found

    def records(self) -> list[PlaceRecord]:
        with self._lock.reading():
            return self._records.records(self._records.live_ids())

    def sources(self) -> list[dict[str, Any]]:
        """Each exported model that embedded places of this map (file, precision, ...) with
        how many of the map's places it embedded (``places``)."""
        with self._lock.reading():
            counts = self._records.source_counts(len(self._sources))
            return [{**s, "places": int(n)} for s, n in zip(self._sources, counts, strict=True)]

    def source_of(self, place_id: int) -> dict[str, Any] | None:
        """The exported model that embedded a place (None when the map does not know)."""
        place_id = whole(place_id, "place id")
        with self._lock.reading():
            index = self._records.source_of(place_id)
            return None if index is None else dict(self._sources[index])

    def descriptors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored (unit) descriptors of the given places."""
        ids = place_ids(ids)
        with self._lock.reading():
            self._require_known(ids)
            return self._index.vectors(ids)

    def coordinate_kind(self) -> str | None:
        """'east/north', 'lat/lon', both joined by '+', or None when no place has any."""
        with self._lock.reading():
            return self._records.coordinate_kind()

    def without_coordinates(self, ids: Sequence[int] | np.ndarray) -> int:
        """How many of the places ``ids`` have no coordinates (a prior never selects them)."""
        ids = place_ids(ids)
        with self._lock.reading():
            self._require_known(ids)
            return self._records.without_coordinates(ids)

    # ---------------------------------------------------------------- mutation
    def set_ef(self, ef: int) -> None:
        """Search breadth: higher is more exact and slower (hnswlib uses max(ef, k))."""
        _, _, ef = check_params(self.M, self.ef_construction, ef)
        with self._lock.writing():
            self._index.set_ef(ef)

    def add(
        self,
        descriptors: np.ndarray,
        records: Iterable[PlaceRecord | dict[str, Any]] | None = None,
        num_threads: int = -1,
        source: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """Add places; returns their new ids. The capacity grows as needed.

        ``source`` says which exported model embedded them (``Embedder.model_summary()``);
        ``sources()`` reports it. Everything is validated before the map changes. Queries
        running meanwhile see the new places appear chunk by chunk, each one complete with
        its record.
        """
        vectors = self._unit_rows(descriptors, "added")
        rows = records_for(vectors.shape[0], records)
        num_threads = whole(num_threads, "num_threads", -1)
        if source is not None and not isinstance(source, dict):
            raise EdgeVPRError(f"source must be a dict, not {type(source).__name__}")
        with self._lock.writing():
            ids = np.arange(self._next_id, self._next_id + len(rows), dtype=np.int64)
            self._next_id += len(rows)
            where = NO_SOURCE
            if source is not None:
                if source not in self._sources:
                    self._sources.append(dict(source))
                where = self._sources.index(source)
        for start in range(0, len(rows), ADD_CHUNK):
            chunk = slice(start, min(start + ADD_CHUNK, len(rows)))
            with self._lock.writing():
                self._index.add(vectors[chunk], ids[chunk], num_threads)
                self._records.append(ids[chunk], rows[chunk], where)
        return ids

    def remove(self, ids: Sequence[int] | np.ndarray) -> None:
        """Remove places by id (all or none: unknown ids are an error, nothing changes)."""
        unique = np.unique(place_ids(ids))
        with self._lock.writing():
            self._require_known(unique)
            self._index.remove(unique)
            self._records.delete(unique)

    # ---------------------------------------------------------------- search
    def search(self, descriptors: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Bulk top-k without records: (ids, scores), each (n_queries, min(k, len(self)))."""
        queries = self._unit_rows(descriptors, "query")
        k = whole(k, "k", 1)
        with self._lock.reading():
            live = len(self._records)
            if live == 0:
                empty = (len(queries), 0)
                return np.zeros(empty, np.int64), np.zeros(empty, np.float32)
            return self._knn(queries, min(k, live))

    def query(
        self, descriptors: np.ndarray, k: int = DEFAULT_K, prior: GeoPrior | None = None
    ) -> list[Neighbours]:
        """Top-k places for each descriptor, best first, with scores and records.

        With a ``prior`` only places within its radius are candidates; when fewer than k are
        in range, fewer are returned (none at all when none is in range).
        """
        queries = self._unit_rows(descriptors, "query")
        k = whole(k, "k", 1)
        prior = check_prior(prior)
        with self._lock.reading():
            if prior is None:
                live = len(self._records)
                if live == 0:
                    return [self._neighbours(np.zeros(0, np.int64), np.zeros(0))] * len(queries)
                ids, scores = self._knn(queries, min(k, live))
                return [self._neighbours(i, s) for i, s in zip(ids, scores, strict=True)]
            return self._query_with_prior(queries, k, prior)

    def _query_with_prior(self, queries: np.ndarray, k: int, prior: GeoPrior) -> list[Neighbours]:
        ids, coordinates = self._records.coordinates()
        distance = distances_m(prior, coordinates)
        in_range = np.flatnonzero(np.nan_to_num(distance, nan=np.inf) <= prior.radius_m)
        candidate_ids = ids[in_range]
        distance_of = dict(zip(candidate_ids.tolist(), distance[in_range].tolist(), strict=True))
        if len(candidate_ids) == 0:
            empty = self._neighbours(np.zeros(0, np.int64), np.zeros(0), {})
            return [empty] * len(queries)
        found, scores = among(self._index, queries, candidate_ids, min(k, len(candidate_ids)))
        return [self._neighbours(i, s, distance_of) for i, s in zip(found, scores, strict=True)]

    def _knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            return self._index.search(queries, k)
        except FewerThanK:
            return exact(self._index, queries, self._records.live_ids(), k)

    def _neighbours(
        self, ids: np.ndarray, scores: np.ndarray, distance_of: dict[int, float] | None = None
    ) -> Neighbours:
        id_list = ids.tolist()
        return Neighbours(
            ids=np.asarray(id_list, dtype=np.int64),
            scores=np.asarray(scores, dtype=np.float32),
            records=self._records.records(id_list),
            distances_m=None
            if distance_of is None
            else np.asarray([distance_of[i] for i in id_list], dtype=np.float64),
        )

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the map to one file atomically (temporary file, fsync, rename): readers of
        ``path`` see the old map or the new one, never a torn file."""
        path = file_path(path, "place map")
        with self._lock.reading(), tempfile.TemporaryDirectory(prefix="edgevpr-map-") as tmp:
            index_path = Path(tmp) / "index.hnsw"
            self._index.save(index_path)
            metadata = map_metadata(
                created=self._created,
                fingerprint=self._fingerprint,
                dim=self._dim,
                params=self._index.params(),
                next_id=self._next_id,
                model=self._model,
                sources=self._sources,
                records=self._records.to_dicts(),
            )
            write_map(path, metadata, index_path)

    # ---------------------------------------------------------------- validation
    def _unit_rows(self, descriptors: np.ndarray, what: str) -> np.ndarray:
        return unit_rows(descriptors, self._dim, what)

    def _require_known(self, ids: np.ndarray) -> None:
        unknown = self._records.missing(ids)
        if unknown:
            shown_ids = ", ".join(map(str, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
            raise EdgeVPRError(f"no place with id {shown_ids} in this map")

