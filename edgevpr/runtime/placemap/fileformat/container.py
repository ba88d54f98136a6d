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

A loaded map never changes under its reader, whatever happens to the file: every section but
the stored descriptors is read into the process's own memory and its checksum verified
there, so what was checked is what is used. The descriptors (16 GB for a million 4096-d
places) stay in the file and are read a few rows at a time by ``pread`` (``filerows``): a
file truncated under the reader gives a short read, never the SIGBUS a memory map would,
and every row read is verified against its own check value before it is used. No pickle:
the header is JSON, sections are numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.files import atomic_open
from edgevpr.core.formats import MAP_MAGIC
from edgevpr.runtime.placemap.fileformat.filerows import FileRows, OpenFile, read_exactly

MAGIC = MAP_MAGIC
VERSION = 2
PREFIX = struct.Struct("<14sH")
HEADER = struct.Struct("<14sHQ32s")
ALIGN = 4096
# The header is metadata and a table of sections: a few kB for any real map. The caps keep
# a forged one from costing memory (64 MB of "[]" took 1.7 GB to parse).
MAX_HEADER = 4 << 20
MAX_HEADER_VALUES = 200_000  # JSON arrays and objects in it, counted before parsing
MAX_SECTIONS = 256
MAX_EXTENT = 1 << 50  # bytes; no dimension or offset is larger
WRITE_CHUNK = 64 << 20
DTYPES = ("uint8", "int8", "int16", "int32", "int64", "uint32", "uint64", "float16", "float32",
          "float64", "bool")  # fmt: skip
VECTORS = "vectors"  # read on demand, a row at a time (see the module's docstring)
ROW_CHECKS = "vectors.check"
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


class LazySection(ABC):
    """A section whose contents are made as it is written, a block at a time (stored
    descriptors, read and verified as they are copied): its type and size are known first."""

    dtype: np.dtype
    shape: tuple[int, ...]
    nbytes: int

    @abstractmethod
    def chunks(self) -> Iterator[np.ndarray]: ...


def _blocks(array: Any) -> Iterator[np.ndarray]:
    """An array's contents in blocks of about ``WRITE_CHUNK`` bytes (a lazy section gives
    its own)."""
    if isinstance(array, LazySection):
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
    so it is written last, over a placeholder of the same size. Sections are written in
    the order given (a section computed from another's contents comes after it)."""
    sections = {n: a if isinstance(a, LazySection) else np.asarray(a)
                for n, a in sections.items()}  # fmt: skip
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


class MapFile:
    """A version-2 map file opened for reading: its header, every section but the stored
    descriptors as private arrays (checksums verified), and the descriptors as
    :class:`FileRows` read on demand (``rows``; None when the map keeps none).

    ``identity`` is the header's sha256: it names the whole file's contents (the header
    holds every section's checksum), so a writer can tell whether the file it loaded is
    still the one on disk.
    """

    def __init__(self, path: Path, verify_all: bool = False) -> None:
        self.path = path
        where = f"place map {path}"
        self._file = OpenFile(path, where)
        fd = self._file.fd
        self.metadata, self.entries, header_length, self.identity = _read_header(fd, where)
        size = os.fstat(fd).st_size
        header_end = HEADER.size + header_length
        _check_extent(self.entries, size, header_end, where)
        _check_padding(fd, self.entries, header_end, where)
        self.sections: dict[str, np.ndarray] = {}
        vectors = None
        for entry in self.entries:
            if entry.name == VECTORS:
                vectors = entry
            else:
                array = _read_section(fd, entry, where)
                check_sha(array, entry, where)
                self.sections[entry.name] = array
        self.rows = None if vectors is None else self._rows(vectors, where)
        if verify_all and self.rows is not None:
            self.rows.verify()

    def _rows(self, entry: SectionEntry, where: str) -> FileRows:
        if len(entry.shape) != 2 or entry.dtype not in ("float16", "float32"):
            raise EdgeVPRError(f"{where} is corrupt (its stored descriptors are not rows)")
        checks = self.sections.pop(ROW_CHECKS, None)
        if checks is not None and checks.shape != (entry.shape[0],):
            raise EdgeVPRError(f"{where} is corrupt ({ROW_CHECKS} does not fit the rows)")
        return FileRows(self._file, entry.offset, entry.shape, np.dtype(entry.dtype),
                        entry.sha256, checks, where)  # fmt: skip

    def arrays(self) -> dict[str, np.ndarray]:
        """Every section as an array (the stored descriptors read whole and verified), in
        the file's order: for tools that rewrite a map."""
        out = {}
        for entry in self.entries:
            if entry.name == VECTORS and self.rows is not None:
                out[entry.name] = self.rows.read_all()
            elif entry.name == ROW_CHECKS and self.rows is not None:
                out[entry.name] = self.rows.checks
            else:
                out[entry.name] = self.sections[entry.name]
        return out


def check_sha(array: np.ndarray, entry: SectionEntry, where: str) -> None:
    digest = hashlib.sha256()
    flat = array.reshape(-1).view(np.uint8) if array.size else np.zeros(0, np.uint8)
    for start in range(0, flat.size, WRITE_CHUNK):
        digest.update(memoryview(flat[start : start + WRITE_CHUNK]))
    if digest.hexdigest() != entry.sha256:
        raise EdgeVPRError(
            f"{where} is corrupt (checksum mismatch in {entry.name}); {REBUILD_HINT}"
        )


def _read_section(fd: int, entry: SectionEntry, where: str) -> np.ndarray:
    """A section's bytes read into a new array (never a view of the file)."""
    array = np.empty(entry.shape, np.dtype(entry.dtype))
    if entry.length:
        read_exactly(fd, array.reshape(-1).view(np.uint8), entry.offset, where)
    return array


def _read_header(fd: int, where: str) -> tuple[dict[str, Any], list[SectionEntry], int, bytes]:
    raw = os.pread(fd, HEADER.size, 0)
    if len(raw) < HEADER.size:
        raise EdgeVPRError(f"{where} is truncated; {REBUILD_HINT}")
    _, _, length, digest = HEADER.unpack(raw)
    if length > MAX_HEADER:
        raise EdgeVPRError(f"{where} is corrupt (a header of {length} bytes)")
    header = os.pread(fd, length, HEADER.size)
    if len(header) < length:
        raise EdgeVPRError(f"{where} is truncated; {REBUILD_HINT}")
    if hashlib.sha256(header).digest() != digest:
        raise EdgeVPRError(f"{where} is corrupt (checksum mismatch in its header); {REBUILD_HINT}")
    if header.count(b"[") + header.count(b"{") > MAX_HEADER_VALUES:
        raise EdgeVPRError(f"{where} has a broken header (too many nested values)")
    try:
        metadata = json.loads(header.decode("utf-8"))
        if not isinstance(metadata, dict):
            raise TypeError("the header is not an object")
        items = metadata.pop("sections")
        if not isinstance(items, list) or len(items) > MAX_SECTIONS:
            raise TypeError("the table of sections is malformed")
        entries = [_entry(item) for item in items]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError,
            RecursionError) as exc:  # fmt: skip
        raise EdgeVPRError(f"{where} has a broken header ({type(exc).__name__})") from None
    return metadata, entries, length, digest


def _entry(item: Any) -> SectionEntry:
    if not isinstance(item, dict):
        raise TypeError("a section entry is not an object")
    name, dtype, shape = item["name"], item["dtype"], item["shape"]
    offset, length, sha = item["offset"], item["length"], item["sha256"]
    if not isinstance(name, str) or dtype not in DTYPES or not isinstance(sha, str):
        raise ValueError(f"section {name!r} is malformed")
    numbers = [offset, length, *shape] if isinstance(shape, list) and len(shape) <= 4 else [None]
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_EXTENT
               for v in numbers):  # fmt: skip
        raise ValueError(f"section {name!r} has a malformed extent")
    count = 1
    for dimension in shape:  # Python integers: a forged shape cannot overflow
        count *= dimension
    if count * np.dtype(dtype).itemsize != length:
        raise ValueError(f"section {name!r} has the wrong size")
    return SectionEntry(name, dtype, tuple(shape), offset, length, sha)


def _check_extent(entries: Iterable[SectionEntry], size: int, header_end: int, where: str) -> None:
    """Sections laid out as the writer lays them: in order, each at the first aligned
    offset after the one before (the first within reach of the header), not overlapping,
    and the file ends where the last one does (or where the header does, without sections)."""
    entries = list(entries)
    end = header_end
    names = set()
    for position, entry in enumerate(sorted(entries, key=lambda e: e.offset)):
        if entry.name in names:
            raise EdgeVPRError(f"{where} is corrupt (section {entry.name} appears twice)")
        names.add(entry.name)
        first_reach = header_end + 24 * len(entries) + 64 + ALIGN
        misplaced = entry.offset > first_reach if position == 0 else entry.offset != _aligned(end)
        if entry.offset % ALIGN or entry.offset < end or misplaced:
            raise EdgeVPRError(f"{where} is corrupt (section {entry.name} is misplaced)")
        end = entry.offset + entry.length
        if end > size:
            raise EdgeVPRError(f"{where} is truncated (section {entry.name}); {REBUILD_HINT}")
    if entries and size != end:
        raise EdgeVPRError(f"{where} is corrupt ({size - end} unexpected bytes at the end)")


def _check_padding(fd: int, entries: list[SectionEntry], header_end: int, where: str) -> None:
    """The bytes between the header and the sections, and between sections, are zero: no
    checksum covers them, so a change there is refused this way (each gap is under a page
    or two, see ``_check_extent``)."""
    end = header_end
    for entry in sorted(entries, key=lambda e: e.offset):
        gap = os.pread(fd, max(entry.offset - end, 0), end)
        if gap.strip(b"\0"):
            raise EdgeVPRError(f"{where} is corrupt (non-zero padding at byte {end})")
        end = entry.offset + entry.length


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


def read_identity(path: Path) -> bytes | None:
    """A version-2 file's header sha256 (see :class:`MapFile`), None for anything else."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(HEADER.size)
    except OSError:
        return None
    if len(raw) < HEADER.size or not raw.startswith(MAGIC) or PREFIX.unpack_from(raw)[1] != 2:
        return None
    return HEADER.unpack(raw)[3]
