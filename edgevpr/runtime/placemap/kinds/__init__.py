"""The index kinds a place map can search with: one table, read by the map, its file, the
CLI and the benchmark. A new kind is one module in this folder (a :class:`SearchIndex`
subclass) and one row here: its storages, what it can do and its parameters.

Every kind answers the same verbs over rows of (projected) float32 vectors labelled with
place ids (see :class:`SearchIndex`). What a kind can do beyond them is declared in its row,
never probed: ``trains`` (learns from data before adding), ``removes`` (drops a place
itself; else the place stays until the map is compacted), ``keeps_vectors`` (gives its
vectors back: a map may then keep no store) and ``filters`` (restricts a search to allowed
ids natively). Each parameter has its default and its range (from ``core.checks.RANGES``);
``breadth`` names the one that sets search breadth.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgevpr.core.checks import RANGES, ranged
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.extras import install_hint

TRAIN_ROWS = 100_000  # vectors a projection or an index is fitted on, at most


class FewerThanK(Exception):
    """The index found fewer than k live places (deletions or a narrow filter cut its
    walk short): the caller answers exactly instead."""


class SearchIndex(ABC):
    """What the place map needs of an index kind. Abilities a kind lacks (see its row) keep
    the defaults here, which the map never calls."""

    dim: int
    storage: str

    @classmethod
    @abstractmethod
    def create(cls, dim: int, storage: str, params: dict[str, int], capacity: int) -> SearchIndex:
        """An empty index; ``params`` are the kind's, checked and complete; ``capacity``:
        the places to make room for now (the index grows as needed)."""

    @classmethod
    @abstractmethod
    def load(
        cls, sections: dict[str, np.ndarray], dim: int, storage: str, params: dict[str, int],
        where: str,
    ) -> SearchIndex:  # fmt: skip
        """Back from :meth:`sections` (the map file's private copies), every structure
        checked before the library that owns it reads it."""

    @abstractmethod
    def params(self) -> dict[str, int]:
        """The parameters the map file records."""

    @abstractmethod
    def add(self, vectors: np.ndarray, ids: np.ndarray, threads: int) -> None: ...

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the k best per query (``FewerThanK`` when fewer were found);
        ``allowed``: sorted ids a search may return (only kinds that filter)."""

    @abstractmethod
    def set_search_breadth(self, breadth: int) -> None: ...

    @abstractmethod
    def sections(self) -> dict[str, np.ndarray]:
        """The index's bytes for the map file."""

    @abstractmethod
    def labels(self) -> np.ndarray:
        """The ids the index can return (a loaded map compares them with its records)."""

    @abstractmethod
    def memory_bytes(self) -> int: ...

    def held(self) -> int:
        """Places the index holds, removed ones it keeps included."""
        return len(self.labels())

    def remove(self, ids: np.ndarray) -> None:
        """Drop places (kinds that remove; others keep them until the map is compacted)."""
        raise EdgeVPRError(f"a {type(self).__name__} cannot remove places")

    @property
    def trained(self) -> bool:
        return True

    def train(self, vectors: np.ndarray) -> None:
        """Learn from ``vectors`` before the first places are added (kinds that train)."""
        raise EdgeVPRError(f"a {type(self).__name__} is not trained")

    def needs_rebuild(self, places: int) -> bool:
        """Whether the index should be built again for the ``places`` the map now holds."""
        return False

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The (projected) vectors of ``ids``, as float32 rows (kinds that keep them)."""
        raise EdgeVPRError(f"a {type(self).__name__} keeps no vectors")


@dataclass(frozen=True)
class Param:
    """One parameter of an index kind: a whole number in ``RANGES[name]``."""

    name: str
    default: int
    help: str
    settable: bool = True  # False: state the kind records in its file, never given

    @property
    def range(self) -> tuple[int, int]:
        return RANGES[self.name]


@dataclass(frozen=True)
class IndexKind:
    """One row of the table: where the class lives, what it can do, what it takes."""

    name: str
    module: str
    cls: str
    storages: tuple[str, ...]  # how vectors are held, first = default
    needs: str | None  # the Python module it needs beyond the runtime's
    summary: str
    trains: bool
    removes: bool
    keeps_vectors: bool
    filters: bool
    breadth: str  # the parameter that sets search breadth
    params: tuple[Param, ...]

    def load_class(self) -> type[SearchIndex]:
        if self.needs is not None:
            try:
                importlib.import_module(self.needs)
            except ImportError:
                raise EdgeVPRError(
                    f"the {self.name} index needs {self.needs}: {install_hint(self.needs)}"
                ) from None
        return getattr(importlib.import_module(self.module), self.cls)

    @property
    def defaults(self) -> dict[str, int]:
        return {p.name: p.default for p in self.params}

    def checked_params(self, given: dict[str, Any], from_file: bool = False) -> dict[str, int]:
        """The kind's parameters: defaults updated from ``given``, each a whole number in
        its range. A name the kind does not take is refused; state parameters only come
        from a map file."""
        takes = {p.name: p for p in self.params if p.settable or from_file}
        unknown = sorted(set(given) - set(takes))
        if unknown:
            names = ", ".join(p.name for p in self.params if p.settable)
            raise EdgeVPRError(f"the {self.name} index takes no {', '.join(unknown)} "
                               f"(its parameters: {names})")  # fmt: skip
        return {**self.defaults, **{name: ranged(value, name) for name, value in given.items()}}

    def own(self, params: dict[str, Any]) -> dict[str, Any]:
        """Those of ``params`` this kind takes (for callers that hold settings of every
        kind, as the benchmark does)."""
        names = {p.name for p in self.params if p.settable}
        return {name: value for name, value in params.items() if name in names}

    def create(
        self, dim: int, storage: str | None, params: dict[str, Any], capacity: int = 1
    ) -> SearchIndex:
        storage = storage or self.storages[0]
        if storage not in self.storages:
            raise EdgeVPRError(
                f"the {self.name} index stores {', '.join(self.storages)}, not {storage!r}"
            )
        return self.load_class().create(dim, storage, self.checked_params(params), capacity)

    def load(
        self, sections: dict[str, np.ndarray], dim: int, storage: str, params: dict, where: str
    ) -> SearchIndex:
        if storage not in self.storages:
            raise EdgeVPRError(f"{where} names storage {storage!r} for a {self.name} index")
        checked = self.checked_params(params, from_file=True)
        return self.load_class().load(sections, dim, storage, checked, where)


HNSWLIB = "hnswlib"
USEARCH = "usearch"
FAISS_IVF = "faiss-ivf"
FAISS_HNSW = "faiss-hnsw"
_GRAPH = (
    Param("M", 16, "HNSW graph degree"),
    # 200: the build breadth every HNSW kind was measured with (benchmarks/results/maps.md)
    Param("ef_construction", 200, "HNSW build breadth"),
    Param("ef", 128, "search breadth"),
)
_PLACEMAP = "edgevpr.runtime.placemap.kinds"
INDEX_KINDS: dict[str, IndexKind] = {
    kind.name: kind
    for kind in (
        IndexKind(HNSWLIB, f"{_PLACEMAP}.hnswlib_index", "HnswIndex", ("f32",), None,
                  "hnswlib HNSW graph, float32 vectors", trains=False, removes=True,
                  keeps_vectors=True, filters=False, breadth="ef", params=_GRAPH),
        IndexKind(USEARCH, f"{_PLACEMAP}.usearch_index", "UsearchIndex", ("i8", "f16", "f32"),
                  "usearch", "usearch HNSW graph, int8/float16/float32 vectors",
                  trains=False, removes=True, keeps_vectors=True, filters=False, breadth="ef",
                  params=_GRAPH),
        IndexKind(FAISS_IVF, f"{_PLACEMAP}.faiss_index", "FaissIvfIndex", ("sq8", "pq", "f16"),
                  "faiss", "faiss inverted lists: 8-bit scalar or product quantisation",
                  trains=True, removes=True, keeps_vectors=False, filters=True,
                  breadth="nprobe", params=(
                      Param("nlist", 0, "inverted lists (0: 4 sqrt(places), trained again "
                                        "as the map grows)"),
                      # 128: measured 0.995 top-1 at 100k places (64: 0.98 at 1M)
                      Param("nprobe", 128, "inverted lists probed"),
                      Param("pq_bytes", 0, "pq code bytes (0: a quarter of the dimensions)"),
                      Param("trained_rows", 0, "rows the lists were trained on",
                            settable=False),
                  )),
        IndexKind(FAISS_HNSW, f"{_PLACEMAP}.faiss_index", "FaissHnswIndex",
                  ("sq8", "f16", "f32"), "faiss", "faiss HNSW graph over scalar-quantised vectors",
                  trains=True, removes=False, keeps_vectors=False, filters=True, breadth="ef",
                  params=_GRAPH),
    )
}  # fmt: skip


def index_kind(name: str) -> IndexKind:
    try:
        return INDEX_KINDS[name]
    except KeyError:
        raise EdgeVPRError(
            f"unknown index kind {name!r} (choose from {', '.join(INDEX_KINDS)})"
        ) from None


def settable_params() -> dict[str, list[tuple[IndexKind, Param]]]:
    """Each parameter any kind takes, with the kinds that take it (for the CLI's options)."""
    out: dict[str, list[tuple[IndexKind, Param]]] = {}
    for kind in INDEX_KINDS.values():
        for param in kind.params:
            if param.settable:
                out.setdefault(param.name, []).append((kind, param))
    return out


def allowed_mask(allowed: np.ndarray) -> np.ndarray:
    """A boolean mask over ids 0..max(allowed) from an array of allowed ids."""
    mask = np.zeros(int(allowed.max(initial=-1)) + 1, bool)
    mask[allowed] = True
    return mask
