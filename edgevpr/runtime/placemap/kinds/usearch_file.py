"""usearch's serialised index, checked before usearch reads it.

usearch checks almost nothing of what it loads: in fuzzing, 12 of 60 forged indexes
crashed the process at search (a neighbour slot past the last node, a list longer than its
room). The bytes ``Index.save`` writes (usearch 2.x, ``index_dense.hpp`` and ``index.hpp``)
are parsed here and every count, slot, level and key checked first::

    matrix    rows (u32), bytes per vector (u32), then the vectors, row by row
    head      64 bytes: "usearch", version (3 x u16), metric, scalar, key and slot kinds
              (u8 each), present and deleted counts and dimensions (u64), multi (bool)
    graph     size, connectivity, base connectivity, top level, entry slot (u64 each);
              each node's level (i16); then each node: key (u64), level (i16), its
              level-0 list (count u32, base-connectivity slots u32), and one list of
              connectivity slots per upper level

A removed node keeps its place in the graph under the key 2^64 - 1.
"""

from __future__ import annotations

import struct

import numpy as np

MAGIC = b"usearch"
MATRIX = struct.Struct("<II")
HEAD = struct.Struct("<7sHHHBBBBQQQ?")
HEAD_BYTES = 64
GRAPH = struct.Struct("<QQQQQ")
METRIC_IP = ord("i")
SCALARS = {"f32": (11, 4), "f16": (12, 2), "i8": (23, 1)}  # usearch's kind, bytes
KEY_U64, SLOT_U32 = 14, 15
FREE_KEY = 2**64 - 1
NODE_HEAD = 10  # key (u64) and level (i16)
MAX_LEVEL = 64
MAX_CONNECTIVITY = 1024
NODE_CHUNK = 65536


class BrokenUsearch(ValueError):
    """The bytes are not a usearch index of the map's shape."""


def check_usearch_index(data: np.ndarray, dim: int, storage: str) -> np.ndarray:
    """Parse a map's usearch index bytes completely; returns the keys of its live nodes."""
    data = np.ascontiguousarray(data, np.uint8).reshape(-1)
    rows, present, position = _matrix_and_head(data, dim, storage)
    size, connectivity, base, top, entry = GRAPH.unpack_from(data, position)
    position += GRAPH.size
    if size != rows:
        raise BrokenUsearch(f"{size} nodes for {rows} vectors")
    if not 2 <= connectivity <= MAX_CONNECTIVITY or not connectivity <= base <= MAX_CONNECTIVITY:
        raise BrokenUsearch(f"connectivity {connectivity} (base {base})")
    levels = _levels(data, position, size, top, entry)
    position += 2 * size
    base_bytes, upper_bytes = 4 + 4 * base, 4 + 4 * connectivity
    sizes = NODE_HEAD + base_bytes + levels * upper_bytes
    offsets = position + np.concatenate([[0], np.cumsum(sizes)])
    if offsets[-1] != data.size:
        raise BrokenUsearch(f"its nodes take {int(offsets[-1]) - data.size} bytes more than given")
    keys = _u64(data, offsets[:-1])
    if not np.array_equal(_i16(data, offsets[:-1] + 8), levels):
        raise BrokenUsearch("a node's level disagrees with the level table")
    _check_lists(data, offsets[:-1] + NODE_HEAD, np.zeros(size, np.int64), base, levels)
    _check_upper(data, offsets[:-1], levels, base_bytes, upper_bytes, connectivity)
    live = keys[keys != np.uint64(FREE_KEY)]
    if len(live) != present or len(np.unique(live)) != len(live) or (live >= 2**63).any():
        raise BrokenUsearch("its keys are repeated, out of range or miscounted")
    return live.astype(np.int64)


def _matrix_and_head(data: np.ndarray, dim: int, storage: str) -> tuple[int, int, int]:
    """The vectors and the 64-byte head, checked; returns (rows, present nodes, where the
    graph starts)."""
    kind, scalar_bytes = SCALARS[storage]
    if data.size < MATRIX.size:
        raise BrokenUsearch("too short for a usearch index")
    rows, row_bytes = MATRIX.unpack_from(data, 0)
    if row_bytes != dim * scalar_bytes:
        raise BrokenUsearch(f"vectors of {row_bytes} bytes; the map's take {dim * scalar_bytes}")
    position = MATRIX.size + rows * row_bytes
    if position + HEAD_BYTES + GRAPH.size > data.size:
        raise BrokenUsearch(f"{rows} vectors run past the end")
    _check_vectors(data[MATRIX.size : position], storage, rows, dim)
    magic, major, _, _, metric, scalar, key, slot, present, deleted, dims, multi = HEAD.unpack_from(
        data, position
    )
    if magic != MAGIC or major != 2 or multi:
        raise BrokenUsearch("not a usearch 2 index of single vectors")
    if (metric, scalar, key, slot, dims) != (METRIC_IP, kind, KEY_U64, SLOT_U32, dim):
        raise BrokenUsearch(f"kinds {metric, scalar, key, slot} for {dims}-d")
    if present + deleted != rows:
        raise BrokenUsearch(f"{present} + {deleted} nodes counted for {rows} vectors")
    return rows, present, position + HEAD_BYTES


def _levels(data: np.ndarray, position: int, size: int, top: int, entry: int) -> np.ndarray:
    """Each node's level, the top level and the entry point on it."""
    if position + 2 * size > data.size:
        raise BrokenUsearch("its levels run past the end")
    levels = data[position : position + 2 * size].view("<i2").astype(np.int64)
    if size and ((levels < 0).any() or levels.max() > MAX_LEVEL):
        raise BrokenUsearch("a node's level is out of range")
    if size and not (top == levels.max() and entry < size and levels[entry] == top):
        raise BrokenUsearch("its entry point is not on its top level")
    return levels


def _check_vectors(matrix: np.ndarray, storage: str, rows: int, dim: int) -> None:
    if storage == "i8":
        return
    values = matrix.view("<f4" if storage == "f32" else "<f2")
    if values.size != rows * dim or not np.isfinite(values).all():
        raise BrokenUsearch("its vectors are not finite")


def _gather(data: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """Little-endian unsigned values of ``width`` bytes at any (unaligned) byte offsets."""
    out = np.zeros(starts.shape, np.uint64)
    for byte in range(width):
        out |= data[starts + byte].astype(np.uint64) << np.uint64(8 * byte)
    return out


def _u64(data: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return _gather(data, starts, 8)


def _i16(data: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return _gather(data, starts, 2).astype(np.int64).astype(np.int16).astype(np.int64)


def _check_lists(data: np.ndarray, starts: np.ndarray, level: np.ndarray, room: int,
                 levels: np.ndarray) -> None:  # fmt: skip
    """Neighbour lists at byte offsets ``starts``, one on each ``level``: a count within
    ``room``, and each slot a node that reaches that level (usearch reads the neighbour's
    list on it, which a lower node does not have)."""
    for first in range(0, len(starts), NODE_CHUNK):
        part = slice(first, first + NODE_CHUNK)
        counts = _gather(data, starts[part], 4).astype(np.int64)
        if (counts > room).any():
            raise BrokenUsearch("a neighbour list is longer than its room")
        used = np.arange(room) < counts[:, None]
        slots = _gather(data, (starts[part, None] + 4 + 4 * np.arange(room))[used], 4)
        slots = slots.astype(np.int64)
        if (slots >= len(levels)).any():
            raise BrokenUsearch("a neighbour slot points past the last node")
        wanted = np.broadcast_to(level[part, None], used.shape)[used]
        if (levels[slots] < wanted).any():
            raise BrokenUsearch("a node links to a node below the link's level")


def _check_upper(data: np.ndarray, starts: np.ndarray, levels: np.ndarray, base_bytes: int,
                 upper_bytes: int, connectivity: int) -> None:  # fmt: skip
    """The lists of levels 1.. of every node above level 0."""
    owners = np.repeat(np.arange(len(levels)), levels)
    if not len(owners):
        return
    level = np.arange(len(owners)) - np.repeat(np.cumsum(levels) - levels, levels) + 1
    lists = starts[owners] + NODE_HEAD + base_bytes + (level - 1) * upper_bytes
    _check_lists(data, lists, level, connectivity, levels)
