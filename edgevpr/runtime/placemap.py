"""The place map: an hnswlib graph over unit descriptors plus what is known of each place.

Inner product on unit vectors is cosine similarity, so a score is in [-1, 1] and higher is
closer. Every descriptor is L2-normalised on the way in (an FP16 engine's output is a hair off
unit length). Places get map-assigned integer ids that are never reused, so a removed place
can never be confused with a later one.

Concurrency: any number of threads may query while one thread adds or removes places.
Queries share a readers-writer lock; mutations take it exclusively in chunks of
``ADD_CHUNK`` places, so a long insertion delays a query by one chunk at most.
"""

from __future__ import annotations

import numbers
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from edgevpr import __version__
from edgevpr.errors import EdgeVPRError
from edgevpr.provenance import utc_now
from edgevpr.runtime.checks import file_path, real, shown, whole
from edgevpr.runtime.geo import (
    GeoPrior,
    PlaceCoordinates,
    check_latlon,
    check_prior,
    distances_m,
    is_utm_zone,
)
from edgevpr.runtime.hnsw_file import HEADER as HNSW_HEADER
from edgevpr.runtime.hnsw_file import (
    BrokenIndex,
    IndexLayout,
    check_graph,
    check_layout,
    read_layout,
)
from edgevpr.runtime.mapfile import FORMAT_NAME, FORMAT_VERSION, open_map, write_map
from edgevpr.runtime.rwlock import ReadWriteLock

DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 200
# Measured on corridor and nordland64 (tests/test_runtime_model.py): ef=64 already gives
# top-1 equal to exact search on every query there; 128 leaves margin for 100k-place maps
# at about twice the query time of ef=64 (SPEC §5: 3-4 ms at ef=64 over 100k x 4096-d).
DEFAULT_EF = 128
INITIAL_CAPACITY = 1024
MAX_DIM = 65536
MAX_PLACES = 2**32 - 2  # hnswlib numbers elements with 32-bit ids
ADD_CHUNK = 256
# Below this many floats (candidates x dimension) a geo-prior query is answered by exact
# search over the candidates in range: exact, and cheaper than a filtered graph walk.
EXACT_PRIOR_BUDGET = 1 << 22


@dataclass(frozen=True)
class PlaceRecord:
    """What is known about one reference image. ``id`` is assigned by the map."""

    path: str | None = None
    east: float | None = None
    north: float | None = None
    lat: float | None = None
    lon: float | None = None
    utm_zone: str | None = None
    heading: float | None = None
    timestamp: float | str | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            object.__setattr__(self, "path", str(file_path(self.path, "place path")))
        if self.id is not None:
            object.__setattr__(self, "id", whole(self.id, "place id", 0))
        label = self.path or self.id
        for name in ("east", "north", "lat", "lon", "heading"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, real(value, f"place {label}: {name}"))
        if self.utm_zone is not None and (
            not isinstance(self.utm_zone, str) or not is_utm_zone(self.utm_zone)
        ):
            zone = shown(self.utm_zone)
            raise EdgeVPRError(f"place {label}: {zone} is not a UTM zone (e.g. 32V)")
        if isinstance(self.timestamp, numbers.Real) and not isinstance(self.timestamp, bool):
            if not isinstance(self.timestamp, int):
                object.__setattr__(self, "timestamp", real(self.timestamp, "timestamp"))
        elif self.timestamp is not None and not isinstance(self.timestamp, str):
            raise EdgeVPRError(f"place {label}: timestamp must be a number or a string")
        if (self.east is None) != (self.north is None):
            raise EdgeVPRError(f"place {label}: give both east and north, or neither")
        if (self.lat is None) != (self.lon is None):
            raise EdgeVPRError(f"place {label}: give both lat and lon, or neither")
        if self.lat is not None:
            check_latlon(self.lat, self.lon, f"place {label}:")  # type: ignore[arg-type]
        if self.heading is not None and not 0.0 <= self.heading < 360.0:
            raise EdgeVPRError(f"place {label}: heading {self.heading} is not in [0, 360) degrees")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlaceRecord:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise EdgeVPRError(f"unknown place fields: {', '.join(sorted(unknown))}")
        return cls(**data)


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
class _GeoColumns:
    ids: np.ndarray
    coordinates: PlaceCoordinates


@dataclass
class _HnswParams:
    M: int
    ef_construction: int
    ef: int


def _check_hnsw_params(M: int, ef_construction: int, ef: int) -> tuple[int, int, int]:
    return (
        whole(M, "M", 2, 512),
        whole(ef_construction, "ef_construction", 1, 100_000),
        whole(ef, "ef", 1, 100_000),
    )


def index_bytes(dim: int, M: int, places: int) -> int:
    """What hnswlib allocates up front for ``places``: per place the vector, 2M level-0
    links, their count, the label, and a lock (its upper levels are allocated later)."""
    return places * (4 * dim + 4 * 2 * M + 4 + 8 + 64)


def _new_index(dim: int, M: int, ef_construction: int, capacity: int) -> hnswlib.Index:
    """An empty hnswlib index with room for ``capacity``; refused in one line when that would
    not fit in this machine's memory (hnswlib would die in ``std::bad_alloc``)."""
    needed, available = index_bytes(dim, M, capacity), physical_memory()
    if available and needed > available:
        raise EdgeVPRError(
            f"room for {capacity:,} places of {dim}-d needs {needed / 2**30:.1f} GiB, more than "
            f"this machine's {available / 2**30:.1f} GiB of memory"
        )
    index = hnswlib.Index(space="ip", dim=dim)
    try:
        index.init_index(
            max_elements=capacity, M=M, ef_construction=ef_construction, allow_replace_deleted=True
        )
    except (MemoryError, RuntimeError) as exc:
        raise EdgeVPRError(f"cannot make room for {capacity:,} places: {exc}") from None
    return index


def physical_memory() -> int:
    """Bytes of RAM on this machine (0 where unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class PlaceMap:
    """Create with :meth:`create` or :meth:`load`."""

    def __init__(
        self,
        index: hnswlib.Index,
        descriptor_dim: int,
        fingerprint: str,
        params: _HnswParams,
        records: dict[int, PlaceRecord],
        next_id: int,
        model: dict[str, Any],
        created: str,
        source: Path | None = None,
        sources: list[dict[str, Any]] | None = None,
        source_of: dict[int, int] | None = None,
    ) -> None:
        self._index = index
        self._dim = descriptor_dim
        self._fingerprint = fingerprint
        self._params = params
        self._records = records
        self._next_id = next_id
        self._model = model
        self._created = created
        self._source = source
        # which exported model (file, precision) embedded each place: a map may be built from
        # the FP32 model and extended with the INT8 one of the same checkpoint
        self._sources = sources if sources is not None else []
        self._source_of = source_of if source_of is not None else {}
        self._lock = ReadWriteLock()
        self._geo: _GeoColumns | None = None
        self._index.set_ef(params.ef)

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

        Example::

            place_map = PlaceMap.create(embedder.descriptor_dim, embedder.fingerprint)
            ids = place_map.add(embedder.embed_paths(paths), [PlaceRecord(path=str(p))
                                                              for p in paths])
            place_map.save("route.vprmap")
        """
        dim = whole(dim, "descriptor dimension", 1, MAX_DIM)
        if not isinstance(fingerprint, str) or not fingerprint:
            raise EdgeVPRError("a place map needs the fingerprint of the model that embeds it")
        M, ef_construction, ef = _check_hnsw_params(M, ef_construction, ef)
        capacity = whole(capacity, "capacity", 1, MAX_PLACES)
        if model is not None and not isinstance(model, dict):
            raise EdgeVPRError(f"model must be a dict, not {type(model).__name__}")
        index = _new_index(dim, M, ef_construction, capacity)
        return cls(
            index,
            dim,
            fingerprint,
            _HnswParams(M, ef_construction, ef),
            {},
            0,
            dict(model or {}),
            _now(),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PlaceMap:
        """Load a map file; format version and checksum are verified before anything is
        parsed, and every problem is a one-line EdgeVPRError naming the file."""
        path = file_path(path, "place map")
        with open_map(path) as (metadata, index_path):
            contents = parse_map_metadata(metadata, path)
            layout = _checked_index(index_path, contents, path)
            index = hnswlib.Index(space="ip", dim=contents.dim)
            try:
                # room for what is stored, not what the file asks for: growing is ours to do
                index.load_index(
                    str(index_path), max_elements=layout.count, allow_replace_deleted=True
                )
            except (RuntimeError, MemoryError) as exc:
                raise EdgeVPRError(f"place map {path} has a broken index ({exc})") from None
        _check_consistency(index, contents.records, contents.next_id, path)
        return cls(
            index,
            contents.dim,
            contents.fingerprint,
            contents.params,
            contents.records,
            contents.next_id,
            contents.model,
            contents.created,
            path,
            contents.sources,
            contents.source_of,
        )

    # ---------------------------------------------------------------- properties
    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def descriptor_dim(self) -> int:
        return self._dim

    @property
    def M(self) -> int:  # noqa: N802 - the name everyone uses for HNSW's degree
        return self._params.M

    @property
    def ef_construction(self) -> int:
        return self._params.ef_construction

    @property
    def ef(self) -> int:
        return self._params.ef

    @property
    def capacity(self) -> int:
        return self._index.get_max_elements()

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
            return np.fromiter(sorted(self._records), dtype=np.int64, count=len(self._records))

    def record(self, place_id: int) -> PlaceRecord:
        try:
            return self._records[whole(place_id, "place id")]
        except KeyError:
            raise EdgeVPRError(f"no place with id {place_id} in this map") from None

    def sources(self) -> list[dict[str, Any]]:
        """Each exported model that embedded places of this map (file, precision, ...) with
        how many of the map's places it embedded (``places``)."""
        with self._lock.reading():
            counts = np.bincount(
                np.fromiter(self._source_of.values(), np.int64, len(self._source_of)),
                minlength=len(self._sources),
            )
            return [{**s, "places": int(n)} for s, n in zip(self._sources, counts, strict=True)]

    def source_of(self, place_id: int) -> dict[str, Any] | None:
        """The exported model that embedded a place (None when the map does not know)."""
        index = self._source_of.get(whole(place_id, "place id"))
        return None if index is None else dict(self._sources[index])

    def records(self) -> list[PlaceRecord]:
        with self._lock.reading():
            return [self._records[i] for i in sorted(self._records)]

    def descriptors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored (unit) descriptors of the given places."""
        ids = place_ids(ids)
        with self._lock.reading():
            self._require_known(ids)
            return self._vectors(ids)

    # ---------------------------------------------------------------- mutation
    def set_ef(self, ef: int) -> None:
        """Search breadth: higher is more exact and slower (hnswlib uses max(ef, k))."""
        _, _, ef = _check_hnsw_params(self.M, self.ef_construction, ef)
        with self._lock.writing():
            self._index.set_ef(ef)
            self._params.ef = ef

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
        rows = self._records_for(vectors.shape[0], records)
        num_threads = whole(num_threads, "num_threads", -1)
        if source is not None and not isinstance(source, dict):
            raise EdgeVPRError(f"source must be a dict, not {type(source).__name__}")
        with self._lock.writing():
            ids = np.arange(self._next_id, self._next_id + len(rows), dtype=np.int64)
            self._next_id += len(rows)
            if source is not None:
                if source not in self._sources:
                    self._sources.append(dict(source))
                where = self._sources.index(source)
                self._source_of.update(dict.fromkeys(ids.tolist(), where))
        for start in range(0, len(rows), ADD_CHUNK):
            stop = min(start + ADD_CHUNK, len(rows))
            with self._lock.writing():
                self._grow_for(stop - start)
                self._index.add_items(
                    vectors[start:stop],
                    ids[start:stop],
                    num_threads=num_threads,
                    replace_deleted=True,
                )
                for place_id, row in zip(ids[start:stop].tolist(), rows[start:stop], strict=True):
                    self._records[place_id] = replace(row, id=place_id)
                self._geo = None
        return ids

    def remove(self, ids: Sequence[int] | np.ndarray) -> None:
        """Remove places by id (all or none: unknown ids are an error, nothing changes)."""
        unique = np.unique(place_ids(ids))
        with self._lock.writing():
            self._require_known(unique)
            for place_id in unique.tolist():
                self._index.mark_deleted(place_id)
                del self._records[place_id]
                self._source_of.pop(place_id, None)
            self._geo = None

    # ---------------------------------------------------------------- search
    def search(self, descriptors: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Bulk top-k without records: (ids, scores), each (n_queries, min(k, len(self)))."""
        queries = self._unit_rows(descriptors, "query")
        _check_k(k)
        with self._lock.reading():
            live = len(self._records)
            if live == 0:
                empty = (len(queries), 0)
                return np.zeros(empty, np.int64), np.zeros(empty, np.float32)
            return self._knn(queries, min(k, live))

    def query(
        self, descriptors: np.ndarray, k: int = 5, prior: GeoPrior | None = None
    ) -> list[Neighbours]:
        """Top-k places for each descriptor, best first, with scores and records.

        With a ``prior`` only places within its radius are candidates; when fewer than k are
        in range, fewer are returned (none at all when none is in range).
        """
        queries = self._unit_rows(descriptors, "query")
        _check_k(k)
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
        geo = self._geo_columns()
        distance = distances_m(prior, geo.coordinates)
        in_range = np.flatnonzero(np.nan_to_num(distance, nan=np.inf) <= prior.radius_m)
        candidate_ids = geo.ids[in_range]
        distance_of = dict(zip(candidate_ids.tolist(), distance[in_range].tolist(), strict=True))
        if len(candidate_ids) == 0:
            empty = self._neighbours(np.zeros(0, np.int64), np.zeros(0), {})
            return [empty] * len(queries)
        k = min(k, len(candidate_ids))
        if len(candidate_ids) * self._dim <= EXACT_PRIOR_BUDGET:
            ids, scores = self._exact(queries, candidate_ids, k)
        else:
            allowed = np.zeros(self._next_id, dtype=bool)
            allowed[candidate_ids] = True
            ids, scores = self._knn(queries, k, lambda label: bool(allowed[label]), candidate_ids)
        return [self._neighbours(i, s, distance_of) for i, s in zip(ids, scores, strict=True)]

    def _knn(
        self,
        queries: np.ndarray,
        k: int,
        allowed: Callable[[int], bool] | None = None,
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        try:
            labels, distances = self._index.knn_query(queries, k=k, filter=allowed)
        except RuntimeError:
            # hnswlib found fewer than k live places in its walk (deletions or a narrow
            # filter cut the graph): answer those queries exactly instead.
            if candidates is None:
                candidates = np.fromiter(self._records, dtype=np.int64, count=len(self._records))
            return self._exact(queries, candidates, k)
        return labels.astype(np.int64), (1.0 - distances).astype(np.float32)

    def _exact(
        self, queries: np.ndarray, candidates: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = queries @ self._vectors(candidates).T
        # best first; ties broken by id so that the answer is deterministic
        order = np.lexsort((np.broadcast_to(candidates, scores.shape), -scores), axis=1)[:, :k]
        return candidates[order], np.take_along_axis(scores, order, axis=1).astype(np.float32)

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        if len(ids) == 0:
            return np.zeros((0, self._dim), np.float32)
        return np.asarray(self._index.get_items(ids), dtype=np.float32).reshape(len(ids), self._dim)

    def _neighbours(
        self, ids: np.ndarray, scores: np.ndarray, distance_of: dict[int, float] | None = None
    ) -> Neighbours:
        id_list = ids.tolist()
        return Neighbours(
            ids=np.asarray(id_list, dtype=np.int64),
            scores=np.asarray(scores, dtype=np.float32),
            records=[self._records[i] for i in id_list],
            distances_m=None
            if distance_of is None
            else np.asarray([distance_of[i] for i in id_list], dtype=np.float64),
        )

    def _geo_columns(self) -> _GeoColumns:
        geo = self._geo
        if geo is None:  # rebuilt after a mutation; two readers may both build it, harmlessly
            ordered = [self._records[i] for i in sorted(self._records)]

            def column(name: str) -> np.ndarray:
                values = (getattr(r, name) for r in ordered)
                return np.fromiter(
                    (np.nan if v is None else v for v in values), np.float64, len(ordered)
                )

            geo = _GeoColumns(
                ids=np.fromiter((r.id for r in ordered), np.int64, len(ordered)),
                coordinates=PlaceCoordinates(
                    east=column("east"),
                    north=column("north"),
                    lat=column("lat"),
                    lon=column("lon"),
                    utm_zones=frozenset(
                        r.utm_zone for r in ordered if r.utm_zone and r.east is not None
                    ),
                ),
            )
            self._geo = geo
        return geo

    def coordinate_kind(self) -> str | None:
        """'east/north', 'lat/lon', both joined by '+', or None when no place has any."""
        with self._lock.reading():
            kinds = [
                name
                for name, present in (
                    ("east/north", any(r.east is not None for r in self._records.values())),
                    ("lat/lon", any(r.lat is not None for r in self._records.values())),
                )
                if present
            ]
        return "+".join(kinds) or None

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the map to one file atomically (temporary file, fsync, rename): readers of
        ``path`` see the old map or the new one, never a torn file."""
        path = file_path(path, "place map")
        with self._lock.reading(), tempfile.TemporaryDirectory(prefix="edgevpr-map-") as tmp:
            index_path = Path(tmp) / "index.hnsw"
            self._index.save_index(str(index_path))
            write_map(path, self._metadata(), index_path)

    def _metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "edgevpr_version": __version__,
            "created": self._created,
            "saved": _now(),
            "fingerprint": self._fingerprint,
            "descriptor_dim": self._dim,
            "space": "ip",
            "hnsw": {"M": self.M, "ef_construction": self.ef_construction, "ef": self.ef},
            "next_id": self._next_id,
            "model": self._model,
            "sources": self._sources,
            "records": [self._record_dict(i) for i in sorted(self._records)],
        }

    def _record_dict(self, place_id: int) -> dict[str, Any]:
        data = self._records[place_id].to_dict()
        if place_id in self._source_of:
            data["source"] = self._source_of[place_id]
        return data

    # ---------------------------------------------------------------- validation
    def _unit_rows(self, descriptors: np.ndarray, what: str) -> np.ndarray:
        array = np.asarray(descriptors)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != self._dim:
            raise EdgeVPRError(
                f"{what} descriptors have shape {tuple(np.shape(descriptors))}; this map holds "
                f"{self._dim}-d descriptors"
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise EdgeVPRError(f"{what} descriptors must be floating point, not {array.dtype}")
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise EdgeVPRError(f"{what} descriptors contain NaN or infinity")
        norms = np.linalg.norm(array, axis=1)
        if (norms < 1e-12).any():
            raise EdgeVPRError(f"{what} descriptor {int(np.argmin(norms))} is all zeros")
        return np.ascontiguousarray(array / norms[:, None])

    @staticmethod
    def _records_for(
        count: int, records: Iterable[PlaceRecord | dict[str, Any]] | None
    ) -> list[PlaceRecord]:
        if records is None:
            return [PlaceRecord()] * count
        if isinstance(records, (PlaceRecord, dict, str, bytes)):
            raise EdgeVPRError("records must be a list with one PlaceRecord (or dict) per place")
        try:
            items = list(records)
        except TypeError:
            raise EdgeVPRError(f"records must be a list, not {type(records).__name__}") from None
        rows = [_as_record(r) for r in items]
        if len(rows) != count:
            raise EdgeVPRError(f"{count} descriptors but {len(rows)} place records")
        return rows

    def _require_known(self, ids: np.ndarray) -> None:
        unknown = [i for i in ids.tolist() if i not in self._records]
        if unknown:
            shown = ", ".join(map(str, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
            raise EdgeVPRError(f"no place with id {shown} in this map")

    def _grow_for(self, count: int) -> None:
        needed = self._index.get_current_count() + count
        capacity = self._index.get_max_elements()
        if needed > capacity:
            self._index.resize_index(max(needed, 2 * capacity))


def _check_k(k: int) -> None:
    whole(k, "k", 1)


def place_ids(ids: Any) -> np.ndarray:
    """Place ids given as one id, a list or an array -> a 1-D int64 array (one-line error
    for anything that is not whole numbers)."""
    if isinstance(ids, (str, bytes, dict)):
        raise EdgeVPRError(f"place ids must be whole numbers, not {shown(ids)}")
    try:
        array = np.asarray(ids)
    except ValueError:
        raise EdgeVPRError("place ids must be a flat list of whole numbers") from None
    if array.dtype == object:
        array = np.asarray([whole(v, "place id") for v in array.ravel()], dtype=np.int64)
    elif array.size and (array.dtype == bool or not np.issubdtype(array.dtype, np.integer)):
        raise EdgeVPRError(f"place ids must be whole numbers, not {shown(ids)}")
    return array.astype(np.int64).ravel()


def _as_record(item: Any) -> PlaceRecord:
    if isinstance(item, PlaceRecord):
        return item
    if isinstance(item, dict):
        return PlaceRecord.from_dict(item)
    raise EdgeVPRError(f"a place record must be a PlaceRecord or a dict, not {type(item).__name__}")


@dataclass
class MapContents:
    """A map file's metadata, checked: everything but the graph itself."""

    dim: int
    fingerprint: str
    params: _HnswParams
    records: dict[int, PlaceRecord]
    next_id: int
    model: dict[str, Any]
    created: str
    sources: list[dict[str, Any]]
    source_of: dict[int, int]


def parse_map_metadata(metadata: dict[str, Any], path: Path) -> MapContents:
    """Check the metadata of a map file (already verified by its checksum, so a problem here
    is a map written by something else, or edited): one line naming the file."""
    try:
        dim = _whole(metadata["descriptor_dim"], "descriptor_dim")
        hnsw = metadata["hnsw"]
        params = _HnswParams(
            _whole(hnsw["M"], "M"),
            _whole(hnsw["ef_construction"], "ef_construction"),
            _whole(hnsw["ef"], "ef"),
        )
        if not 1 <= dim <= MAX_DIM:
            raise ValueError(f"descriptor_dim {dim} is out of range")
        _check_hnsw_params(params.M, params.ef_construction, params.ef)
        if not isinstance(metadata["records"], list):
            raise TypeError("records is not a list")
        sources = metadata.get("sources", [])
        if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
            raise TypeError("sources is not a list of objects")
        records, source_of = {}, {}
        for item in metadata["records"]:
            if not isinstance(item, dict):
                raise TypeError("a record is not an object")
            item = dict(item)
            source = item.pop("source", None)
            record = PlaceRecord.from_dict(item)
            if record.id is None or record.id < 0 or record.id in records:
                raise ValueError(f"record id {record.id} is missing, negative or repeated")
            records[record.id] = record
            if source is not None:
                if _whole(source, "source") not in range(len(sources)):
                    raise ValueError(f"record {record.id} names source {source}, which is absent")
                source_of[record.id] = source
        next_id = _whole(metadata["next_id"], "next_id")
        fingerprint = metadata["fingerprint"]
        model = metadata.get("model") or {}
        if not isinstance(fingerprint, str) or not fingerprint or not isinstance(model, dict):
            raise TypeError("fingerprint must be a string and model an object")
    except (KeyError, TypeError, ValueError, EdgeVPRError) as exc:
        raise EdgeVPRError(f"place map {path} has broken metadata ({exc})") from None
    return MapContents(
        dim,
        fingerprint,
        params,
        records,
        next_id,
        dict(model),
        str(metadata.get("created", "")),
        sources,
        source_of,
    )


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number, not {value!r}")
    return value


def check_index_head(head: bytes, contents: MapContents, path: Path) -> IndexLayout:
    """The index section's header (its first ``hnsw_file.HEADER.size`` bytes) against the
    metadata: hnswlib takes the vector size from the caller, so an index of other dimensions
    would load and be read out of bounds."""
    try:
        layout = read_layout(head)
        params = contents.params
        check_layout(layout, contents.dim, params.M, params.ef_construction)
        if layout.count < len(contents.records):
            raise BrokenIndex(f"{layout.count} elements for {len(contents.records)} places")
    except BrokenIndex as exc:
        raise EdgeVPRError(
            f"place map {path} is inconsistent: its index does not fit its metadata ({exc})"
        ) from None
    return layout


def _checked_index(index_path: Path, contents: MapContents, path: Path) -> IndexLayout:
    """The whole index section checked (see :mod:`edgevpr.runtime.hnsw_file`) before
    hnswlib may read it."""
    with open(index_path, "rb") as fh:
        layout = check_index_head(fh.read(HNSW_HEADER.size), contents, path)
    index = np.memmap(index_path, dtype=np.uint8, mode="r")
    try:
        check_graph(index, layout)
    except BrokenIndex as exc:
        raise EdgeVPRError(f"place map {path} has a broken index ({exc})") from None
    return layout


def _check_consistency(
    index: hnswlib.Index, records: dict[int, PlaceRecord], next_id: int, path: Path
) -> None:
    labels = set(index.get_ids_list())
    missing = [i for i in records if i not in labels]
    if missing or any(i >= next_id for i in records) or len(records) > index.element_count:
        raise EdgeVPRError(f"place map {path} is inconsistent: records and index disagree")


def _now() -> str:
    return utc_now()
