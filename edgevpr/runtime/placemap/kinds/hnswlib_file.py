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
import os
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
    blocks = _check_level0(index[:level0_end], layout)
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


# ------------------------------------------------------------------ version 2: the state
STATE_NUMBERS = ("ser_version", "offset_level0", "max_elements", "cur_element_count",
                 "size_data_per_element", "label_offset", "offset_data", "max_level",
                 "enterpoint_node", "max_M", "max_M0", "M", "mult", "ef_construction", "ef",
                 "has_deletions", "size_links_per_element", "seed")  # fmt: skip
STATE_ARRAYS = {"data_level0": np.uint8, "link_lists": np.uint8, "element_levels": np.int32,
                "label_lookup_external": np.uint64, "label_lookup_internal": np.uint32}  # fmt: skip
SER_VERSION = 1


def check_state(sections: dict[str, np.ndarray], dim: int, m: int, ef_construction: int) -> dict:
    """hnswlib's serialised state from a map's sections, checked as :func:`check_graph`
    checks a version-1 file (all at once: no loop over elements), ready for
    ``Index.__setstate__``."""
    try:
        numbers = sections["hnsw.numbers"]
        arrays = {name: sections[f"hnsw.{name}"] for name in STATE_ARRAYS}
    except KeyError as exc:
        raise BrokenIndex(f"no {exc.args[0]} section") from None
    if numbers.shape != (len(STATE_NUMBERS),) or not np.isfinite(numbers).all():
        raise BrokenIndex("its numbers are malformed")
    values = dict(zip(STATE_NUMBERS, numbers.tolist(), strict=True))
    state: dict = {n: int(v) for n, v in values.items() if n != "mult"}
    state["mult"] = values["mult"]
    for name, dtype in STATE_ARRAYS.items():
        if arrays[name].dtype != dtype or arrays[name].ndim != 1:
            raise BrokenIndex(f"{name} is not a flat {np.dtype(dtype).name} array")
    count = state["cur_element_count"]
    layout = IndexLayout(count, state["max_elements"], state["size_data_per_element"],
                         state["offset_data"], state["label_offset"], state["max_level"],
                         state["enterpoint_node"], state["max_M"], state["max_M0"], state["M"],
                         state["mult"], state["ef_construction"])  # fmt: skip
    if state["ser_version"] != SER_VERSION or state["offset_level0"] != 0:
        raise BrokenIndex("it was serialised by another hnswlib")
    check_layout(layout, dim, m, ef_construction)
    if count != state["max_elements"] or state["size_links_per_element"] != layout.upper_block:
        raise BrokenIndex("its sizes do not fit together")
    if arrays["data_level0"].size != count * layout.block:
        raise BrokenIndex("level 0 has the wrong size")
    head = np.zeros(HEADER.size, np.uint8)  # check_graph reads level 0 after a header
    blocks = np.concatenate([head, arrays["data_level0"]])
    levels = arrays["element_levels"].astype(np.int64)
    _check_level0(blocks, layout)
    _check_levels(levels, layout)
    _check_upper(arrays["link_lists"], levels, layout)
    _check_lookup(arrays, blocks, layout)
    return {"space": "ip", "dim": dim, "index_inited": True, "ep_added": count > 0,
            "normalize": False, "num_threads": os.cpu_count() or 1, **state,
            "has_deletions": bool(state["has_deletions"]),
            **{name: np.ascontiguousarray(arrays[name]) for name in STATE_ARRAYS},
            "data_level0": arrays["data_level0"].view(np.int8),
            "link_lists": arrays["link_lists"].view(np.int8)}  # fmt: skip


def _check_level0(index: np.ndarray, layout: IndexLayout) -> np.ndarray:
    """Level 0 (after a header, as in a version-1 file): every neighbour list and id; its
    blocks, one row an element."""
    count = layout.count
    blocks = index[HEADER.size :].reshape(count, layout.block)
    neighbours = np.ascontiguousarray(blocks[:, :2]).view("<u2").ravel()
    if count and (neighbours.max() > layout.max_m0 or blocks[:, 2].max() > 1 or blocks[:, 3].any()):
        raise BrokenIndex("a level-0 neighbour list is malformed")
    ids = np.ascontiguousarray(blocks[:, ID_BYTES : layout.data_offset]).view("<u4")
    used = np.arange(layout.max_m0) < neighbours[:, None].astype(np.int64)
    if (ids[used] >= count).any():
        raise BrokenIndex("a level-0 neighbour id points past the last element")
    vectors = np.ascontiguousarray(blocks[:, layout.data_offset : layout.label_offset])
    if not np.isfinite(vectors.view("<f4")).all():
        raise BrokenIndex("a stored vector is not finite")
    return blocks


def _check_levels(levels: np.ndarray, layout: IndexLayout) -> None:
    if levels.shape != (layout.count,) or (levels < 0).any() or (levels > MAX_LEVEL).any():
        raise BrokenIndex("element levels are out of range")
    if layout.count and (
        not 0 <= layout.entry_point < layout.count
        or levels.max() != layout.max_level
        or levels[layout.entry_point] != layout.max_level
    ):
        raise BrokenIndex("the entry point is not on the top level")


def _check_upper(links: np.ndarray, levels: np.ndarray, layout: IndexLayout) -> None:
    """Every upper-level list: its length, and each neighbour reaching that level."""
    blocks_total = int(levels.sum())
    if links.size != blocks_total * layout.upper_block:
        raise BrokenIndex("the upper levels have the wrong size")
    if not blocks_total:
        return
    table = links.view("<u4").reshape(blocks_total, 1 + layout.max_m)
    sizes = table[:, 0] & 0xFFFF
    if (table[:, 0] >> 16).any() or (sizes > layout.max_m).any():
        raise BrokenIndex("an upper-level neighbour list is malformed")
    first = np.repeat(np.cumsum(levels) - levels, levels)
    level_of_block = np.arange(blocks_total) - first + 1
    used = np.arange(layout.max_m) < sizes[:, None].astype(np.int64)
    neighbours = table[:, 1:].astype(np.int64)
    if (neighbours[used] >= layout.count).any():
        raise BrokenIndex("an upper-level neighbour points past the last element")
    reach = levels[np.where(used, neighbours, 0)]
    if (np.where(used, reach, MAX_LEVEL) < level_of_block[:, None]).any():
        raise BrokenIndex("an element links to an element not on its level")


def _check_lookup(arrays: dict[str, np.ndarray], index: np.ndarray, layout: IndexLayout) -> None:
    """The label lookup: each element once, under the label its level-0 block holds."""
    count = layout.count
    external, internal = arrays["label_lookup_external"], arrays["label_lookup_internal"]
    if external.shape != (count,) or internal.shape != (count,):
        raise BrokenIndex("the label lookup has the wrong size")
    if count and (internal.max() >= count or len(np.unique(internal)) != count):
        raise BrokenIndex("the label lookup is not one entry per element")
    blocks = index[HEADER.size :].reshape(count, layout.block)
    labels = np.ascontiguousarray(blocks[:, layout.label_offset :]).view("<u8").ravel()
    if (labels >= 2**63).any() or not np.array_equal(labels[internal.astype(np.int64)], external):
        raise BrokenIndex("labels are out of range or do not match the lookup")


def deleted_labels(state: dict) -> np.ndarray:
    """The labels of the elements a checked state marks deleted."""
    count, block = state["cur_element_count"], state["size_data_per_element"]
    blocks = state["data_level0"].view(np.uint8).reshape(count, block)
    labels = np.ascontiguousarray(blocks[:, state["label_offset"] :]).view("<u8").ravel()
    return labels[(blocks[:, 2] & 1) != 0].astype(np.int64)
