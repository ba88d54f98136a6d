"""The common evaluation layout (the "VPR-datasets-downloader" one):

    <dataset>/images/<split>/database/*.jpg|png   the reference map
    <dataset>/images/<split>/queries/*.jpg|png    the query images

Every file name carries its UTM position, ``@<east>@<north>@<zone>@...@.jpg``: the name (not
the full path) is split on '@' and fields 1 and 2 are east and north in metres. A query's
positives are the database images within a radius (25 m by convention) of it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.images import list_images
from edgevpr.core.layout_names import parse_layout_name

DEFAULT_RADIUS_M = 25.0
DATABASE = "database"
QUERIES = "queries"


def parse_utm(path: str | os.PathLike[str]) -> tuple[float, float]:
    """(east, north) in metres from a file name ``@east@north@...``; one-line error if absent."""
    parsed = parse_layout_name(Path(path).name)
    if parsed is None or parsed.east is None or parsed.north is None:
        raise EdgeVPRError(
            f"image {path} has no UTM coordinates in its name "
            "(expected '@<east>@<north>@...' as in the VPR evaluation layout)"
        )
    return parsed.east, parsed.north


@dataclass(frozen=True)
class ImageSet:
    """Image files and their UTM positions (N x 2, east and north, metres, float64)."""

    paths: tuple[Path, ...]
    utm: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: np.ndarray) -> ImageSet:
        return ImageSet(tuple(self.paths[int(i)] for i in indices), self.utm[indices])


def read_image_set(folder: str | os.PathLike[str]) -> ImageSet:
    """Every image directly inside ``folder`` (sorted by name) with its UTM position."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeVPRError(f"image folder {folder} does not exist or is not a folder")
    paths = list_images(folder)
    if not paths:
        raise EdgeVPRError(f"no images in {folder} (expected .jpg or .png files)")
    utm = np.array([parse_utm(p) for p in paths], dtype=np.float64).reshape(-1, 2)
    return ImageSet(tuple(paths), utm)


@dataclass(frozen=True)
class EvalSplit:
    """One split of a dataset in the evaluation layout: a database and its queries."""

    root: Path
    split: str
    database: ImageSet
    queries: ImageSet

    @property
    def name(self) -> str:
        return f"{self.root.name}/{self.split}"

    def positives(self, radius: float = DEFAULT_RADIUS_M) -> list[np.ndarray]:
        """For each query, the database indices within ``radius`` metres, nearest first."""
        return find_within(self.database.utm, self.queries.utm, radius)


def split_folder(dataset_dir: str | os.PathLike[str], split: str) -> Path:
    root = Path(dataset_dir)
    if not root.is_dir():
        raise EdgeVPRError(f"dataset folder {root} does not exist or is not a folder")
    images = root / "images"
    if not images.is_dir():
        raise EdgeVPRError(
            f"{root} is not in the evaluation layout: no {images} folder "
            "(expected <dataset>/images/<split>/{database,queries})"
        )
    folder = images / split
    if not folder.is_dir():
        found = ", ".join(available_splits(root)) or "none"
        raise EdgeVPRError(f"{root} has no split '{split}' ({folder} missing; splits: {found})")
    return folder


def available_splits(dataset_dir: str | os.PathLike[str]) -> list[str]:
    """Split names under ``<dataset>/images`` that hold a database and a queries folder."""
    images = Path(dataset_dir) / "images"
    if not images.is_dir():
        return []
    return sorted(
        p.name for p in images.iterdir() if (p / DATABASE).is_dir() and (p / QUERIES).is_dir()
    )


def read_split(dataset_dir: str | os.PathLike[str], split: str = "test") -> EvalSplit:
    """Read ``<dataset>/images/<split>/{database,queries}`` with UTM from the file names."""
    folder = split_folder(dataset_dir, split)
    return EvalSplit(
        root=Path(dataset_dir),
        split=split,
        database=read_image_set(folder / DATABASE),
        queries=read_image_set(folder / QUERIES),
    )


def find_within(reference: np.ndarray, targets: np.ndarray, radius: float) -> list[np.ndarray]:
    """For each target position, the reference indices within ``radius`` (inclusive),
    nearest first (ties by index).

    No KD-tree: the references are sorted once along the axis with the larger spread, and
    each target only measures the references whose coordinate on that axis lies within
    ``radius`` of its own (two binary searches), so the cost is O((N + Q) log N + matches)
    for routes and grids alike.
    """
    if radius < 0 or not math.isfinite(radius):
        raise EdgeVPRError(f"radius must be a finite number >= 0, got {radius}")
    reference = np.asarray(reference, dtype=np.float64).reshape(-1, 2)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1, 2)
    if len(reference) == 0:
        return [np.empty(0, dtype=np.int64) for _ in range(len(targets))]
    axis = int(np.ptp(reference[:, 1]) > np.ptp(reference[:, 0]))
    order = np.argsort(reference[:, axis], kind="stable")
    keys = reference[order, axis]
    lows = np.searchsorted(keys, targets[:, axis] - radius, side="left")
    highs = np.searchsorted(keys, targets[:, axis] + radius, side="right")
    radius_sq = radius * radius
    result = []
    for target, low, high in zip(targets, lows, highs, strict=True):
        candidates = order[low:high]
        dist_sq = np.sum((reference[candidates] - target) ** 2, axis=1)
        keep = dist_sq <= radius_sq
        hits, hit_dist = candidates[keep], dist_sq[keep]
        result.append(hits[np.lexsort((hits, hit_dist))].astype(np.int64))
    return result
