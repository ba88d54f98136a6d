"""Full-precision descriptors of a map's places, by record row: what exact re-ranking,
exact search among a prior's few candidates and ``PlaceMap.descriptors`` read.

Rows loaded from a map file stay in its memory map (only the rows a query touches are read
from disk); rows added since live in memory, and in an unnamed temporary file once they pass
``SPILL_BYTES`` (a million 4096-d float32 descriptors are 16 GB).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import numpy as np

from edgevpr.errors import EdgeVPRError

STORES = {"f32": np.float32, "f16": np.float16}
NONE = "none"
SPILL_BYTES = 1 << 30
WRITE_ROWS = 8192


class GrowingRows:
    """An array that grows by rows: in memory, then in a temporary file."""

    def __init__(self, dim: int, dtype: np.dtype) -> None:
        self._rows = np.empty((0, dim), dtype)
        self._count = 0
        self._file: tempfile._TemporaryFileWrapper | None = None

    def __len__(self) -> int:
        return self._count

    @property
    def array(self) -> np.ndarray:
        return self._rows[: self._count]

    def extend(self, rows: np.ndarray) -> None:
        needed = self._count + len(rows)
        if needed > len(self._rows):
            self._grow(max(needed, 2 * len(self._rows), 64))
        self._rows[self._count : needed] = rows
        self._count = needed

    def _grow(self, capacity: int) -> None:
        dim, dtype = self._rows.shape[1], self._rows.dtype
        nbytes = capacity * dim * dtype.itemsize
        if nbytes <= SPILL_BYTES:
            grown = np.empty((capacity, dim), dtype)
        else:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="edgevpr-rows-")
            self._file.truncate(nbytes)
            grown = np.memmap(self._file, dtype, "r+", shape=(capacity, dim))
        grown[: self._count] = self._rows[: self._count]
        self._rows = grown


class VectorStore:
    """Descriptors by record row (float32 or float16), or none at all (``kind`` "none")."""

    def __init__(self, dim: int, kind: str, base: np.ndarray | None = None) -> None:
        if kind != NONE and kind not in STORES:
            raise EdgeVPRError(f"the descriptor store must be one of f32, f16, none, not {kind!r}")
        self.dim = dim
        self.kind = kind
        dtype = np.dtype(STORES.get(kind, np.float32))
        self._base = np.zeros((0, dim), dtype) if base is None else base
        if base is not None and (base.ndim != 2 or base.shape[1] != dim or base.dtype != dtype):
            raise EdgeVPRError(f"the stored descriptors are not {kind} rows of {dim}")
        self._added = GrowingRows(dim, dtype)

    @property
    def keeps(self) -> bool:
        return self.kind != NONE

    def __len__(self) -> int:
        return len(self._base) + len(self._added)

    def append(self, vectors: np.ndarray) -> None:
        if self.keeps:
            self._added.extend(vectors.astype(self._base.dtype, copy=False))

    def get(self, rows: np.ndarray) -> np.ndarray:
        """float32 descriptors of ``rows`` (record rows, any order)."""
        if not self.keeps:
            raise EdgeVPRError(
                "this map keeps no full-precision descriptors (it was built with --store none)"
            )
        rows = np.asarray(rows, np.int64)
        base = len(self._base)
        if not len(self._added) or (rows.size and rows.max() < base):
            return self._base[rows].astype(np.float32)
        out = np.empty((len(rows), self.dim), np.float32)
        old = rows < base
        out[old] = self._base[rows[old]]
        out[~old] = self._added.array[rows[~old] - base]
        return out

    def section(self, rows: np.ndarray) -> np.ndarray | RowChunks:
        """The given rows for a map file: the base itself when nothing else is asked (no
        copy of a large mapping), else the rows chunk by chunk."""
        if len(rows) == len(self._base) and not len(self._added) and (
            not len(rows) or (rows[0] == 0 and rows[-1] == len(rows) - 1)
        ):
            return self._base
        return RowChunks(self, rows)


class RowChunks:
    """Rows of a store, written a chunk at a time (never all in memory at once)."""

    def __init__(self, store: VectorStore, rows: np.ndarray) -> None:
        self._store, self._rows = store, rows
        self.dtype = np.dtype(STORES[store.kind])
        self.shape = (len(rows), store.dim)
        self.nbytes = len(rows) * store.dim * self.dtype.itemsize

    def chunks(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self._rows), WRITE_ROWS):
            yield self._store.get(self._rows[start : start + WRITE_ROWS]).astype(self.dtype)
