"""Training sets as places: images with a place label and a position in metres.

GSV-Cities comes labelled. A set in the evaluation layout does not: its images are grouped
into places by distance, so that e.g. the summer and winter frames of one stretch of track
become one place with several views.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.data.layout import DEFAULT_RADIUS_M, EvalSplit, ImageSet, find_within, read_split


@dataclass(frozen=True)
class PlaceSet:
    """Images (paths), their place labels (0..P-1) and positions (N x 2 metres)."""

    paths: tuple[Path, ...]
    labels: np.ndarray
    utm: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        if not (len(self.paths) == len(self.labels) == len(self.utm)):
            raise ValueError("paths, labels and positions differ in length")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_places(self) -> int:
        return len(np.unique(self.labels))

    def images_per_place(self) -> np.ndarray:
        return np.bincount(relabel(self.labels))

    def subset(self, indices: np.ndarray) -> PlaceSet:
        indices = np.asarray(indices, dtype=np.int64)
        return PlaceSet(
            tuple(self.paths[int(i)] for i in indices),
            relabel(self.labels[indices]),
            self.utm[indices],
            self.name,
        )

    def drop_small_places(self, min_images: int) -> PlaceSet:
        """Keep the places with at least ``min_images`` images (a place needs a positive)."""
        counts = np.bincount(self.labels)
        return self.subset(np.flatnonzero(counts[self.labels] >= min_images))


def relabel(labels: np.ndarray) -> np.ndarray:
    """Map arbitrary labels to 0..P-1, keeping their order."""
    _, dense = np.unique(labels, return_inverse=True)
    return dense.astype(np.int64).reshape(-1)


def group_places(utm: np.ndarray, radius: float) -> np.ndarray:
    """Place label per position: greedy grouping along the route.

    Positions are visited in order along the axis with the larger spread; the first one not
    yet grouped seeds a place and takes every ungrouped position within ``radius`` of it.
    Places are therefore at most 2 x radius across, numbered in route order, and the result
    does not depend on the order of the input.
    """
    if not radius > 0 or not math.isfinite(radius):
        raise EdgeVPRError(f"place radius must be a positive number of metres, got {radius}")
    utm = np.asarray(utm, dtype=np.float64).reshape(-1, 2)
    labels = np.full(len(utm), -1, dtype=np.int64)
    if len(utm) == 0:
        return labels
    axis = int(np.ptp(utm[:, 1]) > np.ptp(utm[:, 0]))
    order = np.lexsort((utm[:, 1 - axis], utm[:, axis]))
    neighbours = find_within(utm, utm[order], radius)
    place = 0
    for seed, near in zip(order, neighbours, strict=True):
        if labels[seed] >= 0:
            continue
        free = near[labels[near] < 0]
        labels[free] = place
        place += 1
    return labels


@dataclass(frozen=True)
class LayoutTraining:
    """A training set cut from an evaluation-layout split, and the validation split held
    out from the same route (None when no validation was asked for)."""

    train: PlaceSet
    val: EvalSplit | None


def places_from_split(split: EvalSplit, place_radius: float) -> tuple[PlaceSet, np.ndarray]:
    """All images of a split (database then queries) grouped into places; also returns, per
    image, whether it came from the database folder."""
    images = ImageSet(
        split.database.paths + split.queries.paths,
        np.concatenate([split.database.utm, split.queries.utm]),
    )
    labels = group_places(images.utm, place_radius)
    from_database = np.arange(len(images)) < len(split.database)
    return PlaceSet(images.paths, labels, images.utm, split.name), from_database


def layout_training_set(
    dataset_dir: str | os.PathLike[str],
    split: str = "train",
    place_radius: float = DEFAULT_RADIUS_M,
    val_fraction: float = 0.1,
    radius: float = DEFAULT_RADIUS_M,
    min_images: int = 2,
) -> LayoutTraining:
    """Train on ``<dataset>/images/<split>`` grouped into places.

    When ``val_fraction`` > 0, the last stretch of the route (that share of the places) is
    held out as a validation split with its own database and queries, and training places
    within ``radius`` of it are dropped so that no validation query has a training image
    among its positives.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise EdgeVPRError(f"validation fraction must be in [0, 1), got {val_fraction}")
    data = read_split(dataset_dir, split)
    places, from_database = places_from_split(data, place_radius)
    num_places = int(places.labels.max()) + 1
    held_places = int(round(num_places * val_fraction))
    if val_fraction > 0 and held_places < 2:
        raise EdgeVPRError(
            f"{data.name} has {num_places} places: too few to hold out {val_fraction:.0%} "
            "for validation (use --val-fraction 0 or a 'val' split)"
        )
    held = places.labels >= num_places - held_places
    val = None
    if held_places:
        db_idx = np.flatnonzero(held & from_database)
        q_idx = np.flatnonzero(held & ~from_database)
        if len(db_idx) == 0 or len(q_idx) == 0:
            raise EdgeVPRError(f"the held-out stretch of {data.name} lacks database or queries")
        val = EvalSplit(
            root=data.root,
            split=f"{split}[last {val_fraction:.0%} of route]",
            database=ImageSet(tuple(places.paths[i] for i in db_idx), places.utm[db_idx]),
            queries=ImageSet(tuple(places.paths[i] for i in q_idx), places.utm[q_idx]),
        )
        near_val = np.array([len(h) > 0 for h in find_within(places.utm[held], places.utm, radius)])
        places = places.subset(np.flatnonzero(~held & ~near_val))
    train = places.drop_small_places(min_images)
    if len(train) == 0:
        raise EdgeVPRError(
            f"{data.name} has no place with {min_images} or more images within "
            f"{place_radius:g} m of each other: nothing to train on (try a larger --place-radius)"
        )
    return LayoutTraining(train=train, val=val)
