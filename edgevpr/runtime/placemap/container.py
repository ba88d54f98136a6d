"""The place-map file, format version 2: one file of page-aligned, checksummed sections.

Layout (little-endian)::

    magic            14 bytes  b"EDGEVPRMAP\\r\\n\\x1a\\n"  (as version 1)
    format_version    u16      2
    header_length     u64      bytes of the UTF-8 JSON header
    header_sha256     32 bytes over the JSON header
    header            JSON     the map's metadata and its table of sections: name, dtype,
                               shape, offset, length and sha256 of each
    padding           to a multiple of 4096 bytes
    sections          each at a multiple of 4096 bytes: raw little-endian arrays

Sections are memory-mapped, never copied on load: records are NumPy columns, full-precision
descriptors are read where a query needs them, and an index that can search from a mapping
(usearch) does. Every section's checksum is verified on load except those over
``VERIFY_ON_LOAD_BYTES`` (a million 4096-d descriptors are 16 GB, 12 s of hashing here):
``edgevpr index verify`` checks those. No pickle: the header is JSON, sections are numbers.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from edgevpr.errors import EdgeVPRError
from edgevpr.files import atomic_open

MAGIC = b"EDGEVPRMAP\r\n\x1a\n"
VERSION = 2
PREFIX = struct.Struct("<14sH")
HEADER = struct.Struct("<14sHQ32s")
ALIGN = 4096
VERIFY_ON_LOAD_BYTES = 256 << 20
MAX_HEADER = 1 << 30
WRITE_CHUNK = 64 << 20
DTYPES = ("uint8", "int8", "int16", "int32", "int64", "uint32", "uint64", "float16", "float32",
          "float64", "bool")  # fmt: skip
REBUILD_HINT = "rebuild it with 'edgevpr index build' or restore a copy"


@dataclass(frozen=True)
class SectionEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    length: int
    sha256: str


def _aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def _table(sections: dict[str, Any], start: int, hashes: dict[str, str]) -> list[dict]:
    table, offset = [], start
    for name, array in sections.items():
        table.append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape),
                      "offset": offset, "length": int(array.nbytes),
                      "sha256": hashes.get(name, "0" * 64)})  # fmt: skip
        offset = _aligned(offset + int(array.nbytes))
    return table


def _header_bytes(metadata: dict[str, Any], table: list[dict]) -> bytes:
    header = {**metadata, "sections": table}
    return json.dumps(header, separators=(",", ":"), sort_keys=True).encode()


def _blocks(array: Any) -> Iterator[np.ndarray]:
    """An array's contents in blocks of about ``WRITE_CHUNK`` bytes: a memory map is read
    a block at a time, and anything with ``chunks()`` gives its own."""
    if hasattr(array, "chunks"):
        yield from array.chunks()
        return
    flat = np.ascontiguousarray(array).reshape(-1)
    step = max(1, WRITE_CHUNK // max(flat.itemsize, 1))
    for start in range(0, flat.size, step):
        yield flat[start : start + step]


def _write_array(out: BinaryIO, array: Any) -> str:
    """Stream an array's bytes and return their sha256."""
    digest = hashlib.sha256()
    for block in _blocks(array):
        data = memoryview(np.ascontiguousarray(block)).cast("B")
        digest.update(data)
        out.write(data)
    return digest.hexdigest()


def write_sections(path: Path, metadata: dict[str, Any], sections: dict[str, Any]) -> None:
    """Write ``metadata`` and ``sections`` atomically: a temporary file beside ``path``,
    fsync, rename. The header's length does not depend on the checksums (fixed-width hex),
    so it is written last, over a placeholder of the same size."""
    sections = {n: a if hasattr(a, "chunks") else np.asarray(a) for n, a in sections.items()}
    for name, array in sections.items():
        if array.dtype.name not in DTYPES or array.dtype.byteorder == ">":
            raise EdgeVPRError(f"section {name} has an unsupported dtype {array.dtype}")
    placeholder = _header_bytes(metadata, _table(sections, 0, {}))
    # room for the offsets' digits, which the placeholder (all at 0) lacks
    start = _aligned(HEADER.size + len(placeholder) + 24 * len(sections) + 64)
    table = _table(sections, start, {})
    hashes: dict[str, str] = {}
    with atomic_open(path) as out:
        for entry, (name, array) in zip(table, sections.items(), strict=True):
            out.seek(entry["offset"])
            hashes[name] = _write_array(out, array)
        header = _header_bytes(metadata, _table(sections, start, hashes))
        if HEADER.size + len(header) > start:
            raise EdgeVPRError(f"cannot write {path}: its header outgrew its room")
        end = table[-1]["offset"] + table[-1]["length"] if table else HEADER.size + len(header)
        out.truncate(end)
        out.seek(0)
        out.write(HEADER.pack(MAGIC, VERSION, len(header), hashlib.sha256(header).digest()))
        out.write(header)


class MappedMap:
    """A version-2 map file opened for reading: its header and its sections as arrays that
    read straight from a memory map of the file (kept open while any is in use)."""

    def __init__(self, path: Path, verify_all: bool = False) -> None:
        self.path = path
        where = f"place map {path}"
        with open(path, "rb") as fh:
            self.metadata, self.entries, self._header_length = _read_header(fh, where)
            size = os.fstat(fh.fileno()).st_size
            self._mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        _check_extent(self.entries, size, HEADER.size + self._header_length, where)
        self._check_padding(where)
        self.sections: dict[str, np.ndarray] = {}
        for entry in self.entries:
            array = self._array(entry, where)
            if verify_all or entry.length <= VERIFY_ON_LOAD_BYTES:
                check_sha(array, entry, where)
            self.sections[entry.name] = array

    def _check_padding(self, where: str) -> None:
        """The bytes between the header and the sections, and between sections, are zero:
        no checksum covers them, so a change there is refused this way."""
        header_end = HEADER.size + self._header_length
        gaps, end = [], header_end
        for entry in sorted(self.entries, key=lambda e: e.offset):
            gaps.append((end, entry.offset))
            end = entry.offset + entry.length
        for start, stop in gaps:
            gap = np.frombuffer(self._mmap, np.uint8, max(stop - start, 0), start)  # type: ignore[arg-type]
            if gap.any():
                raise EdgeVPRError(f"{where} is corrupt (non-zero padding at byte {start})")

    def _array(self, entry: SectionEntry, where: str) -> np.ndarray:
        dtype = np.dtype(entry.dtype)
        count = int(np.prod(entry.shape, dtype=np.int64)) if entry.shape else 1
        if count * dtype.itemsize != entry.length:
            raise EdgeVPRError(f"{where} is corrupt (section {entry.name} has the wrong size)")
        if not entry.length:
            return np.zeros(entry.shape, dtype)
        raw = np.frombuffer(self._mmap, dtype, count, entry.offset)  # type: ignore[arg-type]
        return raw.reshape(entry.shape)

    def unverified(self) -> list[str]:
        """Sections too large to verify on load."""
        return [e.name for e in self.entries if e.length > VERIFY_ON_LOAD_BYTES]

    def verify(self) -> None:
        """Check every section's checksum (the large ones too)."""
        for entry in self.entries:
            check_sha(self.sections[entry.name], entry, f"place map {self.path}")


def check_sha(array: np.ndarray, entry: SectionEntry, where: str) -> None:
    digest = hashlib.sha256()
    flat = array.reshape(-1).view(np.uint8) if array.size else np.zeros(0, np.uint8)
    for start in range(0, flat.size, WRITE_CHUNK):
        digest.update(memoryview(flat[start : start + WRITE_CHUNK]))
    if digest.hexdigest() != entry.sha256:
        raise EdgeVPRError(
            f"{where} is corrupt (checksum mismatch in {entry.name}); {REBUILD_HINT}"
        )


def _read_header(fh: BinaryIO, where: str) -> tuple[dict[str, Any], list[SectionEntry], int]:
    raw = fh.read(HEADER.size)
    if len(raw) < HEADER.size:
        raise EdgeVPRError(f"{where} is truncated; {REBUILD_HINT}")
    _, _, length, digest = HEADER.unpack(raw)
    if length > MAX_HEADER:
        raise EdgeVPRError(f"{where} is corrupt (a header of {length} bytes)")
    header = fh.read(length)
    if len(header) < length:
        raise EdgeVPRError(f"{where} is truncated; {REBUILD_HINT}")
    if hashlib.sha256(header).digest() != digest:
        raise EdgeVPRError(f"{where} is corrupt (checksum mismatch in its header); {REBUILD_HINT}")
    try:
        metadata = json.loads(header.decode("utf-8"))
        if not isinstance(metadata, dict):
            raise TypeError("the header is not an object")
        entries = [_entry(item) for item in metadata.pop("sections")]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise EdgeVPRError(f"{where} has a broken header ({exc})") from None
    return metadata, entries, length


def _entry(item: Any) -> SectionEntry:
    if not isinstance(item, dict):
        raise TypeError("a section entry is not an object")
    name, dtype, shape = item["name"], item["dtype"], item["shape"]
    offset, length, sha = item["offset"], item["length"], item["sha256"]
    if not isinstance(name, str) or dtype not in DTYPES or not isinstance(sha, str):
        raise ValueError(f"section {name!r} is malformed")
    numbers = [offset, length, *shape] if isinstance(shape, list) else [None]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in numbers):
        raise ValueError(f"section {name!r} has a malformed extent")
    return SectionEntry(name, dtype, tuple(shape), offset, length, sha)


def _check_extent(entries: Iterable[SectionEntry], size: int, header_end: int, where: str) -> None:
    """Sections in order, aligned, not overlapping, and the file ends where the last one
    does (or where the header does, without sections)."""
    entries = list(entries)
    end = header_end
    names = set()
    for entry in sorted(entries, key=lambda e: e.offset):
        if entry.name in names:
            raise EdgeVPRError(f"{where} is corrupt (section {entry.name} appears twice)")
        names.add(entry.name)
        if entry.offset % ALIGN or entry.offset < end:
            raise EdgeVPRError(f"{where} is corrupt (section {entry.name} overlaps another)")
        end = entry.offset + entry.length
        if end > size:
            raise EdgeVPRError(f"{where} is truncated (section {entry.name}); {REBUILD_HINT}")
    if entries and size != end:
        raise EdgeVPRError(f"{where} is corrupt ({size - end} unexpected bytes at the end)")


def read_version(path: Path) -> int:
    """The format version of a map file (0 when it is not one)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(PREFIX.size)
    except OSError as exc:
        raise EdgeVPRError(f"cannot read place map {path}: {exc.strerror or exc}") from None
    if not raw.startswith(MAGIC[: len(raw)]) or not raw:
        return 0
    if len(raw) < PREFIX.size:
        return -1  # cut inside the magic or the version
    return PREFIX.unpack(raw)[1]
