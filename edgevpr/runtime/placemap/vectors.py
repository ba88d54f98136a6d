"""Full-precision descriptors of a map's places, by record row: what exact re-ranking,
exact search among a prior's few candidates and ``PlaceMap.descriptors`` read.

Rows loaded from a map file stay in it and are read, verified, where a query needs them
(``filerows``); rows added since live in memory, and in an unnamed temporary file once they
pass ``SPILL_BYTES`` (a million 4096-d float32 descriptors are 16 GB).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.runtime.placemap.fileformat.container import LazySection
from edgevpr.runtime.placemap.fileformat.filerows import FileRows, row_checks

STORES = {"f32": np.float32, "f16": np.float16}
NONE = "none"
SPILL_BYTES = 1 << 30
WRITE_ROWS = 8192


class GrowingRows:
    """An array that grows by rows: in memory, then in a temporary file."""

    def __init__(self, dim: int, dtype: np.dtype) -> None:
        self._rows = np.empty((0, dim), dtype)
        self._count = 0
        self._file: BinaryIO | None = None

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
    """Descriptors by record row (float32 or float16), or none at all (``kind`` "none"):
    those of a loaded file (``base``) followed by those added since."""

    def __init__(self, dim: int, kind: str, base: FileRows | None = None) -> None:
        if kind != NONE and kind not in STORES:
            raise EdgeVPRError(f"the descriptor store must be one of f32, f16, none, not {kind!r}")
        self.dim = dim
        self.kind = kind
        self.dtype = np.dtype(STORES.get(kind, np.float32))
        if base is not None and (base.shape[1] != dim or base.dtype != self.dtype):
            raise EdgeVPRError(f"the stored descriptors are not {kind} rows of {dim}")
        self._base = base
        self._added = GrowingRows(dim, self.dtype)

    @property
    def keeps(self) -> bool:
        return self.kind != NONE

    @property
    def loaded(self) -> int:
        """Rows that come from the file the map was loaded from."""
        return 0 if self._base is None else len(self._base)

    def __len__(self) -> int:
        return self.loaded + len(self._added)

    def append(self, vectors: np.ndarray) -> None:
        if self.keeps:
            self._added.extend(vectors.astype(self.dtype, copy=False))

    def get(self, rows: np.ndarray) -> np.ndarray:
        """float32 descriptors of ``rows`` (record rows, any order)."""
        return self.raw(rows, np.dtype(np.float32))

    def raw(self, rows: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
        """Descriptors of ``rows`` as stored (float16 or float32), or as ``dtype``."""
        dtype = self.dtype if dtype is None else dtype
        if not self.keeps:
            raise EdgeVPRError(
                "this map keeps no full-precision descriptors (it was built with --store none)"
            )
        rows = np.asarray(rows, np.int64).reshape(-1)
        base = self.loaded
        if self._base is not None and (not len(self._added) or (rows.size and rows.max() < base)):
            return self._base.read(rows, dtype)
        out = np.empty((len(rows), self.dim), dtype)
        old = rows < base
        if old.any():
            out[old] = self._base.read(rows[old], dtype)  # type: ignore[union-attr]
        out[~old] = self._added.array[rows[~old] - base]
        return out

    def verify(self) -> None:
        """Every loaded row against its check value and the file's checksum."""
        if self._base is not None:
            self._base.verify()

    def section(self, rows: np.ndarray) -> tuple[RowChunks, RowChecks]:
        """The given rows for a map file, and their check values (written after them)."""
        chunks = RowChunks(self, rows)
        return chunks, RowChecks(chunks)


class RowChunks(LazySection):
    """Rows of a store, written a chunk at a time (never all in memory at once), each
    loaded one verified as it is read: a damaged map is never copied into a new file with
    fresh checksums."""

    def __init__(self, store: VectorStore, rows: np.ndarray) -> None:
        self._store, self._rows = store, rows
        self.dtype = store.dtype
        self.shape = (len(rows), store.dim)
        self.nbytes = len(rows) * store.dim * self.dtype.itemsize
        self.checks = np.zeros(len(rows), np.uint64)
        self.done = 0

    def chunks(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self._rows), WRITE_ROWS):
            block = self._store.raw(self._rows[start : start + WRITE_ROWS])
            stop = start + len(block)
            self.checks[start:stop] = row_checks(block, np.arange(start, stop))
            self.done = stop
            yield block


class RowChecks(LazySection):
    """The check values of the rows a :class:`RowChunks` wrote (see ``filerows``)."""

    def __init__(self, rows: RowChunks) -> None:
        self._rows = rows
        self.dtype = np.dtype(np.uint64)
        self.shape = (rows.shape[0],)
        self.nbytes = 8 * rows.shape[0]

    def chunks(self) -> Iterator[np.ndarray]:
        if self._rows.done != self.shape[0]:
            raise EdgeVPRError("the check values were asked for before their rows were written")
        yield self._rows.checks
