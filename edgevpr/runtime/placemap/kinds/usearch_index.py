"""The usearch index kind: an HNSW graph whose vectors are stored as int8, float16 or
float32. A map's index bytes are checked first (``usearch_file``) and then loaded into
usearch's own memory: a loaded map never reads from its file's index section again.

Scores: usearch's inner-product distance is 1 - <a, b> for float vectors and -<a, b> over
the int8 codes (each component scaled by 127) for int8 ones; both are turned back into an
inner product.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from usearch.index import BatchMatches, Index

from edgevpr.core.errors import EdgeVPRError, first_line
from edgevpr.runtime.placemap.kinds import FewerThanK, SearchIndex
from edgevpr.runtime.placemap.kinds.usearch_file import BrokenUsearch, check_usearch_index

INT8_SCALE = 127.0


class UsearchIndex(SearchIndex):
    def __init__(self, index: Index, dim: int, storage: str, params: dict[str, int]) -> None:
        # usearch's stubs make expansion_search read-only; usearch itself sets it
        self._index: Any = index
        self.dim = dim
        self.storage = storage
        self._params = dict(params)

    @classmethod
    def create(cls, dim: int, storage: str, params: dict[str, int], capacity: int = 1
               ) -> UsearchIndex:  # fmt: skip
        index = Index(
            ndim=dim,
            metric="ip",
            dtype=storage,
            connectivity=params["M"],
            expansion_add=params["ef_construction"],
            expansion_search=params["ef"],
        )
        return cls(index, dim, storage, params)

    @classmethod
    def load(
        cls, sections: dict[str, np.ndarray], dim: int, storage: str, params: dict[str, int],
        where: str,
    ) -> UsearchIndex:  # fmt: skip
        data = sections.get("index")
        if data is None or data.dtype != np.uint8 or data.ndim != 1:
            raise EdgeVPRError(f"{where} has no usearch index section")
        try:
            check_usearch_index(data, dim, storage)
        except BrokenUsearch as exc:
            raise EdgeVPRError(f"{where} has a broken usearch index ({exc})") from None
        loaded = cls.create(dim, storage, params)
        try:
            loaded._index.load(np.ascontiguousarray(data).data)
        except (RuntimeError, ValueError, MemoryError) as exc:
            raise EdgeVPRError(f"{where} has a broken usearch index ({first_line(exc)})") from None
        loaded._index.expansion_search = loaded._params["ef"]
        return loaded

    def params(self) -> dict[str, int]:
        return dict(self._params)

    def set_search_breadth(self, breadth: int) -> None:
        self._params["ef"] = breadth
        self._index.expansion_search = breadth

    def add(self, vectors: np.ndarray, ids: np.ndarray, threads: int) -> None:
        self._index.add(ids.astype(np.uint64), vectors, threads=max(threads, 0))

    def remove(self, ids: np.ndarray) -> None:
        self._index.remove(ids.astype(np.uint64))

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        threads = 1 if len(queries) == 1 else 0
        found = self._index.search(queries, k, threads=threads)
        keys = np.asarray(found.keys).reshape(len(queries), -1)
        distances = np.asarray(found.distances, np.float32).reshape(len(queries), -1)
        # one query gives Matches (no counts), several give BatchMatches
        counts = np.asarray(found.counts if isinstance(found, BatchMatches) else
                            [keys.shape[1]]).reshape(-1)  # fmt: skip
        if keys.shape[1] < k or (counts < k).any():
            raise FewerThanK
        if self.storage == "i8":
            return keys.astype(np.int64), -distances / INT8_SCALE**2
        return keys.astype(np.int64), 1.0 - distances

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` as float32 (int8 ones scaled back)."""
        found = np.asarray(self._index.get(ids.astype(np.uint64), dtype="f32"), np.float32)
        return found.reshape(len(ids), self.dim)

    def sections(self) -> dict[str, np.ndarray]:
        return {"index": np.frombuffer(bytes(self._index.save()), np.uint8)}

    def labels(self) -> np.ndarray:
        return np.asarray(self._index.keys, np.int64)

    def held(self) -> int:
        """Nodes in the graph, removed ones (kept under a free key) included."""
        return int(self._index.stats.nodes)

    def memory_bytes(self) -> int:
        return int(self._index.memory_usage)
