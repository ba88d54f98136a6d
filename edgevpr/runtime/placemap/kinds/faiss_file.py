"""faiss's serialised indexes, checked before faiss reads them.

faiss trusts much of what it reads: a forged file made faiss-cpu 1.8 crash at search, and
an inverted-list index whose coarse quantiser holds more centroids than it has lists loads
on 1.15 and fails every query. The map's checksums stop accidents, not forgeries, so the
bytes of the four shapes a map writes are parsed here first, field by field as faiss's
``index_write.cpp`` lays them out (faiss 1.9 to 1.15), and every size, count, id, level and
link is checked before faiss is given them:

    IwSq  inverted lists over scalar-quantised codes     (faiss-ivf sq8, f16)
    IwPQ  inverted lists over product-quantised codes    (faiss-ivf pq)
    IxM2  id map over IHNs (HNSW, scalar-quantised storage IxSQ) or IHNf (HNSW, flat IxFI)

Sizes are compared with the bytes that remain before anything is allocated, so a small
file cannot claim a large allocation. The parse gives the ids the index holds.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

METRIC_INNER_PRODUCT = 0
QT_8BIT, QT_FP16 = 0, 4  # faiss.ScalarQuantizer.QT_8bit, QT_fp16
SQ_CODE_BYTES = {QT_8BIT: 1, QT_FP16: 2}
SQ_TRAINED = {QT_8BIT: 2, QT_FP16: 0}  # floats per dimension (vmin, vdiff)
MAX_LISTS = 1 << 22
MAX_PQ_BITS = 8
MAX_HNSW_LEVELS = 64
MAX_EF = 1 << 20
NODE_CHUNK = 65536  # HNSW nodes checked at once (bounds the memory of the check)


class BrokenFaiss(ValueError):
    """The bytes are not an index of the shape a map writes."""


@dataclass(frozen=True)
class FaissFacts:
    """What the parse found: the structure's name and the ids it holds."""

    kind: str
    ids: np.ndarray


class _Reader:
    def __init__(self, data: np.ndarray) -> None:
        self._data = memoryview(np.ascontiguousarray(data, np.uint8)).cast("B")
        self.position = 0

    @property
    def left(self) -> int:
        return len(self._data) - self.position

    def take(self, size: int) -> memoryview:
        if size < 0 or size > self.left:
            raise BrokenFaiss(f"it ends {size - self.left} bytes early")
        out = self._data[self.position : self.position + size]
        self.position += size
        return out

    def number(self, fmt: str) -> int | float:
        layout = struct.Struct("<" + fmt)
        return layout.unpack(self.take(layout.size))[0]

    def fourcc(self) -> str:
        return bytes(self.take(4)).decode("latin-1")

    def array(self, dtype: str, count: int) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        if count < 0 or count > self.left // itemsize:
            raise BrokenFaiss(f"an array of {count} values runs past the end")
        return np.frombuffer(self.take(count * itemsize), dtype)

    def vector(self, dtype: str) -> np.ndarray:
        """faiss's WRITEVECTOR: a size_t count, then the values."""
        return self.array(dtype, int(self.number("Q")))


def check_faiss_index(data: np.ndarray, dim: int, storage: str) -> FaissFacts:
    """Parse a map's faiss index bytes completely; raise :class:`BrokenFaiss` naming the
    first thing that is not as a map writes it."""
    reader = _Reader(data)
    kind = reader.fourcc()
    if kind == "IwSq" and storage in ("sq8", "f16"):
        ids = _ivf_sq(reader, dim, storage)
    elif kind == "IwPQ" and storage == "pq":
        ids = _ivf_pq(reader, dim)
    elif kind == "IxM2":
        ids = _id_map(reader, dim, storage)
    else:
        raise BrokenFaiss(f"a {kind!r} structure, which a {storage} map does not hold")
    if reader.left:
        raise BrokenFaiss(f"{reader.left} bytes after its end")
    if len(ids) and (ids.min() < 0 or len(np.unique(ids)) != len(ids)):
        raise BrokenFaiss("its ids are negative or repeated")
    return FaissFacts(kind, ids)


def _header(reader: _Reader, dim: int) -> int:
    """faiss's index header; returns ntotal."""
    d, ntotal = reader.number("i"), reader.number("q")
    reader.take(16)  # two unused idx_t
    trained, metric = reader.number("B"), reader.number("i")
    if d != dim or metric != METRIC_INNER_PRODUCT or trained not in (0, 1):
        raise BrokenFaiss(f"a header for {d}-d vectors, metric {metric}; the map needs {dim}-d ip")
    if not 0 <= ntotal <= 1 << 40:
        raise BrokenFaiss(f"{ntotal} vectors")
    return int(ntotal)


def _finite(values: np.ndarray, what: str) -> None:
    if not np.isfinite(values).all():
        raise BrokenFaiss(f"its {what} are not finite")


def _flat(reader: _Reader, dim: int, expected: int) -> None:
    """IxFI: an inner-product flat index of ``expected`` vectors."""
    if reader.fourcc() != "IxFI":
        raise BrokenFaiss("its flat storage is not an inner-product flat index")
    ntotal = _header(reader, dim)
    words = int(reader.number("Q"))  # faiss's XB vector: counts of 4 bytes
    if ntotal != expected or words != ntotal * dim:
        raise BrokenFaiss(f"a flat index of {ntotal} vectors where {expected} belong")
    _finite(reader.array("<f4", words), "vectors")


def _ivf_header(reader: _Reader, dim: int) -> tuple[int, int]:
    """The inverted-list header and its coarse quantiser; returns (ntotal, nlist)."""
    ntotal = _header(reader, dim)
    nlist, nprobe = int(reader.number("Q")), int(reader.number("Q"))
    if not 1 <= nlist <= MAX_LISTS or not 1 <= nprobe <= MAX_LISTS:
        raise BrokenFaiss(f"{nlist} lists probed {nprobe} at a time")
    _flat(reader, dim, nlist)
    direct, mapped = reader.number("B"), reader.vector("<i8")
    if direct != 0 or len(mapped):
        raise BrokenFaiss("a direct map, which a map never writes")
    return ntotal, nlist


def _scalar_quantizer(reader: _Reader, dim: int, storage: str) -> int:
    """faiss's ScalarQuantizer; returns its code size."""
    qtype = reader.number("i")
    reader.number("i")  # rangestat: used only while training
    reader.number("f")
    d, code_size = reader.number("Q"), reader.number("Q")
    wanted = QT_FP16 if storage == "f16" else QT_8BIT
    if qtype != wanted or d != dim or code_size != dim * SQ_CODE_BYTES[wanted]:
        raise BrokenFaiss(f"a scalar quantiser of type {qtype} for {d}-d in {code_size} bytes")
    trained = reader.vector("<f4")
    if len(trained) != SQ_TRAINED[wanted] * dim:
        raise BrokenFaiss(f"{len(trained)} trained values for {dim}-d")
    _finite(trained, "trained ranges")
    return int(code_size)


def _lists(reader: _Reader, nlist: int, code_size: int, ntotal: int) -> np.ndarray:
    """ArrayInvertedLists ("ilar"); returns the ids of every list."""
    if reader.fourcc() != "ilar":
        raise BrokenFaiss("its lists are not in-memory inverted lists")
    if reader.number("Q") != nlist or reader.number("Q") != code_size:
        raise BrokenFaiss("its lists disagree with its header")
    layout = reader.fourcc()
    table = reader.vector("<u8").astype(np.int64)
    if layout == "full" and len(table) == nlist:
        sizes = table
    elif layout == "sprs" and len(table) % 2 == 0:
        lists, counts = table[0::2], table[1::2]
        if len(lists) and (lists.max() >= nlist or (np.diff(lists) <= 0).any()):
            raise BrokenFaiss("its sparse list table is out of order")
        sizes = np.zeros(nlist, np.int64)
        sizes[lists] = counts
    else:
        raise BrokenFaiss(f"a list table {layout!r} of {len(table)} entries")
    if (sizes < 0).any() or int(sizes.sum()) != ntotal:
        raise BrokenFaiss(f"lists of {int(sizes.sum())} vectors for {ntotal}")
    ids = []
    for size in sizes[sizes > 0].tolist():
        reader.take(size * code_size)
        ids.append(reader.array("<i8", size))
    return np.concatenate(ids) if ids else np.zeros(0, np.int64)


def _ivf_sq(reader: _Reader, dim: int, storage: str) -> np.ndarray:
    ntotal, nlist = _ivf_header(reader, dim)
    code_size = _scalar_quantizer(reader, dim, storage)
    if reader.number("Q") != code_size or reader.number("B") not in (0, 1):
        raise BrokenFaiss("its code size disagrees with its quantiser")
    return _lists(reader, nlist, code_size, ntotal)


def _ivf_pq(reader: _Reader, dim: int) -> np.ndarray:
    ntotal, nlist = _ivf_header(reader, dim)
    by_residual, code_size = reader.number("B"), int(reader.number("Q"))
    d, m, nbits = (int(reader.number("Q")) for _ in range(3))
    if by_residual not in (0, 1) or d != dim or not 1 <= m <= dim or dim % m:
        raise BrokenFaiss(f"a product quantiser of {m} parts for {d}-d")
    if not 1 <= nbits <= MAX_PQ_BITS or code_size != (m * nbits + 7) // 8:
        raise BrokenFaiss(f"{nbits}-bit codes in {code_size} bytes")
    centroids = reader.vector("<f4")
    if len(centroids) != dim * (1 << nbits):
        raise BrokenFaiss(f"{len(centroids)} centroid values")
    _finite(centroids, "centroids")
    return _lists(reader, nlist, code_size, ntotal)


def _id_map(reader: _Reader, dim: int, storage: str) -> np.ndarray:
    ntotal = _header(reader, dim)
    kind = reader.fourcc()
    if (kind, storage) not in (("IHNs", "sq8"), ("IHNs", "f16"), ("IHNf", "f32")):
        raise BrokenFaiss(f"an id map over {kind!r}, which a {storage} map does not hold")
    if _header(reader, dim) != ntotal:
        raise BrokenFaiss("its graph and its id map disagree in size")
    _hnsw(reader, ntotal)
    if kind == "IHNf":
        _flat(reader, dim, ntotal)
    else:
        if reader.fourcc() != "IxSQ" or _header(reader, dim) != ntotal:
            raise BrokenFaiss("its storage is not scalar-quantised codes of its vectors")
        code_size = _scalar_quantizer(reader, dim, storage)
        if len(reader.vector("u1")) != ntotal * code_size:
            raise BrokenFaiss("its storage holds the wrong number of codes")
    ids = reader.vector("<i8")
    if len(ids) != ntotal:
        raise BrokenFaiss(f"{len(ids)} ids for {ntotal} vectors")
    return np.array(ids)


def _hnsw(reader: _Reader, ntotal: int) -> None:
    """faiss's HNSW graph: levels, offsets, every link, the entry point."""
    probas = reader.vector("<f8")
    cum = reader.vector("<i4").astype(np.int64)
    levels = reader.vector("<i4").astype(np.int64)
    offsets = reader.vector("<u8").astype(np.int64)
    neighbours = reader.vector("<i4")
    entry, max_level, ef_construction, ef_search = (int(reader.number("i")) for _ in range(4))
    reader.number("i")  # upper_beam, no longer used
    if not 1 <= len(probas) <= MAX_HNSW_LEVELS or len(cum) != len(probas) + 1:
        raise BrokenFaiss(f"{len(probas)} level probabilities and {len(cum)} level sizes")
    if not np.isfinite(probas).all() or (probas < 0).any() or (probas > 1).any():
        raise BrokenFaiss("its level probabilities are not probabilities")
    if cum[0] != 0 or (np.diff(cum) <= 0).any() or cum[-1] > MAX_HNSW_LEVELS * 1024:
        raise BrokenFaiss("its per-level list sizes are malformed")
    if not (1 <= ef_construction <= MAX_EF and 1 <= ef_search <= MAX_EF):
        raise BrokenFaiss(f"ef_construction {ef_construction}, ef_search {ef_search}")
    if len(levels) != ntotal or len(offsets) != ntotal + 1:
        raise BrokenFaiss(f"{len(levels)} levels and {len(offsets)} offsets for {ntotal} nodes")
    if ntotal and ((levels < 1).any() or levels.max() >= len(cum)):
        raise BrokenFaiss("a node's level is out of range")
    expected = np.concatenate([[0], np.cumsum(cum[levels])]) if ntotal else np.zeros(1, np.int64)
    if not np.array_equal(offsets, expected) or len(neighbours) != expected[-1]:
        raise BrokenFaiss("its link offsets do not follow its levels")
    if not ntotal:
        if entry != -1 or max_level != -1:
            raise BrokenFaiss("an empty graph with an entry point")
        return
    if not (0 <= entry < ntotal and max_level == levels.max() - 1 == levels[entry] - 1):
        raise BrokenFaiss("its entry point is not on its top level")
    _links(neighbours, levels, offsets, cum)


def _links(neighbours: np.ndarray, levels: np.ndarray, offsets: np.ndarray, cum: np.ndarray
           ) -> None:  # fmt: skip
    """Each link is -1 or a node that reaches the link's level (faiss reads a neighbour's
    list on that level, which a lower node does not have)."""
    for first in range(0, len(levels), NODE_CHUNK):
        nodes = np.arange(first, min(first + NODE_CHUNK, len(levels)))
        start, stop = offsets[nodes[0]], offsets[nodes[-1] + 1]
        links = neighbours[start:stop].astype(np.int64)
        owner = np.repeat(nodes, offsets[nodes + 1] - offsets[nodes])
        level = np.searchsorted(cum, np.arange(start, stop) - offsets[owner], side="right") - 1
        used = links >= 0
        if (links < -1).any() or (links >= len(levels)).any():
            raise BrokenFaiss("a link points outside the graph")
        if (levels[links[used]] <= level[used]).any():
            raise BrokenFaiss("a link points to a node below its level")
