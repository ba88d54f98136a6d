"""The hnswlib index of a place map: inner product on unit descriptors, place ids as labels.

One small interface (add, remove, search, vectors, save, load) that the place map uses, so
other index kinds can stand beside it. Not thread-safe by itself: hnswlib may search
concurrently but not while it inserts, resizes or changes ``ef``, so the place map's
readers-writer lock guards every call.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import hnswlib
import numpy as np

from edgevpr.errors import EdgeVPRError
from edgevpr.runtime.checks import whole
from edgevpr.runtime.placemap.hnsw_file import (
    HEADER,
    BrokenIndex,
    IndexLayout,
    check_graph,
    check_layout,
    read_layout,
)

DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 200
# Measured on corridor and nordland64 (tests/test_runtime_model.py): ef=64 already gives
# top-1 equal to exact search on every query there; 128 leaves margin for 100k-place maps
# at about twice the query time of ef=64 (3-4 ms at ef=64 over 100k x 4096-d measured on
# two EPYC cores).
DEFAULT_EF = 128
MAX_PLACES = 2**32 - 2  # hnswlib numbers elements with 32-bit ids


class FewerThanK(Exception):
    """hnswlib found fewer than k live places in its walk (deletions or a narrow filter
    cut the graph): the caller answers exactly instead."""


def check_params(M: int, ef_construction: int, ef: int) -> tuple[int, int, int]:
    return (
        whole(M, "M", 2, 512),
        whole(ef_construction, "ef_construction", 1, 100_000),
        whole(ef, "ef", 1, 100_000),
    )


def index_bytes(dim: int, M: int, places: int) -> int:
    """What hnswlib allocates up front for ``places``: per place the vector, 2M level-0
    links, their count, the label, and a lock (its upper levels are allocated later)."""
    return places * (4 * dim + 4 * 2 * M + 4 + 8 + 64)


def physical_memory() -> int:
    """Bytes of RAM on this machine (0 where unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class HnswIndex:
    """An hnswlib graph over unit vectors whose labels are place ids."""

    kind = "hnsw"

    def __init__(self, index: hnswlib.Index, dim: int, M: int, ef_construction: int, ef: int):
        self._index = index
        self.dim = dim
        self.M = M
        self.ef_construction = ef_construction
        self.ef = ef
        index.set_ef(ef)

    @classmethod
    def create(cls, dim: int, M: int, ef_construction: int, ef: int, capacity: int) -> HnswIndex:
        """An empty index with room for ``capacity``; refused in one line when that would
        not fit in this machine's memory (hnswlib would die in ``std::bad_alloc``)."""
        needed, available = index_bytes(dim, M, capacity), physical_memory()
        if available and needed > available:
            raise EdgeVPRError(
                f"room for {capacity:,} places of {dim}-d needs {needed / 2**30:.1f} GiB, more "
                f"than this machine's {available / 2**30:.1f} GiB of memory"
            )
        index = hnswlib.Index(space="ip", dim=dim)
        try:
            index.init_index(
                max_elements=capacity,
                M=M,
                ef_construction=ef_construction,
                allow_replace_deleted=True,
            )
        except (MemoryError, RuntimeError) as exc:
            raise EdgeVPRError(f"cannot make room for {capacity:,} places: {exc}") from None
        return cls(index, dim, M, ef_construction, ef)

    @classmethod
    def load(
        cls, path: Path, dim: int, params: dict[str, int], places: int, where: str
    ) -> HnswIndex:
        """Read an index section written by :meth:`save` for a map of ``places`` places,
        every link checked before hnswlib sees it (see ``hnsw_file``)."""
        M, ef_construction, ef = params["M"], params["ef_construction"], params["ef"]
        layout = checked_layout(path, dim, M, ef_construction, places, where)
        index = hnswlib.Index(space="ip", dim=dim)
        try:
            # room for what is stored, not what the file asks for: growing is ours to do
            index.load_index(str(path), max_elements=layout.count, allow_replace_deleted=True)
        except (RuntimeError, MemoryError) as exc:
            raise EdgeVPRError(f"{where} has a broken index ({exc})") from None
        return cls(index, dim, M, ef_construction, ef)

    def save(self, path: Path) -> None:
        self._index.save_index(str(path))

    # ------------------------------------------------------------------ facts
    @property
    def capacity(self) -> int:
        return self._index.get_max_elements()

    @property
    def stored(self) -> int:
        """Elements in the graph, removed ones included."""
        return self._index.element_count

    def labels(self) -> set[int]:
        return set(self._index.get_ids_list())

    def params(self) -> dict[str, int]:
        return {"M": self.M, "ef_construction": self.ef_construction, "ef": self.ef}

    def set_ef(self, ef: int) -> None:
        self._index.set_ef(ef)
        self.ef = ef

    # ------------------------------------------------------------------ changes
    def add(self, vectors: np.ndarray, ids: np.ndarray, num_threads: int = -1) -> None:
        needed = self._index.get_current_count() + len(ids)
        capacity = self._index.get_max_elements()
        if needed > capacity:
            self._index.resize_index(max(needed, 2 * capacity))
        self._index.add_items(vectors, ids, num_threads=num_threads, replace_deleted=True)

    def remove(self, ids: np.ndarray) -> None:
        for place_id in ids.tolist():
            self._index.mark_deleted(place_id)

    # ------------------------------------------------------------------ search
    def search(
        self, queries: np.ndarray, k: int, allowed: Callable[[int], bool] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the k best per query; ``FewerThanK`` when the walk found fewer."""
        try:
            labels, distances = self._index.knn_query(queries, k=k, filter=allowed)
        except RuntimeError:
            raise FewerThanK from None
        return labels.astype(np.int64), (1.0 - distances).astype(np.float32)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids``, as float32 rows."""
        if len(ids) == 0:
            return np.zeros((0, self.dim), np.float32)
        stored = np.asarray(self._index.get_items(ids), dtype=np.float32)
        return stored.reshape(len(ids), self.dim)


def checked_layout(
    path: Path, dim: int, M: int, ef_construction: int, places: int, where: str
) -> IndexLayout:
    """The whole index file checked against the map's metadata before hnswlib may read it:
    hnswlib takes the vector size from the caller and follows links as they are."""
    with open(path, "rb") as fh:
        layout = check_head(fh.read(HEADER.size), dim, M, ef_construction, places, where)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    try:
        check_graph(data, layout)
    except BrokenIndex as exc:
        raise EdgeVPRError(f"{where} has a broken index ({exc})") from None
    return layout


def check_head(
    head: bytes, dim: int, M: int, ef_construction: int, places: int, where: str
) -> IndexLayout:
    """The index header (its first ``HEADER.size`` bytes) against the map's metadata."""
    try:
        layout = read_layout(head)
        check_layout(layout, dim, M, ef_construction)
        if layout.count < places:
            raise BrokenIndex(f"{layout.count} elements for {places} places")
    except BrokenIndex as exc:
        raise EdgeVPRError(
            f"{where} is inconsistent: its index does not fit its metadata ({exc})"
        ) from None
    return layout
