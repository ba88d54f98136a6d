"""The index kinds a place map can search with: one table, read by the map, its file, the
CLI and the benchmark. A new kind is one row here and one module with its class.

Every kind answers the same few verbs over rows of (projected) float32 vectors labelled
with place ids: add, remove, search (optionally among an allowed set of ids), labels (the
ids it holds, removed ones excluded: a loaded map compares them with its records), sections
(its bytes for the map file) and load (back from them, every structure checked before the
library that owns it reads it). Scores are the kind's inner products;
the map re-ranks the best candidates exactly where it keeps full-precision descriptors.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgevpr.errors import EdgeVPRError
from edgevpr.extras import install_hint
from edgevpr.runtime.checks import whole


class FewerThanK(Exception):
    """The index found fewer than k live places (deletions or a narrow filter cut its
    walk short): the caller answers exactly instead."""


class SearchIndex(Protocol):
    """What the place map needs of an index kind."""

    dim: int
    storage: str
    filters: bool  # can restrict a search to allowed ids natively (no Python per node)

    def params(self) -> dict[str, Any]: ...

    def add(self, vectors: np.ndarray, ids: np.ndarray, threads: int) -> None: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def set_search_breadth(self, breadth: int) -> None: ...

    def sections(self) -> dict[str, np.ndarray]: ...

    def labels(self) -> np.ndarray: ...

    def memory_bytes(self) -> int: ...


@dataclass(frozen=True)
class IndexKind:
    """One row of the table: where the class lives and what it offers."""

    name: str
    module: str
    cls: str
    storages: tuple[str, ...]  # how vectors are held, first = default
    needs: str | None  # the Python module it needs beyond the runtime's
    filters: bool
    summary: str

    def load_class(self) -> Any:
        if self.needs is not None:
            try:
                importlib.import_module(self.needs)
            except ImportError:
                raise EdgeVPRError(
                    f"the {self.name} index needs {self.needs}: {install_hint(self.needs)}"
                ) from None
        return getattr(importlib.import_module(self.module), self.cls)

    def create(self, dim: int, storage: str | None, params: dict[str, Any]) -> SearchIndex:
        storage = storage or self.storages[0]
        if storage not in self.storages:
            raise EdgeVPRError(
                f"the {self.name} index stores {', '.join(self.storages)}, not {storage!r}"
            )
        return self.load_class().create(dim, storage, params)

    def load(
        self, sections: dict[str, np.ndarray], dim: int, storage: str, params: dict, where: str
    ) -> SearchIndex:
        if storage not in self.storages:
            raise EdgeVPRError(f"{where} names storage {storage!r} for a {self.name} index")
        return self.load_class().load(sections, dim, storage, params, where)


HNSWLIB = "hnswlib"
USEARCH = "usearch"
FAISS_IVF = "faiss-ivf"
FAISS_HNSW = "faiss-hnsw"
INDEX_KINDS: dict[str, IndexKind] = {
    kind.name: kind
    for kind in (
        IndexKind(HNSWLIB, "edgevpr.runtime.placemap.hnsw", "HnswIndex", ("f32",), None,
                  False, "hnswlib HNSW graph, float32 vectors"),
        IndexKind(USEARCH, "edgevpr.runtime.placemap.usearch_index", "UsearchIndex",
                  ("i8", "f16", "f32"), "usearch", False,
                  "usearch HNSW graph, int8/float16/float32 vectors, memory-mapped on load"),
        IndexKind(FAISS_IVF, "edgevpr.runtime.placemap.faiss_index", "FaissIvfIndex",
                  ("sq8", "pq", "f16"), "faiss", True,
                  "faiss inverted lists: 8-bit scalar or product quantisation"),
        IndexKind(FAISS_HNSW, "edgevpr.runtime.placemap.faiss_index", "FaissHnswIndex",
                  ("sq8", "f16", "f32"), "faiss", True,
                  "faiss HNSW graph over scalar-quantised vectors"),
    )
}  # fmt: skip


def index_kind(name: str) -> IndexKind:
    try:
        return INDEX_KINDS[name]
    except KeyError:
        raise EdgeVPRError(
            f"unknown index kind {name!r} (choose from {', '.join(INDEX_KINDS)})"
        ) from None


PARAM_RANGES = {"M": (2, 512), "ef_construction": (1, 100_000), "ef": (1, 100_000),
                "nprobe": (1, 1 << 22), "nlist": (0, 1 << 22), "pq_bytes": (0, 65536),
                "trained_rows": (0, 1 << 40), "capacity": (0, 1 << 40)}  # fmt: skip


def checked_params(
    given: dict[str, Any], defaults: dict[str, int], strict: bool = False
) -> dict[str, int]:
    """``defaults`` updated from ``given``, each value a whole number in its range. From a
    map file (``strict``) a name the kind does not know is an error; from a caller, names
    meant for other kinds (a map's M for faiss-ivf) are passed over."""
    unknown = set(given) - set(defaults) - {"capacity"}
    if strict and unknown:
        raise EdgeVPRError(f"unknown index parameters {', '.join(sorted(unknown))}")
    params = dict(defaults)
    for name, value in given.items():
        if name in defaults:
            low, high = PARAM_RANGES[name]
            params[name] = whole(value, name, low, high)
    return params


def given_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` without the marker that says they were read from a map file."""
    return {k: v for k, v in params.items() if k != "from_file"}


def allowed_mask(allowed: np.ndarray) -> np.ndarray:
    """A boolean mask over ids 0..max(allowed) from an array of allowed ids."""
    mask = np.zeros(int(allowed.max(initial=-1)) + 1, bool)
    mask[allowed] = True
    return mask
