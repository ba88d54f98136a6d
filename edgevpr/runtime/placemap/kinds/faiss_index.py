"""The faiss index kinds: inverted lists (IVF) over 8-bit scalar or product-quantised codes,
and an HNSW graph over scalar-quantised or float vectors. Both restrict a search to allowed
ids natively (an ``IDSelectorBitmap``), which is what a geo prior over many places needs,
and share their loading, adding and searching (:class:`FaissIndex`).

One query runs on one OpenMP thread: faiss's threads otherwise keep spinning after a call
and take the cores from the model that embeds the next frame (as OpenBLAS's did).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import faiss as _faiss
import numpy as np

from edgevpr.core.cpus import usable_cores
from edgevpr.core.errors import EdgeVPRError, first_line
from edgevpr.runtime.placemap.kinds import TRAIN_ROWS, FewerThanK, SearchIndex, allowed_mask
from edgevpr.runtime.placemap.kinds.faiss_file import BrokenFaiss, check_faiss_index

REBUILD_GROWTH = 4  # retrain automatic lists once the map is this many times their data
FILTERED_PROBES = 2
MIN_PER_LIST = 39  # faiss's k-means wants at least 39 training points a centroid
# faiss's bundled stubs omit the SearchParameters classes' keyword arguments and SWIG's
# ownership handles (``this.disown()``): the module is used untyped.
faiss: Any = _faiss
QUANTIZERS = {"sq8": faiss.ScalarQuantizer.QT_8bit, "f16": faiss.ScalarQuantizer.QT_fp16}


def lists_for(rows: int) -> int:
    """Inverted lists for ``rows`` vectors: 4 sqrt(n), the usual rule, within what
    k-means can train."""
    return max(1, min(int(4 * math.sqrt(rows)), rows // MIN_PER_LIST))


def _training_sample(vectors: np.ndarray) -> np.ndarray:
    """At most TRAIN_ROWS of ``vectors``, drawn the same way every time, in their order."""
    picks = np.random.default_rng(0).permutation(len(vectors))[:TRAIN_ROWS]
    return np.ascontiguousarray(vectors[np.sort(picks)])


def _threads(queries: int) -> None:
    faiss.omp_set_num_threads(1 if queries == 1 else usable_cores())


def _bitmap(allowed: np.ndarray) -> tuple[Any, np.ndarray]:
    """A faiss selector for ``allowed`` ids, and the bits it points to (keep them alive).
    faiss's ``IDSelectorBitmap(n, bitmap)`` takes the bitmap's length in bytes: an id past
    the last byte is not a member, and nothing is read beyond the bits given."""
    bits = np.packbits(allowed_mask(allowed), bitorder="little")
    return faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)), bits


class FaissIndex(SearchIndex):
    """What the faiss kinds share: the wrapped index (None until trained on the first
    vectors added), loading from checked bytes, adding, and searching with or without a
    filter; each kind says how it is trained and how a search is parameterised."""

    def __init__(self, index: Any, dim: int, storage: str, params: dict[str, int]) -> None:
        self._index = index
        self.dim = dim
        self.storage = storage
        self._params = dict(params)

    @classmethod
    def create(cls, dim: int, storage: str, params: dict[str, int], capacity: int = 1
               ) -> FaissIndex:  # fmt: skip
        return cls(None, dim, storage, cls._completed(dim, storage, params, capacity))

    @classmethod
    def _completed(cls, dim: int, storage: str, params: dict[str, int], capacity: int
                   ) -> dict[str, int]:  # fmt: skip
        return dict(params)

    @classmethod
    def load(
        cls, sections: dict[str, np.ndarray], dim: int, storage: str, params: dict[str, int],
        where: str,
    ) -> FaissIndex:  # fmt: skip
        """The index in ``sections`` (private bytes, checked field by field first, see
        ``faiss_file``)."""
        data = sections.get("index")
        if data is None or data.dtype != np.uint8 or data.ndim != 1:
            raise EdgeVPRError(f"{where} has no faiss index section")
        try:
            check_faiss_index(data, dim, storage)
        except BrokenFaiss as exc:
            raise EdgeVPRError(f"{where} has a broken faiss index ({exc})") from None
        try:
            index = faiss.deserialize_index(np.ascontiguousarray(data))
        except (RuntimeError, MemoryError) as exc:
            raise EdgeVPRError(f"{where} has a broken faiss index ({first_line(exc)})") from None
        return cls(index, dim, storage, params)

    @property
    def trained(self) -> bool:
        return self._index is not None

    def params(self) -> dict[str, int]:
        return dict(self._params)

    def add(self, vectors: np.ndarray, ids: np.ndarray, threads: int) -> None:
        if self._index is None:
            self.train(vectors)
        _threads(2)
        self._index.add_with_ids(np.ascontiguousarray(vectors), ids.astype(np.int64))

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            raise FewerThanK
        selector, bits = _bitmap(allowed) if allowed is not None else (None, None)
        _threads(len(queries))
        distances, labels = self._index.search(np.ascontiguousarray(queries), k,
                                               params=self._search_params(k, selector))  # fmt: skip
        del bits  # the selector pointed into it until here
        if labels.shape[1] < k or (labels < 0).any():
            raise FewerThanK
        return labels.astype(np.int64), distances.astype(np.float32)

    @abstractmethod
    def _search_params(self, k: int, selector: Any) -> Any:
        """faiss's SearchParameters for one search (``selector``: the filter, or None)."""

    def sections(self) -> dict[str, np.ndarray]:
        return {} if self._index is None else {"index": faiss.serialize_index(self._index)}


class FaissIvfIndex(FaissIndex):
    """Inverted lists over a flat inner-product quantiser; codes sq8, f16 or pq."""

    @classmethod
    def _completed(cls, dim: int, storage: str, params: dict[str, int], capacity: int
                   ) -> dict[str, int]:  # fmt: skip
        params = {**params, "capacity": capacity}
        if storage == "pq":
            params["pq_bytes"] = params["pq_bytes"] or max(1, dim // 4)
            if dim % params["pq_bytes"]:
                raise EdgeVPRError(f"pq_bytes {params['pq_bytes']} must divide {dim} dimensions")
        return params

    def params(self) -> dict[str, int]:
        return {k: v for k, v in self._params.items() if k != "capacity"}

    def train(self, vectors: np.ndarray) -> None:
        """Train the coarse quantiser (and the codes) on ``vectors``: the lists are sized for
        the larger of their number and the capacity the map was created with."""
        rows = max(len(vectors), self._params.get("capacity", 0))
        nlist = self._params["nlist"] or min(lists_for(rows), max(1, len(vectors) // MIN_PER_LIST))
        quantizer = faiss.IndexFlatIP(self.dim)
        if self.storage == "pq":
            # 8-bit codes need 256 x 39 training vectors; small maps get fewer bits
            bits = max(1, min(8, int(math.log2(max(len(vectors) // MIN_PER_LIST, 2)))))
            index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, self._params["pq_bytes"], bits,
                                     faiss.METRIC_INNER_PRODUCT)  # fmt: skip
        else:
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, self.dim, nlist, QUANTIZERS[self.storage], faiss.METRIC_INNER_PRODUCT
            )
        _threads(2)
        index.train(_training_sample(vectors))
        index.own_fields = True
        quantizer.this.disown()
        self._params["trained_rows"] = len(vectors)
        self._index = index

    def needs_rebuild(self, places: int) -> bool:
        """Whether automatic lists trained on far fewer places than the map now holds
        should be trained again (a map grown by small additions would otherwise keep the
        one list its first few places allowed)."""
        if self._index is None or self._params["nlist"]:
            return False
        grown = places >= REBUILD_GROWTH * max(self._params["trained_rows"], 1)
        return grown and lists_for(places) >= 2 * self._index.nlist

    def set_search_breadth(self, breadth: int) -> None:
        self._params["nprobe"] = breadth

    def remove(self, ids: np.ndarray) -> None:
        if self._index is not None:
            self._index.remove_ids(faiss.IDSelectorBatch(ids.astype(np.int64)))

    def _search_params(self, k: int, selector: Any) -> Any:
        nlist, nprobe = self._index.nlist, self._params["nprobe"]
        if selector is None:
            return faiss.SearchParametersIVF(nprobe=min(nprobe, nlist))
        # Under a filter the best allowed place lies a little further down the query's
        # lists: probing twice as many (100k places, 1 km prior, 8 % of the map) gave top-1
        # 1.000 against 0.995, 1.78 ms against 1.59.
        return faiss.SearchParametersIVF(nprobe=min(nlist, FILTERED_PROBES * nprobe),
                                         sel=selector)  # fmt: skip

    def labels(self) -> np.ndarray:
        if self._index is None:
            return np.zeros(0, np.int64)
        invlists = self._index.invlists
        held = [faiss.rev_swig_ptr(invlists.get_ids(n), invlists.list_size(n)).copy()
                for n in range(invlists.nlist) if invlists.list_size(n)]  # fmt: skip
        return np.concatenate(held).astype(np.int64) if held else np.zeros(0, np.int64)

    def memory_bytes(self) -> int:
        if self._index is None:
            return 0
        return int(self._index.ntotal * (self._index.invlists.code_size + 8))


class FaissHnswIndex(FaissIndex):
    """An HNSW graph over scalar-quantised (or float) vectors, ids mapped by
    ``IndexIDMap2``. faiss HNSW cannot remove: removed places stay in the graph until the
    map is compacted, and the map drops them from results."""

    def train(self, vectors: np.ndarray) -> None:
        """Build the graph's container and train its scalar quantiser on ``vectors``."""
        if self.storage == "f32":
            inner = faiss.IndexHNSWFlat(self.dim, self._params["M"], faiss.METRIC_INNER_PRODUCT)
        else:
            inner = faiss.IndexHNSWSQ(self.dim, QUANTIZERS[self.storage], self._params["M"],
                                      faiss.METRIC_INNER_PRODUCT)  # fmt: skip
        inner.hnsw.efConstruction = self._params["ef_construction"]
        inner.train(_training_sample(vectors))
        self._index = faiss.IndexIDMap2(inner)
        self._index.own_fields = True
        inner.this.disown()

    def set_search_breadth(self, breadth: int) -> None:
        self._params["ef"] = breadth

    def _search_params(self, k: int, selector: Any) -> Any:
        breadth = max(self._params["ef"], k)
        if selector is None:
            return faiss.SearchParametersHNSW(efSearch=breadth)
        return faiss.SearchParametersHNSW(efSearch=breadth, sel=selector)

    def labels(self) -> np.ndarray:
        """Every id the graph holds: removed places too (see the class)."""
        if self._index is None:
            return np.zeros(0, np.int64)
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def memory_bytes(self) -> int:
        if self._index is None:
            return 0
        code = {"f32": 4, "f16": 2}.get(self.storage, 1) * self.dim
        return int(self._index.ntotal * (code + 8 * self._params["M"] + 16))
