"""The one validator: argument checks at every public boundary (CLI options, the Python API,
what a file says), and the one table of the ranges whole-number settings take. A wrong type
or value is one EdgeVPRError line naming the argument, the same as the CLI gives, never a
TypeError from deep inside NumPy, ONNX Runtime or hnswlib (or a C++ ``std::bad_alloc``)."""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.core.errors import EdgeVPRError

# The ranges of named whole-number settings, wherever they are given: ``ranged(value, name)``
# checks one, the CLI's options read their bounds here, and an index kind's parameters
# (``placemap.kinds``) take theirs from here.
RANGES: dict[str, tuple[int, int]] = {
    "descriptor_dim": (1, 65536),
    "M": (2, 512),  # HNSW degree
    "ef_construction": (1, 100_000),  # HNSW build breadth
    "ef": (1, 100_000),  # HNSW search breadth
    "nprobe": (1, 1 << 22),  # inverted lists probed
    "nlist": (0, 1 << 22),  # inverted lists (0: chosen from the data)
    "pq_bytes": (0, 65536),  # product-quantiser code bytes (0: a quarter of the dimensions)
    "trained_rows": (0, 1 << 40),  # the rows an index was trained on (kept in its file)
    "capacity": (1, 2**32 - 2),  # places made room for (hnswlib numbers them with 32 bits)
    "rerank": (1, 100_000),  # candidates re-ranked exactly
    "k": (1, 100_000),  # places listed per query
    "beam": (1, 100_000),  # route hypotheses a localizer keeps
    "length": (1, 100_000),  # frames a sequence spans
}


def ranged(value: Any, name: str) -> int:
    """A whole number in ``RANGES[name]``."""
    low, high = RANGES[name]
    return whole(value, name, low, high)


def shown(value: Any, limit: int = 60) -> str:
    """A value as one short line for an error message (arrays print on many lines)."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} ({value.dtype})"
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def whole(value: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    """An integer (bools refused: ``k=True`` is not k=1) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise EdgeVPRError(f"{name} must be a whole number, not {shown(value)}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise EdgeVPRError(f"{name} must be {bounds}, got {value}")
    return value


def real(value: Any, name: str) -> float:
    """A finite real number (bools and strings refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise EdgeVPRError(f"{name} must be a number, not {shown(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise EdgeVPRError(f"{name} must be finite, got {value}")
    return value


def file_path(value: Any, name: str) -> Path:
    """A path given as ``str`` or ``os.PathLike`` (not None, bytes or a number)."""
    if not isinstance(value, (str, os.PathLike)) or (isinstance(value, str) and not value):
        raise EdgeVPRError(f"{name} must be a file path, not {shown(value)}")
    if "\x00" in os.fsdecode(value):  # no file can have it; os.stat raises ValueError
        raise EdgeVPRError(f"{name} {shown(value)} holds a NUL byte: no file has that name")
    return Path(value)


def instance(value: Any, kind: type, name: str, hint: str = "") -> Any:
    if not isinstance(value, kind):
        raise EdgeVPRError(f"{name} must be a {kind.__name__}{hint}, not {type(value).__name__}")
    return value


def unit_rows(descriptors: Any, dim: int, what: str) -> np.ndarray:
    """Descriptors (one row or N x dim, any float type) -> N x dim float32 unit rows; NaN,
    infinity and all-zero rows refused."""
    array = np.asarray(descriptors)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise EdgeVPRError(
            f"{what} descriptors have shape {tuple(np.shape(descriptors))}; this map holds "
            f"{dim}-d descriptors"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise EdgeVPRError(f"{what} descriptors must be floating point, not {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise EdgeVPRError(f"{what} descriptors contain NaN or infinity")
    norms = np.linalg.norm(array, axis=1)
    if (norms < 1e-12).any():
        raise EdgeVPRError(f"{what} descriptor {int(np.argmin(norms))} is all zeros")
    return np.ascontiguousarray(array / norms[:, None])


def place_ids(ids: Any) -> np.ndarray:
    """Place ids given as one id, a list or an array -> a 1-D int64 array (one-line error
    for anything that is not whole numbers)."""
    if isinstance(ids, (str, bytes, dict)):
        raise EdgeVPRError(f"place ids must be whole numbers, not {shown(ids)}")
    try:
        array = np.asarray(ids)
    except ValueError:
        raise EdgeVPRError("place ids must be a flat list of whole numbers") from None
    if array.dtype == object:
        array = np.asarray([whole(v, "place id") for v in array.ravel()], dtype=np.int64)
    elif array.size and (array.dtype == bool or not np.issubdtype(array.dtype, np.integer)):
        raise EdgeVPRError(f"place ids must be whole numbers, not {shown(ids)}")
    return array.astype(np.int64).ravel()
