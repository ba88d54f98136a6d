"""Stored descriptors read from a map file on demand, each row verified before it is used.

A million 4096-d descriptors are 16 GB: they stay in the file and a query reads the few
rows it re-ranks. They are read with ``pread`` into the process's own memory, not through
a memory map: a file truncated or rewritten under the reader then gives a short read or
rows that fail their check (one clear error), never a SIGBUS or an answer from bytes that
changed after they were checked.

Each row has a check value (the ``vectors.check`` section): a weighted sum of the row's
words modulo 2^64, the weights odd numbers from splitmix64, plus a mix of the row's number.
Any change to one word changes it (odd weights are invertible modulo 2^64), a row moved to
another place fails it, and other accidental changes pass with probability 2^-64. It is a
guard against damage and concurrent writers, not against forgers (who can rewrite every
checksum of the file too). It costs what reading the row costs: 16-35 us for the 32 rows a
query re-ranks at 4096-d (2-core EPYC).
"""

from __future__ import annotations

import hashlib
import math
import os
import weakref
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgevpr.core.errors import EdgeVPRError

REBUILD_HINT = "rebuild it with 'edgevpr index build' or restore a copy"
NORM_TOLERANCE = 1e-2  # stored rows are unit vectors; float16 storage keeps them within 1e-3
BLOCK_ROWS = 4096  # rows read at once when the whole section is walked
GOLDEN = 0x9E3779B97F4A7C15
ROW_DOMAIN = 1 << 63  # row numbers are mixed apart from the word weights' indices


class OpenFile:
    """A file kept open for reading while anything reads from it; closed with its last
    reader."""

    def __init__(self, path: Path, where: str) -> None:
        try:
            self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise EdgeVPRError(f"cannot read {where}: {exc.strerror or exc}") from None
        self._closer = weakref.finalize(self, os.close, self.fd)


def read_exactly(fd: int, buffer: np.ndarray, offset: int, where: str) -> None:
    """Fill ``buffer`` (a contiguous uint8 array) from ``offset``; a short read means the
    file was cut under us."""
    view = memoryview(buffer).cast("B")
    done = 0
    while done < len(view):
        try:
            got = os.preadv(fd, [view[done:]], offset + done)
        except OSError as exc:
            raise EdgeVPRError(f"cannot read {where}: {exc.strerror or exc}") from None
        if got == 0:
            raise EdgeVPRError(f"{where} changed on disk since it was loaded (it is shorter); "
                               "load it again")  # fmt: skip
        done += got


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's output function over uint64 values (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@lru_cache(maxsize=16)
def _weights(words: int) -> np.ndarray:
    return _splitmix64(np.arange(words, dtype=np.uint64)) | np.uint64(1)


def row_checks(rows: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """Check values of ``rows`` (N x D, float16 or float32) stored at row ``numbers``."""
    rows = np.ascontiguousarray(rows)
    row_bytes = rows.shape[1] * rows.itemsize
    word = math.gcd(row_bytes, 8)
    words = rows.view(np.dtype(f"<u{word}")).reshape(len(rows), -1)
    if word != 8:
        words = words.astype(np.uint64)
    with np.errstate(over="ignore"):
        mixed = _splitmix64(np.asarray(numbers).astype(np.uint64) | np.uint64(ROW_DOMAIN))
        return words @ _weights(words.shape[1]) + mixed


class FileRows:
    """The stored descriptors of a map file: ``shape`` rows of ``dtype``, read on demand.

    ``checks`` are the rows' check values as the file stores them; a file from before
    they existed has them computed here once, while its checksum is verified.
    """

    def __init__(self, file: OpenFile, offset: int, shape: tuple[int, ...], dtype: np.dtype,
                 sha256: str, checks: np.ndarray | None, where: str) -> None:  # fmt: skip
        self._file, self._offset = file, offset
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = dtype
        self._row_bytes = self.shape[1] * dtype.itemsize
        self._sha256, self._where = sha256, where
        self.checks = self._verified_checks() if checks is None else checks

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, rows: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
        """Rows by number (any order, repeats allowed), verified, as ``dtype`` (default:
        the file's; float16 rows are converted once, and checked in the conversion)."""
        rows = np.asarray(rows, np.int64)
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        if not rows.size:
            return np.zeros((0, self.shape[1]), dtype)
        unique, inverse = np.unique(rows, return_inverse=True)
        out = np.empty((len(unique), self.shape[1]), self.dtype)
        runs = np.flatnonzero(np.diff(unique) != 1) + 1
        for start, stop in zip(np.r_[0, runs], np.r_[runs, len(unique)], strict=True):
            offset = self._offset + int(unique[start]) * self._row_bytes
            read_exactly(self._file.fd, out[start:stop].reshape(-1).view(np.uint8), offset,
                         self._where)  # fmt: skip
        self._check_values(out, unique)
        converted = out.astype(dtype, copy=False)
        self._check_norms(converted if dtype == np.float32 else out.astype(np.float32), unique)
        return converted[inverse.reshape(-1)]

    def blocks(self) -> Iterator[np.ndarray]:
        """Every row in order, a verified block at a time."""
        for start in range(0, len(self), BLOCK_ROWS):
            yield self.read(np.arange(start, min(start + BLOCK_ROWS, len(self))))

    def read_all(self) -> np.ndarray:
        return np.concatenate([np.zeros((0, self.shape[1]), self.dtype), *self.blocks()])

    def verify(self) -> None:
        """Every row against its check value and the section against its checksum."""
        digest = hashlib.sha256()
        for block in self.blocks():
            digest.update(memoryview(block).cast("B"))
        if digest.hexdigest() != self._sha256:
            raise EdgeVPRError(f"{self._where} is corrupt (checksum mismatch in vectors); "
                               f"{REBUILD_HINT}")  # fmt: skip

    def _check_values(self, rows: np.ndarray, numbers: np.ndarray) -> None:
        bad = np.flatnonzero(row_checks(rows, numbers) != self.checks[numbers])
        if len(bad):
            raise EdgeVPRError(
                f"{self._where} changed on disk or is damaged (stored descriptor of row "
                f"{int(numbers[bad[0]])} fails its check); load it again or {REBUILD_HINT}"
            )

    def _check_norms(self, rows: np.ndarray, numbers: np.ndarray) -> None:
        """float32 ``rows`` are unit vectors (a forged row of huge values would win every
        query)."""
        with np.errstate(over="ignore", invalid="ignore"):
            norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        broken = ~(np.abs(norms - 1.0) <= NORM_TOLERANCE)  # NaN and infinity included
        if broken.any():
            row = int(numbers[np.argmax(broken)])
            raise EdgeVPRError(f"{self._where} holds a broken stored descriptor (row {row} is "
                               "not a unit vector)")  # fmt: skip

    def _verified_checks(self) -> np.ndarray:
        """Check values of a file that has none, computed while its checksum is verified
        (a full read: saving such a map again stores them)."""
        digest = hashlib.sha256()
        checks = np.empty(len(self), np.uint64)
        block = np.empty((BLOCK_ROWS, self.shape[1]), self.dtype)
        for start in range(0, len(self), BLOCK_ROWS):
            part = block[: min(BLOCK_ROWS, len(self) - start)]
            read_exactly(self._file.fd, part.reshape(-1).view(np.uint8),
                         self._offset + start * self._row_bytes, self._where)  # fmt: skip
            digest.update(memoryview(part).cast("B"))
            numbers = np.arange(start, start + len(part))
            checks[numbers] = row_checks(part, numbers)
        if digest.hexdigest() != self._sha256:
            raise EdgeVPRError(f"{self._where} is corrupt (checksum mismatch in vectors); "
                               f"{REBUILD_HINT}")  # fmt: skip
        return checks
