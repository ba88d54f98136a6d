"""The images a benchmark runs on: the user's (a folder, or a dataset in the evaluation
layout), else a synthetic street-scene set generated once into the cache. Real pixels matter:
they are what is decoded and preprocessed, what INT8 calibration sees, and what the search
maps are grown from.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.images import IMAGE_SUFFIXES
from edgevpr.data.layout import available_splits, read_split

# The default synthetic set: camera-like frames, enough places to seed a map.
SYNTH_PLACES = 256
SYNTH_SIZE = (240, 320)  # height, width
SYNTH_SEED = 0
PREFERRED_SPLITS = ("test", "val", "train")


@dataclass(frozen=True)
class Workload:
    """Database images in route order (they seed the maps), query images (may be empty)."""

    database: tuple[Path, ...]
    queries: tuple[Path, ...]
    description: str

    def key(self) -> str:
        """Identifies the image list (names and sizes), for cache entries derived from it."""
        digest = hashlib.sha256()
        for path in (*self.database, *self.queries):
            digest.update(str(path).encode())
            digest.update(str(path.stat().st_size).encode())
        return digest.hexdigest()[:16]


def evenly_spaced(items: tuple[Path, ...], limit: int) -> tuple[Path, ...]:
    """At most ``limit`` items spread over the whole list (a route, not its first metres)."""
    if limit <= 0 or len(items) <= limit:
        return items
    picks = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return tuple(items[i] for i in picks)


def route_order(paths: tuple[Path, ...], utm: np.ndarray) -> tuple[Path, ...]:
    """Sort by position along the axis of larger spread: neighbours on the route become
    neighbours in the list (file names need not be in route order)."""
    if len(paths) < 2:
        return paths
    axis = int(np.ptp(utm[:, 1]) > np.ptp(utm[:, 0]))
    order = np.argsort(utm[:, axis], kind="stable")
    return tuple(paths[i] for i in order)


def from_dataset(root: Path, limit: int) -> Workload:
    splits = available_splits(root)
    split = next((s for s in PREFERRED_SPLITS if s in splits), splits[0])
    data = read_split(root, split)
    database = route_order(data.database.paths, data.database.utm)
    queries = route_order(data.queries.paths, data.queries.utm)
    return Workload(
        evenly_spaced(database, limit),
        evenly_spaced(queries, limit),
        f"{root.name}/{split}: {len(data.database)} database and {len(data.queries)} query "
        "images (evaluation layout)",
    )


def from_folder(folder: Path, limit: int) -> Workload:
    paths = tuple(
        sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    )
    if not paths:
        raise EdgeVPRError(f"no images under {folder} (expected .jpg or .png files)")
    return Workload(evenly_spaced(paths, limit), (), f"{folder}: {len(paths)} images")


def synthetic(cache_dir: Path, limit: int) -> Workload:
    from edgevpr.data.synth import SynthConfig, generate

    height, width = SYNTH_SIZE
    root = cache_dir / f"synth-s{SYNTH_SEED}-p{SYNTH_PLACES}-{height}x{width}"
    if not (root / "synth.json").is_file():
        config = SynthConfig(
            seed=SYNTH_SEED,
            places=SYNTH_PLACES,
            val_places=0,
            train_places=0,
            height=height,
            width=width,
        )
        generate(root, config, overwrite=True)
    workload = from_dataset(root, limit)
    return Workload(
        workload.database,
        workload.queries,
        f"synthetic street scenes ({SYNTH_PLACES} places, {width}x{height} PNG, generated "
        f"by edgevpr.data.synth into {root})",
    )


def find_workload(images: str | os.PathLike[str] | None, cache_dir: Path, limit: int) -> Workload:
    """The benchmark's images: ``images`` (a dataset root or a folder), else synthetic ones."""
    if images is None:
        return synthetic(cache_dir, limit)
    path = Path(images)
    if not path.is_dir():
        raise EdgeVPRError(f"--images {path}: not a folder")
    if available_splits(path):
        return from_dataset(path, limit)
    return from_folder(path, limit)
