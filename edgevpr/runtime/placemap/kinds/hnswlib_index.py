"""The hnswlib index kind: inner product over float32 vectors, place ids as labels.

In a version-2 map file it is stored as hnswlib's own serialised state (the arrays its
pickling gives), every link checked at once before hnswlib sees it, and restored with
``__setstate__``: no temporary copy of the index, no per-element Python loop. Version-1
files (hnswlib's ``save_index`` bytes) are still read. Not thread-safe by itself: hnswlib
may search concurrently but not while it inserts, resizes or changes ``ef``, so the place
map's readers-writer lock guards every call.
"""

from __future__ import annotations

import os
from pathlib import Path

import hnswlib
import numpy as np

from edgevpr.core.checks import whole
from edgevpr.core.errors import EdgeVPRError
from edgevpr.runtime.placemap.kinds import FewerThanK, SearchIndex
from edgevpr.runtime.placemap.kinds.hnswlib_file import (
    HEADER,
    STATE_ARRAYS,
    STATE_NUMBERS,
    BrokenIndex,
    IndexLayout,
    check_graph,
    check_layout,
    check_state,
    deleted_labels,
    read_layout,
)

MAX_PLACES = 2**32 - 2  # hnswlib numbers elements with 32-bit ids


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


class HnswIndex(SearchIndex):
    """An hnswlib graph over vectors whose labels are place ids."""

    storage = "f32"

    def __init__(self, index: hnswlib.Index, dim: int, params: dict[str, int]) -> None:
        self._index = index
        self.dim = dim
        self._params = dict(params)
        # hnswlib's pickled state does not carry this flag: a restored index appends
        self.replaces_deleted = True
        self._deleted: set[int] = set()  # labels marked deleted (hnswlib has no query for it)
        index.set_ef(self._params["ef"])

    @classmethod
    def create(cls, dim: int, storage: str, params: dict[str, int], capacity: int = 1
               ) -> HnswIndex:  # fmt: skip
        """An empty index with room for ``capacity``; refused in one line when that would
        not fit in this machine's memory (hnswlib would die in ``std::bad_alloc``)."""
        capacity = whole(capacity, "capacity", 1, MAX_PLACES)
        needed, available = index_bytes(dim, params["M"], capacity), physical_memory()
        if available and needed > available:
            raise EdgeVPRError(
                f"room for {capacity:,} places of {dim}-d needs {needed / 2**30:.1f} GiB, more "
                f"than this machine's {available / 2**30:.1f} GiB of memory"
            )
        index = hnswlib.Index(space="ip", dim=dim)
        try:
            index.init_index(max_elements=capacity, M=params["M"],
                             ef_construction=params["ef_construction"],
                             allow_replace_deleted=True)  # fmt: skip
        except (MemoryError, RuntimeError) as exc:
            raise EdgeVPRError(f"cannot make room for {capacity:,} places: {exc}") from None
        return cls(index, dim, params)

    @classmethod
    def load(
        cls, sections: dict[str, np.ndarray], dim: int, storage: str, params: dict[str, int],
        where: str,
    ) -> HnswIndex:  # fmt: skip
        """Back from :meth:`sections`, every link checked first (see ``hnswlib_file``)."""
        try:
            state = check_state(sections, dim, params["M"], params["ef_construction"])
        except BrokenIndex as exc:
            raise EdgeVPRError(f"{where} has a broken index ({exc})") from None
        # pickling's way in: setstate on an uninitialised object (on a constructed one,
        # hnswlib crashes)
        index = hnswlib.Index.__new__(hnswlib.Index)
        try:
            index.__setstate__((state,))
        except (RuntimeError, ValueError, TypeError, MemoryError) as exc:
            raise EdgeVPRError(f"{where} has a broken index ({exc})") from None
        loaded = cls(index, dim, params)
        loaded.replaces_deleted = False
        loaded._deleted = set(deleted_labels(state).tolist())
        return loaded

    def sections(self) -> dict[str, np.ndarray]:
        """hnswlib's serialised state as arrays, trimmed to the elements it holds."""
        (state,) = self._index.__getstate__()
        count = int(state["cur_element_count"])
        sections = {f"hnsw.{name}": np.asarray(state[name]) for name in STATE_ARRAYS}
        for name in ("data_level0", "link_lists"):  # hnswlib's char arrays, as bytes
            sections[f"hnsw.{name}"] = sections[f"hnsw.{name}"].view(np.uint8)
        sections["hnsw.element_levels"] = sections["hnsw.element_levels"][:count]
        numbers = [float(state[name]) for name in STATE_NUMBERS]
        numbers[STATE_NUMBERS.index("max_elements")] = float(count)
        sections["hnsw.numbers"] = np.asarray(numbers, np.float64)
        return sections

    def memory_bytes(self) -> int:
        return index_bytes(self.dim, self._params["M"], self._index.get_max_elements())

    def set_search_breadth(self, breadth: int) -> None:
        self._index.set_ef(breadth)
        self._params["ef"] = breadth

    @classmethod
    def load_file(
        cls, path: Path, dim: int, params: dict[str, int], places: int, where: str
    ) -> HnswIndex:
        """Read a version-1 index section (hnswlib's ``save_index`` bytes) for a map of
        ``places`` places, every link checked before hnswlib sees it."""
        layout = checked_layout(path, dim, params["M"], params["ef_construction"], places, where)
        index = hnswlib.Index(space="ip", dim=dim)
        try:
            # room for what is stored, not what the file asks for: growing is ours to do
            index.load_index(str(path), max_elements=layout.count, allow_replace_deleted=True)
        except (RuntimeError, MemoryError) as exc:
            raise EdgeVPRError(f"{where} has a broken index ({exc})") from None
        return cls(index, dim, params)

    # ------------------------------------------------------------------ facts
    def held(self) -> int:
        """Elements in the graph, removed ones included."""
        return int(self._index.element_count)

    def labels(self) -> np.ndarray:
        """The labels of the elements not marked deleted."""
        held = np.asarray(self._index.get_ids_list(), np.int64)
        return np.setdiff1d(held, np.fromiter(self._deleted, np.int64, len(self._deleted)))

    def params(self) -> dict[str, int]:
        return dict(self._params)

    # ------------------------------------------------------------------ changes
    def add(self, vectors: np.ndarray, ids: np.ndarray, threads: int) -> None:
        needed = self._index.get_current_count() + len(ids)
        capacity = self._index.get_max_elements()
        if needed > capacity:
            self._index.resize_index(max(needed, 2 * capacity))
        self._index.add_items(vectors, ids, num_threads=threads,
                              replace_deleted=self.replaces_deleted)  # fmt: skip

    def remove(self, ids: np.ndarray) -> None:
        for place_id in ids.tolist():
            self._index.mark_deleted(place_id)
            self._deleted.add(place_id)

    # ------------------------------------------------------------------ search
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the k best per query; ``FewerThanK`` when the walk found fewer.
        No native filter (hnswlib's calls Python for every node it visits): ``allowed``
        is never given."""
        try:
            labels, distances = self._index.knn_query(queries, k=k)
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
