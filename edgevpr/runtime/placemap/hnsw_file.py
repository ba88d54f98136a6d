"""hnswlib's index file, checked before hnswlib reads it.

hnswlib trusts its file: the vector size comes from the caller, and neighbour ids, list
lengths, levels and the entry point are used as they are. A map's checksum stops accidents,
not forgeries, so a crafted index could make hnswlib read and write outside its memory.
Everything hnswlib would index with is checked here first, against the layout that
``Index.save_index`` writes (hnswlib 0.7-0.8, ``hnswalg.h``)::

    header  offsetLevel0, max_elements, cur_element_count, size_data_per_element,
            label_offset, offsetData (size_t), maxlevel (int), enterpoint_node (uint32),
            maxM, maxM0, M (size_t), mult (double), ef_construction (size_t)
    level 0 cur_element_count blocks of size_data_per_element bytes:
            neighbour count (uint16), deleted flag (uint8), 0, maxM0 neighbour ids (uint32),
            the vector (dim float32), the label (uint64)
    upper   per element: link_bytes (uint32), then link_bytes / (4 + 4 maxM) blocks of
            neighbour count (uint16, padded to 4 bytes) and maxM neighbour ids, one a level
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

HEADER = struct.Struct("<QQQQQQiIQQQdQ")
LINK_BYTES = struct.Struct("<I")
ID_BYTES = 4  # hnswlib's tableint
LABEL_BYTES = 8
MAX_LEVEL = 64  # a level is ~log_M(places): 64 is far beyond any real map


class BrokenIndex(ValueError):
    """The index section does not have the layout hnswlib writes."""


@dataclass(frozen=True)
class IndexLayout:
    count: int  # elements stored, deleted ones included
    max_elements: int
    block: int  # bytes of one element at level 0
    data_offset: int
    label_offset: int
    max_level: int
    entry_point: int
    max_m: int
    max_m0: int
    m: int
    mult: float
    ef_construction: int

    @property
    def dim(self) -> float:
        return (self.label_offset - self.data_offset) / 4

    @property
    def upper_block(self) -> int:
        return ID_BYTES + self.max_m * ID_BYTES


def read_layout(head: bytes) -> IndexLayout:
    if len(head) < HEADER.size:
        raise BrokenIndex("too short for an hnswlib index")
    (level0, max_elements, count, block, label_offset, data_offset, max_level, entry_point,
     max_m, max_m0, m, mult, ef_construction) = HEADER.unpack_from(head)  # fmt: skip
    if level0 != 0:
        raise BrokenIndex(f"level-0 offset {level0} (hnswlib writes 0)")
    return IndexLayout(
        count, max_elements, block, data_offset, label_offset, max_level, entry_point,
        max_m, max_m0, m, mult, ef_construction,
    )  # fmt: skip


def check_layout(layout: IndexLayout, dim: int, m: int, ef_construction: int) -> None:
    """The header is what hnswlib computes for ``dim``-d vectors and degree ``m``."""
    max_m0 = 2 * m
    data_offset = ID_BYTES + max_m0 * ID_BYTES
    expected = (m, max_m0, m, data_offset, data_offset + 4 * dim, data_offset + 4 * dim + 8)
    found = (
        layout.m, layout.max_m0, layout.max_m, layout.data_offset, layout.label_offset,
        layout.block,
    )  # fmt: skip
    if found != expected:
        raise BrokenIndex(
            f"its layout is for {layout.dim:g}-d vectors with M={layout.m}, not {dim}-d with M={m}"
        )
    if layout.ef_construction != ef_construction:
        raise BrokenIndex(f"ef_construction {layout.ef_construction}, not {ef_construction}")
    if not (math.isfinite(layout.mult) and math.isclose(layout.mult, 1 / math.log(m))):
        raise BrokenIndex(f"level multiplier {layout.mult} (hnswlib uses 1/ln(M))")
    if layout.count > layout.max_elements:
        raise BrokenIndex(f"{layout.count} elements in room for {layout.max_elements}")
    if layout.count and not (
        0 <= layout.max_level <= MAX_LEVEL and layout.entry_point < layout.count
    ):
        raise BrokenIndex(f"entry point {layout.entry_point} at level {layout.max_level}")


def check_graph(index: np.ndarray, layout: IndexLayout) -> None:
    """Every neighbour id, list length, level and label of the whole index (``index``: its
    bytes, e.g. a memory map), so that hnswlib never follows one out of bounds."""
    count = layout.count
    level0_end = HEADER.size + count * layout.block
    if index.size < level0_end:
        raise BrokenIndex("level 0 is cut short")
    blocks = index[HEADER.size : level0_end].reshape(count, layout.block)
    neighbours = np.ascontiguousarray(blocks[:, :2]).view("<u2").ravel()
    if count and (neighbours.max() > layout.max_m0 or blocks[:, 2].max() > 1 or blocks[:, 3].any()):
        raise BrokenIndex("a level-0 neighbour list is malformed")
    ids = np.ascontiguousarray(blocks[:, ID_BYTES : layout.data_offset]).view("<u4")
    used = np.arange(layout.max_m0) < neighbours[:, None].astype(np.int64)
    if (ids[used] >= count).any():
        raise BrokenIndex("a level-0 neighbour id points past the last element")
    labels = np.ascontiguousarray(blocks[:, layout.label_offset :]).view("<u8").ravel()
    if (labels >= 2**63).any() or len(np.unique(labels)) != count:
        raise BrokenIndex("labels are out of range or repeated")
    levels, lists = _upper_levels(index, layout, level0_end)
    if count and (
        levels.max() != layout.max_level or levels[layout.entry_point] != layout.max_level
    ):
        raise BrokenIndex("the entry point is not on the top level")
    for element, (start, level_count) in lists.items():
        links = index[start : start + level_count * layout.upper_block]
        links = np.ascontiguousarray(links).view("<u4").reshape(level_count, 1 + layout.max_m)
        sizes = links[:, 0] & 0xFFFF
        if (links[:, 0] >> 16).any() or (sizes > layout.max_m).any():
            raise BrokenIndex(f"element {element} has a malformed neighbour list")
        for level in range(1, level_count + 1):
            found = links[level - 1, 1 : 1 + sizes[level - 1]].astype(np.int64)
            # a neighbour on level L must itself reach level L, or hnswlib reads past its lists
            if (found >= count).any() or (levels[found] < level).any():
                raise BrokenIndex(f"element {element} links to an element not on level {level}")


def _upper_levels(
    index: np.ndarray, layout: IndexLayout, start: int
) -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    """Each element's level, and where the lists of those above level 0 start."""
    view = memoryview(index)
    levels = np.zeros(layout.count, np.int64)
    lists: dict[int, tuple[int, int]] = {}
    position = start
    for element in range(layout.count):
        if position + LINK_BYTES.size > len(view):
            raise BrokenIndex("the upper levels are cut short")
        (link_bytes,) = LINK_BYTES.unpack_from(view, position)
        position += LINK_BYTES.size
        if link_bytes:
            level_count, rest = divmod(link_bytes, layout.upper_block)
            if rest or level_count > layout.max_level or position + link_bytes > len(view):
                raise BrokenIndex(f"element {element} has {link_bytes} bytes of upper links")
            levels[element] = level_count
            lists[element] = (position, level_count)
            position += link_bytes
    if position != len(view):
        raise BrokenIndex(f"{len(view) - position} bytes after the last element")
    return levels, lists
