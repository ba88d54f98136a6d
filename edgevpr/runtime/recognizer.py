"""Image in, place out: an embedder and a place map that it made."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.core.checks import instance, whole
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.geo import GeoPrior, check_prior
from edgevpr.core.pixels import DEFAULT_ENCODING
from edgevpr.runtime.embedder import Embedder, ImageInput
from edgevpr.runtime.placemap import DEFAULT_K, Neighbours, PlaceMap, PlaceRecord
from edgevpr.runtime.placemap.tiles import TiledMap


@dataclass(frozen=True)
class Match:
    """One candidate place: rank 1 is the best."""

    rank: int
    id: int
    score: float
    record: PlaceRecord
    distance_m: float | None = None  # from the prior's position, when a prior was given

    @property
    def coordinates(self) -> tuple[float, float] | None:
        """(east, north) when known, else (lat, lon), else None."""
        if self.record.east is not None:
            return (self.record.east, self.record.north)  # type: ignore[return-value]
        if self.record.lat is not None:
            return (self.record.lat, self.record.lon)  # type: ignore[return-value]
        return None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"rank": self.rank, "id": self.id, "score": round(self.score, 6)}
        data.update({k: v for k, v in self.record.to_dict().items() if k != "id"})
        if self.distance_m is not None:
            data["distance_m"] = round(self.distance_m, 3)
        return data


@dataclass(frozen=True)
class Recognition:
    """The answer for one query image."""

    query: str | None
    matches: list[Match] = field(default_factory=list)
    prior: GeoPrior | None = None

    @property
    def best(self) -> Match | None:
        """The best place, or None when a prior left no candidate."""
        return self.matches[0] if self.matches else None

    @property
    def coordinates(self) -> tuple[float, float] | None:
        return self.best.coordinates if self.best else None

    @property
    def score(self) -> float | None:
        return self.best.score if self.best else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "best": self.best.to_dict() if self.best else None,
            "matches": [m.to_dict() for m in self.matches],
            "prior": None if self.prior is None else self.prior.describe(),
        }


class Recognizer:
    """Recognise places with ``embedder`` in ``placemap``; the map must come from the same
    model (same fingerprint), since descriptors of different weights are not comparable.

    Example::

        recognizer = Recognizer(Embedder("best.onnx"), PlaceMap.load("route.vprmap"))
        result = recognizer.recognize(frame, encoding="bgr8", k=5)
        print(result.best.id, result.score, result.coordinates)
        for result in recognizer.recognize_many(camera_frames(), encoding="bgr8"):
            ...                                   # endless streams are fine: it is lazy
    """

    def __init__(self, embedder: Embedder, placemap: PlaceMap | TiledMap) -> None:
        instance(embedder, Embedder, "embedder", " (an exported model: Embedder('best.onnx'))")
        if not isinstance(placemap, TiledMap):
            instance(placemap, PlaceMap, "placemap", " (PlaceMap.load('route.vprmap'))")
        check_same_model(embedder, placemap)
        self.embedder = embedder
        self.placemap = placemap

    def recognize(
        self,
        image: ImageInput,
        k: int = DEFAULT_K,
        prior: GeoPrior | None = None,
        encoding: str = DEFAULT_ENCODING,
    ) -> Recognition:
        """One image (pixels in ``encoding``, a file path or encoded bytes) -> its best places."""
        if isinstance(image, (list, tuple)):
            raise EdgeVPRError("recognize takes one image; use recognize_many for several")
        return next(self.recognize_many([image], k=k, prior=prior, encoding=encoding))

    def recognize_many(
        self,
        images: Iterable[ImageInput],
        k: int = DEFAULT_K,
        prior: GeoPrior | None = None,
        encoding: str = DEFAULT_ENCODING,
        progress: bool = False,
    ) -> Iterator[Recognition]:
        """Recognitions of any iterable of images, lazily, in input order.

        Images are embedded a batch at a time while the next batch is decoded, so memory
        stays bounded for an endless generator (a camera); ``list(...)`` collects a finite
        one. Arguments are checked here, before the first image is read.
        """
        k = whole(k, "k", 1)
        prior = check_prior(prior)
        stream = self.embedder.stream(images, encoding=encoding, progress=progress)
        return self._recognitions(stream, k, prior)

    def _recognitions(
        self,
        stream: Iterator[tuple[list[ImageInput], np.ndarray]],
        k: int,
        prior: GeoPrior | None,
    ) -> Iterator[Recognition]:
        for frames, descriptors in stream:
            names = [_name(frame) for frame in frames]
            yield from self.recognize_descriptors(descriptors, k=k, prior=prior, names=names)

    def recognize_descriptors(
        self,
        descriptors: np.ndarray,
        k: int = DEFAULT_K,
        prior: GeoPrior | None = None,
        names: Sequence[str | None] | None = None,
    ) -> list[Recognition]:
        """Descriptors already computed by this embedder -> recognitions."""
        results = self.placemap.query(descriptors, k=k, prior=check_prior(prior))
        names = list(names) if names is not None else [None] * len(results)
        return [
            Recognition(query=name, matches=matches_of(found), prior=prior)
            for name, found in zip(names, results, strict=True)
        ]


def check_same_model(embedder: Embedder, placemap: PlaceMap | TiledMap) -> None:
    """Refuse a map made by other weights: its scores would be meaningless."""
    where = f"place map {placemap.source}" if placemap.source else "the place map"
    if placemap.fingerprint != embedder.fingerprint:
        raise EdgeVPRError(
            f"{where} was built by model {placemap.fingerprint[:12]}, not by {embedder.path.name} "
            f"({embedder.fingerprint[:12]}); rebuild it with "
            f"'edgevpr index build {embedder.path.name} IMAGES_DIR --out MAP'"
        )
    if placemap.descriptor_dim != embedder.descriptor_dim:
        raise EdgeVPRError(
            f"{where} holds {placemap.descriptor_dim}-d descriptors, but {embedder.path.name} "
            f"makes {embedder.descriptor_dim}-d ones"
        )


def matches_of(found: Neighbours) -> list[Match]:
    """The places a search found, as ranked matches."""
    distances = found.distances_m
    return [
        Match(
            rank=rank,
            id=int(found.ids[rank - 1]),
            score=float(found.scores[rank - 1]),
            record=found.records[rank - 1],
            distance_m=None if distances is None else float(distances[rank - 1]),
        )
        for rank in range(1, len(found) + 1)
    ]


def _name(image: ImageInput) -> str | None:
    return str(Path(image)) if isinstance(image, (str, os.PathLike)) else None
