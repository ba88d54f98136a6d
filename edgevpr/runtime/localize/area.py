"""A temporal filter for area maps (places in 2-D, no order): a beam of tracks over the
places, each with a velocity, in the manner of an online Viterbi with a constant-velocity
motion model.

A track is a place and a velocity (metres a frame). Each frame it predicts where the robot
now is (its place plus its velocity, or plus the odometry's displacement when given),
branches to the places around that prediction, pays for the distance between prediction
and place, adds the frame's z-value at the place (its exact cosine against the frame's mean
and spread over the map), and updates its velocity from the move. Tracks also start at the
frame's nearest places, paying a fixed jump cost against the best track, so the filter
re-localises when the evidence elsewhere outweighs the jump. Scores decay by 1 - 1/L a
frame, so they weigh about the last L frames. Motion beyond a speed limit is refused.

Cost per frame: the beam's tracks times the places around each prediction, independent of
the map's size (places around a point come from a grid, :class:`PlaceGrid`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgevpr.core.checks import real, whole
from edgevpr.core.errors import EdgeVPRError

DEFAULT_LENGTH = 10
DEFAULT_SEEDS = 50
DEFAULT_BEAM = 200
# z-units: a new track starts this far below the best one, so two or three strong frames
# elsewhere re-localise the robot but one confusing frame does not
DEFAULT_JUMP_COST = 6.0
# Tracks branched each frame, and places each one branches to (the nearest to its
# prediction).
EXPANDED = 60
BRANCHES = 9
# How much of a move updates a track's velocity (the rest is the old velocity).
VELOCITY_GAIN = 0.5
# Fraction of the odometry's displacement taken as its uncertainty (wheel slip, drift).
ODOMETRY_SPREAD = 0.2

Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class AreaConfig:
    """``length``: frames of evidence (scores decay by 1 - 1/length a frame); ``seeds``:
    nearest places that start tracks each frame; ``beam``: tracks kept; ``jump_cost``:
    z-units for a track that starts anew."""

    length: int = DEFAULT_LENGTH
    seeds: int = DEFAULT_SEEDS
    beam: int = DEFAULT_BEAM
    jump_cost: float = DEFAULT_JUMP_COST

    def __post_init__(self) -> None:
        whole(self.length, "sequence length", 1, 1000)
        whole(self.seeds, "seeds", 1, 10_000)
        whole(self.beam, "beam", 1, 100_000)
        if not 0 <= real(self.jump_cost, "jump cost") < 1000:
            raise EdgeVPRError("jump cost must be in [0, 1000)")


@dataclass(frozen=True)
class Motion:
    """What is known of the move since the last frame: frames elapsed (``step``), how far
    the robot can have gone (``reach_m``), or the odometry's displacement (east, north)."""

    reach_m: float
    step: float = 1.0
    odometry: tuple[float, float] | None = None


@dataclass(frozen=True)
class AreaEstimate:
    place: int  # index of the best track's place
    score: float  # its decayed evidence, in z-units a frame
    margin: float  # score minus the best track farther than ``far_m`` from it
    frames: int
    places: np.ndarray  # the tracks' places, best first
    scores: np.ndarray


class AreaTracker:
    """The filter over places at ``coordinates`` (N x 2 metres; NaN rows: no position);
    ``spacing_m`` is the typical distance between neighbouring places."""

    def __init__(
        self, coordinates: np.ndarray, spacing_m: float, config: AreaConfig | None = None
    ) -> None:
        self.coordinates = np.asarray(coordinates, np.float64)
        if self.coordinates.ndim != 2 or self.coordinates.shape[1] != 2:
            raise EdgeVPRError("area tracking needs N x 2 place coordinates")
        self.spacing = max(real(spacing_m, "place spacing"), 1e-3)
        self.far_m = 3 * self.spacing  # rivals lie farther than this
        self.config = config or AreaConfig()
        self._keep = 1.0 - 1.0 / self.config.length
        self._grid = PlaceGrid(self.coordinates, self.spacing)
        self.reset()

    def reset(self) -> None:
        self._places = np.zeros(0, np.int64)
        self._velocity = np.zeros((0, 2))
        self._scores = np.zeros(0)
        self._frames = 0

    @property
    def frames(self) -> int:
        return min(self._frames, self.config.length)

    def update(self, seeds: np.ndarray, score: Scorer, motion: Motion) -> AreaEstimate:
        """Advance one frame: ``seeds`` are the frame's nearest places (indices), ``score``
        gives its z at any places, ``motion`` what is known of the move."""
        seeds = np.asarray(seeds, np.int64)[: self.config.seeds]
        seeds = seeds[np.isfinite(self.coordinates[seeds, 0])]
        places, velocity, carried = self._branched(motion)
        best_before = float(self._scores.max()) * self._keep if len(self._scores) else 0.0
        places = np.concatenate([places, seeds])
        velocity = np.concatenate([velocity, np.zeros((len(seeds), 2))])
        started = best_before - self.config.jump_cost if self._frames else 0.0
        carried = np.concatenate([carried, np.full(len(seeds), started)])
        totals = carried + score(places)
        self._frames += 1
        keep = self._survivors(places, velocity, totals)
        self._places, self._velocity, self._scores = places[keep], velocity[keep], totals[keep]
        return self._estimate()

    def _branched(self, motion: Motion) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The best tracks, each moved to the places around its prediction: (places, new
        velocities, decayed score less the cost of the move)."""
        if not len(self._places):
            return np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0)
        top = slice(0, EXPANDED)
        start = self.coordinates[self._places[top]]
        step = max(motion.step, 1e-6)
        if motion.odometry is not None:
            shift = np.broadcast_to(np.asarray(motion.odometry, np.float64), start.shape)
            sigma = max(ODOMETRY_SPREAD * float(np.hypot(*motion.odometry)), self.spacing / 2)
        else:
            shift = self._velocity[top] * step
            sigma = self.spacing
        predicted = start + shift
        parents, children = self._grid.nearest(predicted, BRANCHES, self.spacing + 2 * sigma)
        moved = self.coordinates[children] - start[parents]
        if motion.odometry is None:  # a speed limit, where there is one
            allowed = np.linalg.norm(moved, axis=1) <= motion.reach_m + self.spacing / 2
            parents, children, moved = parents[allowed], children[allowed], moved[allowed]
        miss = np.linalg.norm(self.coordinates[children] - predicted[parents], axis=1)
        cost = miss**2 / (2 * sigma**2)
        velocity = (1 - VELOCITY_GAIN) * self._velocity[top][parents] + VELOCITY_GAIN * (
            moved / step
        )
        return children, velocity, self._keep * self._scores[top][parents] - cost

    def _survivors(self, places: np.ndarray, velocity: np.ndarray, totals: np.ndarray):
        """The best track per (place, velocity to half a spacing), then the beam's best."""
        cells = np.round(velocity / (self.spacing / 2)).astype(np.int64)
        key = (places * 4096 + (cells[:, 0] & 4095)) * 4096 + (cells[:, 1] & 4095)
        order = np.lexsort((-totals, key))
        first = np.ones(len(order), bool)
        first[1:] = key[order][1:] != key[order][:-1]
        unique = order[first]
        return unique[np.argsort(-totals[unique], kind="stable")[: self.config.beam]]

    def _estimate(self) -> AreaEstimate:
        scale = 1.0 - self._keep  # decayed sums of about L frames -> z-units a frame
        scores = self._scores * scale
        where = self.coordinates[self._places]
        far = np.linalg.norm(where - where[0], axis=1) > self.far_m
        rival = float(scores[far].max()) if far.any() else float(scores.min()) - 1.0
        return AreaEstimate(
            place=int(self._places[0]),
            score=float(scores[0]),
            margin=float(scores[0]) - rival,
            frames=self.frames,
            places=self._places.copy(),
            scores=scores,
        )


class PlaceGrid:
    """Places bucketed in square cells, to find those near some points without looking at
    every place."""

    def __init__(self, coordinates: np.ndarray, cell_m: float) -> None:
        self.coordinates = coordinates
        self.cell = float(cell_m)
        known = np.flatnonzero(np.isfinite(coordinates).all(axis=1))
        cells = np.floor(coordinates[known] / self.cell).astype(np.int64)
        order = np.lexsort((cells[:, 1], cells[:, 0]))
        self._cells = cells[order]
        self._places = known[order]

    def nearest(
        self, points: np.ndarray, count: int, radius: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """For each point, up to ``count`` places nearest it within ``radius``: (point
        index, place) pairs."""
        parents, children = [], []
        for index, point in enumerate(points):
            found = self._around(point, radius)
            if not len(found):
                continue
            distance = np.linalg.norm(self.coordinates[found] - point, axis=1)
            inside = np.flatnonzero(distance <= radius)
            chosen = inside[np.argsort(distance[inside], kind="stable")[:count]]
            parents.append(np.full(len(chosen), index))
            children.append(found[chosen])
        if not parents:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(parents), np.concatenate(children)

    def _around(self, point: np.ndarray, radius: float) -> np.ndarray:
        """Places in the cells that a square of ``radius`` around ``point`` touches."""
        low = np.floor((point - radius) / self.cell).astype(np.int64)
        high = np.floor((point + radius) / self.cell).astype(np.int64)
        first = np.searchsorted(self._cells[:, 0], low[0], "left")
        last = np.searchsorted(self._cells[:, 0], high[0], "right")
        cells = self._cells[first:last]
        inside = (cells[:, 1] >= low[1]) & (cells[:, 1] <= high[1])
        return self._places[first:last][inside]
