"""The place map: reference descriptors in an index, what is known of each place, and the
model that embedded them.

Inner product on unit vectors is cosine similarity, so a score is in [-1, 1] and higher is
closer. Every descriptor is L2-normalised on the way in (an FP16 engine's output is a hair off
unit length). Places get map-assigned integer ids that are never reused, so a removed place
can never be confused with a later one.

A map is an index of one kind (``kinds``: hnswlib, usearch, faiss) over the descriptors, or
over a projection of them (``projection``: PCA to fewer dimensions), a store of the
full-precision descriptors that re-ranks what the index proposes (``vectors``), and the
records (``records``); ``search`` answers queries from these parts, ``persist`` writes and
reads them.

Concurrency: any number of threads may query while one thread adds or removes places.
Queries share a readers-writer lock; mutations take it exclusively in chunks of
``ADD_CHUNK`` places, so a long insertion delays a query by one chunk at most.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from edgevpr.core.checks import file_path, place_ids, ranged, unit_rows, whole
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.files import exclusive, file_identity
from edgevpr.core.geo import GeoPrior, check_prior
from edgevpr.runtime.placemap.kinds import FAISS_IVF
from edgevpr.runtime.placemap.parts import MapParts, MapSpec, Neighbours, new_parts
from edgevpr.runtime.placemap.place_record import PlaceRecord, records_for
from edgevpr.runtime.placemap.projection import Projection
from edgevpr.runtime.placemap.records import NO_SOURCE
from edgevpr.runtime.placemap.rwlock import ReadWriteLock
from edgevpr.runtime.placemap.search import (
    DEFAULT_RERANK,
    Found,
    MapSearch,
    MetricFrame,
    metric_frame,
)

DEFAULT_K = 5  # places a query lists
ADD_CHUNK = 256
INITIAL_CAPACITY = 1024
# The default index kind, chosen by measurement (2 cores): at 100k places of 4096-d
# descriptors (PCA 256, exact re-ranking) faiss's inverted lists over 8-bit codes reached
# top-1 agreement 0.995 with exact float search at 0.85 ms, where the HNSW kinds at the same
# projection needed 0.85-0.96 ms for 0.975 and hnswlib over float vectors 2.9 ms for 0.945;
# they load in 0.18 s with 88 MB of their own memory, and filter by a geo prior natively.
DEFAULT_INDEX = FAISS_IVF
DEFAULT_STORE = "f32"


class PlaceMap:
    """A map of places: create with :meth:`create` or :meth:`load`.

    Example::

        placemap = PlaceMap.create(embedder.descriptor_dim, embedder.fingerprint)
        ids = placemap.add(embedder.embed_paths(paths), [PlaceRecord(path=str(p), east=e,
                            north=n) for p, (e, n) in zip(paths, positions)])
        placemap.save("route.vprmap")
        found = PlaceMap.load("route.vprmap").query(query_descriptor, k=5,
                                                    prior=GeoPrior(e, n, 50.0))[0]
        print(found.ids, found.scores, found.records[0].path)

    A compressed map for a small board: usearch over int8 PCA-256 vectors, re-ranked from
    the full descriptors (memory-mapped from the file once saved)::

        sample = descriptors[:20000]
        placemap = PlaceMap.create(4096, fingerprint, index="usearch", storage="i8",
                                    projection=Projection.fit(sample, 256))
    """

    def __init__(
        self, parts: MapParts, source: os.PathLike[str] | None = None,
        identity: tuple[int, ...] | None = None,
    ) -> None:  # fmt: skip
        self._parts = parts
        self._kind, self._index = parts.kind, parts.index
        self._records, self._store = parts.records, parts.store
        self._projection = parts.projection
        self._dim = parts.store.dim
        self._fingerprint, self._model = parts.fingerprint, parts.model
        self._created = parts.created
        self._next_id = parts.next_id
        # which exported models (file, precision) embedded places: a map may be built from
        # the FP32 model and extended with the INT8 one of the same checkpoint
        self._sources: list[dict[str, Any]] = list(parts.sources or [])
        self._source = None if source is None else file_path(source, "place map")
        self._identity = identity  # of the file at ``source`` when this map was read
        self._search = MapSearch(self._kind, self._index, self._records, self._store,
                                 self._projection, parts.rerank)  # fmt: skip
        self._lock = ReadWriteLock()

    # ---------------------------------------------------------------- construction
    @classmethod
    def create(
        cls,
        dim: int,
        fingerprint: str,
        *,
        index: str = DEFAULT_INDEX,
        storage: str | None = None,
        projection: Projection | None = None,
        store: str = DEFAULT_STORE,
        rerank: int = DEFAULT_RERANK,
        capacity: int = INITIAL_CAPACITY,
        model: dict[str, Any] | None = None,
        **params: int,
    ) -> PlaceMap:
        """An empty map for ``dim``-dimensional descriptors of the model ``fingerprint``.

        Args:
            dim: descriptor size (``Embedder.descriptor_dim``).
            fingerprint: the model's fingerprint (``Embedder.fingerprint``); a map answers
                only queries embedded by the same weights.
            index: the index kind (``kinds.INDEX_KINDS``); storage: how it holds vectors
                (default: the kind's first).
            projection: a fitted :class:`Projection` the index searches in.
            store: full-precision descriptors kept for exact re-ranking: "f32", "f16" or
                "none" (none: the index's scores are final).
            rerank: candidates the index proposes for exact re-ranking.
            capacity: places to make room for now (the map grows as needed; faiss-ivf sizes
                its lists by it).
            model: what to record about the model (``Embedder.model_summary()``).
            **params: the index kind's own parameters by name, each checked against its
                range (hnswlib, usearch, faiss-hnsw: ``M``, ``ef_construction``, ``ef``;
                faiss-ivf: ``nlist``, ``nprobe``, ``pq_bytes``); the kind's defaults fill
                the rest, and a name the kind does not take is refused.

        Returns:
            An empty :class:`PlaceMap`.
        """
        return cls(new_parts(MapSpec(dim, fingerprint, index, storage, dict(params), projection,
                                     store, rerank, capacity, model)))  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike[str], verify: bool = False) -> PlaceMap:
        """Load a map file: the header and every section's checksum verified before anything
        is parsed, each index structure checked before its library reads it, the index's
        places compared with the records; every problem a one-line EdgeVPRError naming the
        file. Stored descriptors are verified row by row as queries read them; ``verify``
        checks them all now (see :meth:`verify`)."""
        from edgevpr.runtime.placemap.fileformat.persist import read_map

        path = file_path(path, "place map")
        before = file_identity(path)
        parts = read_map(path, verify)
        if file_identity(path) != before:
            raise EdgeVPRError(f"place map {path} changed while it was being loaded; load it again")
        return cls(parts, path, before)

    def verify(self) -> None:
        """Read every stored descriptor of the file the map was loaded from, checking each
        row against its check value and the section against its checksum (what
        ``edgevpr index verify`` does; a map of a million 4096-d places reads 16 GB)."""
        with self._lock.reading():
            self._store.verify()

    # ---------------------------------------------------------------- properties
    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def descriptor_dim(self) -> int:
        return self._dim

    @property
    def index_kind(self) -> str:
        return self._kind.name

    @property
    def storage(self) -> str:
        return self._index.storage

    @property
    def projection(self) -> Projection | None:
        return self._projection

    @property
    def store(self) -> str:
        """How full-precision descriptors are kept: "f32", "f16" or "none"."""
        return self._store.kind

    @property
    def rerank(self) -> int:
        return self._search.rerank

    def index_params(self) -> dict[str, int]:
        return self._index.params()

    @property
    def ef(self) -> int:
        """Search breadth: HNSW's ef, faiss-ivf's lists probed (see :meth:`set_ef`)."""
        return int(self._index.params()[self._kind.breadth])

    @property
    def M(self) -> int:
        """The graph degree of the HNSW kinds (0 for others)."""
        return int(self._index.params().get("M", 0))

    @property
    def ef_construction(self) -> int:
        """The build breadth of the HNSW kinds (0 for others)."""
        return int(self._index.params().get("ef_construction", 0))

    @property
    def model(self) -> dict[str, Any]:
        """What the map records of the model that embedded it (backbone, size, precision)."""
        return dict(self._model)

    @property
    def source(self) -> os.PathLike[str] | None:
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

    def drives(self) -> list[dict[str, Any]]:
        """Each drive places were taught from: name, places, span of frame order, metres."""
        with self._lock.reading():
            return self._records.drives()

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
            if self._store.keeps:
                return self._store.get(self._records.rows_of(ids))
            if self._projection is None and self._kind.keeps_vectors:
                return self._index.vectors(ids)
        raise EdgeVPRError("this map keeps only projected descriptors (built with --store none)")

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

    def positions(self) -> tuple[np.ndarray, np.ndarray, MetricFrame]:
        """(ids, N x 2 metres in one flat frame, the frame) of the live places; NaN rows
        for places without coordinates."""
        with self._lock.reading():
            ids, coordinates = self._records.coordinates()
        frame = metric_frame(coordinates)
        if frame is None:
            raise EdgeVPRError("this map mixes east/north places with lat/lon-only ones")
        return ids, frame[0].metres(coordinates), frame

    def subset(self, ids: Sequence[int] | np.ndarray) -> PlaceMap:
        """A new map of the same kind, projection and model holding only ``ids`` (with new
        ids 0..n-1, in the order given); its index is built afresh."""
        ids = place_ids(ids)
        with self._lock.reading():
            self._require_known(ids)
            rows = self._records.rows_of(ids)
            descriptors = self._store.get(rows)
            records = [r for r in self._records.records(ids)]
        part = PlaceMap.create(
            self._dim, self._fingerprint, capacity=max(len(ids), 1), model=self._model,
            index=self._kind.name, storage=self._index.storage, projection=self._projection,
            store=self._store.kind, rerank=self._search.rerank,
            **{k: v for k, v in self._kind.own(self._index.params()).items() if k != "nlist"},
        )  # fmt: skip
        stripped = [PlaceRecord.checked({**r.to_dict(), "id": None}) for r in records]
        part.add(descriptors, stripped)
        return part

    def memory_bytes(self) -> dict[str, int]:
        """What the map holds in memory, by part (mapped file pages not counted)."""
        with self._lock.reading():
            return {"index": self._index.memory_bytes(),
                    "records": self._records.rows * (8 * 7 + 64)}  # fmt: skip

    # ---------------------------------------------------------------- mutation
    def set_ef(self, ef: int) -> None:
        """Search breadth: higher is more exact and slower (HNSW's ef; faiss-ivf's nprobe)."""
        ef = ranged(ef, self._kind.breadth)
        with self._lock.writing():
            self._index.set_search_breadth(ef)

    def set_rerank(self, rerank: int) -> None:
        """Candidates the index proposes for exact re-ranking."""
        rerank = ranged(rerank, "rerank")
        with self._lock.writing():
            self._search.rerank = rerank

    def train(self, descriptors: np.ndarray) -> None:
        """Train the index on a sample of descriptors before adding places (faiss kinds
        cluster or quantise; others need nothing). Without it, the first ``add`` trains it."""
        vectors = self._unit_rows(descriptors, "training")
        searched = vectors if self._projection is None else self._projection.apply(vectors)
        with self._lock.writing():
            if self._kind.trains and not self._index.trained:
                self._index.train(searched)

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
        its record. An index that must be trained (faiss) is trained on the first call's
        descriptors.
        """
        vectors = self._unit_rows(descriptors, "added")
        rows = records_for(vectors.shape[0], records)
        num_threads = whole(num_threads, "num_threads", -1)
        if source is not None and not isinstance(source, dict):
            raise EdgeVPRError(f"source must be a dict, not {type(source).__name__}")
        searched = vectors if self._projection is None else self._projection.apply(vectors)
        with self._lock.writing():
            ids = np.arange(self._next_id, self._next_id + len(rows), dtype=np.int64)
            self._next_id += len(rows)
            where = NO_SOURCE
            if source is not None:
                if source not in self._sources:
                    self._sources.append(dict(source))
                where = self._sources.index(source)
            if self._kind.trains and not self._index.trained:
                self._index.train(searched)
        for start in range(0, len(rows), ADD_CHUNK):
            chunk = slice(start, min(start + ADD_CHUNK, len(rows)))
            with self._lock.writing():
                self._index.add(searched[chunk], ids[chunk], num_threads)
                self._store.append(vectors[chunk])
                self._records.append(ids[chunk], rows[chunk], where)
        places = len(self._records)
        if self._kind.trains and self._store.keeps and self._index.needs_rebuild(places):
            self.compact()
        return ids

    def remove(self, ids: Sequence[int] | np.ndarray) -> None:
        """Remove places by id (all or none: unknown ids are an error, nothing changes)."""
        unique = np.unique(place_ids(ids))
        with self._lock.writing():
            self._require_known(unique)
            if self._kind.removes:  # others keep removed places until compaction
                self._index.remove(unique)
            self._records.delete(unique)

    def compact(self) -> None:
        """Rebuild the index over the live places only: removed places no longer take room
        in it (``save`` then writes them nowhere)."""
        from edgevpr.runtime.placemap.fileformat.persist import rebuilt_index

        with self._lock.writing():
            self._index = rebuilt_index(self._parts_now())
            self._search.index = self._index

    def _parts_now(self) -> MapParts:
        return MapParts(self._kind, self._index, self._records, self._store, self._projection,
                        self._search.rerank, self._fingerprint, self._model, self._created,
                        self._next_id, self._sources)  # fmt: skip

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
            return self._search.knn(queries, min(k, live))

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
            if prior is not None:
                return [self._neighbours(f) for f in self._search.with_prior(queries, k, prior)]
            live = len(self._records)
            if live == 0:
                nothing = Found(np.zeros(0, np.int64), np.zeros(0, np.float32))
                return [self._neighbours(nothing)] * len(queries)
            ids, scores = self._search.knn(queries, min(k, live))
            return [self._neighbours(Found(i, s)) for i, s in zip(ids, scores, strict=True)]

    def _neighbours(self, found: Found) -> Neighbours:
        ids = np.asarray(found.ids, np.int64)
        return Neighbours(
            ids=ids,
            scores=np.asarray(found.scores, np.float32),
            records=self._records.records(ids),
            distances_m=None if found.distances_m is None else np.asarray(found.distances_m),
        )

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the map to one file atomically (temporary file, fsync, rename): readers of
        ``path`` see the old map or the new one, never a torn file. Removed places are left
        out; an index holding many of them is rebuilt first (see ``persist``).

        No work is lost to another writer: the write holds ``path``'s lock (another edgevpr
        command changing it: one EdgeVPRError line), and saving over the file this map was
        loaded from is refused when that file has changed since (another process saved
        there: load it again and redo the change)."""
        from edgevpr.runtime.placemap.fileformat.persist import write_map_file

        path = file_path(path, "place map")
        with exclusive(path, "the map on disk"), self._lock.reading():
            if self._source is not None and _same_file(path, self._source):
                if file_identity(path) != self._identity:
                    raise EdgeVPRError(
                        f"place map {path} changed on disk since this map was loaded from it "
                        "(another command saved it); load it again and redo the change"
                    )
            write_map_file(path, self._parts_now())
            if self._source is not None and _same_file(path, self._source):
                self._identity = file_identity(path)

    # ---------------------------------------------------------------- validation
    def _unit_rows(self, descriptors: np.ndarray, what: str) -> np.ndarray:
        return unit_rows(descriptors, self._dim, what)

    def _require_known(self, ids: np.ndarray) -> None:
        unknown = self._records.missing(ids)
        if unknown:
            shown_ids = ", ".join(map(str, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
            raise EdgeVPRError(f"no place with id {shown_ids} in this map")


def _same_file(path: os.PathLike[str], other: os.PathLike[str]) -> bool:
    """Whether two paths name one place (the file itself may be gone or replaced)."""
    return os.path.abspath(path) == os.path.abspath(other) or (
        os.path.exists(path) and os.path.exists(other) and os.path.samefile(path, other)
    )
