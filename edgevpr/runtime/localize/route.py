"""Sequence matching along a route, in the spirit of SeqSLAM (Milford & Wyeth, ICRA 2012).

A route map orders its places as they were driven. A vehicle moving along it at a relative
speed v (route places per frame) traces a path through the frames x places similarity
matrix, and the evidence of the last L frames along that path says where it is far more
reliably than any single frame. The matrix is never built:

- hypotheses are (route position, speed) pairs in a beam; each frame moves every hypothesis
  by its speed (or the next speed up or down, at a cost: vehicles change speed smoothly),
  and seeds new ones at the frame's k nearest places, at every speed searched;
- a hypothesis keeps its own last L similarities, each a z-value of the frame against the
  place it then stood on (the nearest to its fractional position): the exact cosine (from
  the map's stored descriptor) against the frame's mean and spread over the whole map
  (from a fixed sample of the map, see :class:`RowStats`), so there is no floor for places
  the index did not return;
- speeds away from 1 cost a little every frame, so that searching 0.5x-2x does not cost
  accuracy at a steady speed (measured on nordland64: without that cost, searching speeds
  lost 14 points of Recall@1 at constant speed).

Frames dropped or repeated move the true path by a place, which the speed steps absorb.
Measured on nordland64 (MS-trained Lite0, L=10): Recall@1 87.2 at a steady speed and 77.5
with the speed switching between 0.5x, 1x and 2x (single frames: 25.7).
The per-frame cost depends on the beam, the speeds and L, never on the map's size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgevpr.core.checks import real, whole
from edgevpr.core.errors import EdgeVPRError

DEFAULT_LENGTH = 10
DEFAULT_SPEEDS = (0.5, 0.71, 1.0, 1.41, 2.0)
DEFAULT_SEEDS = 50
DEFAULT_BEAM = 400
# Costs in z-units a frame, chosen among a few values on nordland64 (MS-trained Lite0):
# without them the speed search lost 14 points of Recall@1 at a steady speed.
DEFAULT_CHANGE_COST = 1.5
DEFAULT_SPEED_COST = 0.15
# Route places a frame at speed 1: from a drone hovering minutes between places of a video
# at 30 frames a second (1e-4: 333 s a place) to a stream far sparser than its map.
MIN_PACE, MAX_PACE = 1e-4, 100.0
# Places on either side of the best that the margin confidence looks past: a path one or
# two places off is the same answer, not a rival.
MARGIN_WINDOW = 3

# Exact z-values of the current frame at route positions (positions may be fractional).
Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RouteConfig:
    """How the route is searched.

    ``length``: frames of evidence (L); ``speeds``: relative speeds searched, multiples of
    ``pace``; ``pace``: route places a frame at speed 1 (None: the map's own, where it
    knows it, else 1; see ``Localizer``); ``seeds``: nearest places seeded each frame;
    ``beam``: hypotheses kept; ``change_cost`` and ``speed_cost``: z-units a frame for
    changing speed and for each octave away from speed 1.
    """

    length: int = DEFAULT_LENGTH
    speeds: tuple[float, ...] = DEFAULT_SPEEDS
    pace: float | None = None
    seeds: int = DEFAULT_SEEDS
    beam: int = DEFAULT_BEAM
    change_cost: float = DEFAULT_CHANGE_COST
    speed_cost: float = DEFAULT_SPEED_COST

    def __post_init__(self) -> None:
        whole(self.length, "sequence length", 1, 1000)
        whole(self.seeds, "seeds", 1, 10_000)
        whole(self.beam, "beam", 1, 1_000_000)
        if not isinstance(self.speeds, (tuple, list)) or not self.speeds:
            raise EdgeVPRError("speeds must be a non-empty tuple of positive numbers")
        if not all(0 < real(v, "speed") <= 100 for v in self.speeds):
            raise EdgeVPRError(f"speeds must be in (0, 100], got {self.speeds}")
        if self.pace is not None and not MIN_PACE <= real(self.pace, "pace") <= MAX_PACE:
            raise EdgeVPRError(f"pace must be in [{MIN_PACE:g}, {MAX_PACE:g}] places a frame, "
                               f"got {self.pace}")  # fmt: skip
        for name in ("change_cost", "speed_cost"):
            if not 0 <= real(getattr(self, name), name.replace("_", " ")) < 100:
                raise EdgeVPRError(f"{name.replace('_', ' ')} must be in [0, 100)")


@dataclass(frozen=True)
class RouteShape:
    """Where a route breaks into drives, and where its places lie.

    ``segments``: per route place, the number of its drive (non-decreasing): a hypothesis
    stays in the drive it was seeded in. ``xy`` (metres, NaN where unknown) and ``near_m``:
    a hypothesis in another drive within ``near_m`` of the best is the same answer from a
    second traversal of the road, not a rival.
    """

    segments: np.ndarray
    xy: np.ndarray | None = None
    near_m: float = 0.0

    def __post_init__(self) -> None:
        segments = np.asarray(self.segments, np.int64)
        if segments.ndim != 1 or (len(segments) and np.any(np.diff(segments) < 0)):
            raise EdgeVPRError("route segments must be one non-decreasing number per place")
        if self.xy is not None and np.shape(self.xy) != (len(segments), 2):
            raise EdgeVPRError("route place positions must be one (x, y) per place")
        object.__setattr__(self, "segments", segments)

    def ends(self) -> np.ndarray:
        """Per place, the last route position of its drive."""
        last = np.flatnonzero(np.diff(self.segments, append=np.iinfo(np.int64).max) != 0)
        return last[np.searchsorted(last, np.arange(len(self.segments)))]


@dataclass(frozen=True)
class RouteEstimate:
    """The best path: where it stands now, and how it compares."""

    position: float  # route position, fractional between places
    place: int  # the place the best path stands on now (nearest ``position``)
    speed: float  # places per frame (pace times the relative speed)
    score: float  # mean z-value along the path over the window
    margin: float  # score minus the best hypothesis more than MARGIN_WINDOW places away
    frames: int  # frames of evidence in the window
    positions: np.ndarray  # every hypothesis' position, best first (for spread and ranking)
    scores: np.ndarray  # their scores

    def ranking(self) -> np.ndarray:
        """Whole route positions, best first, one each (for Recall@N)."""
        places = np.concatenate([[self.place], np.round(self.positions).astype(np.int64)])
        _, first = np.unique(places, return_index=True)
        return places[np.sort(first)]


class RowStats:
    """A frame's similarity to every place of a map, summarised without touching them all:
    the mean and spread of its cosines to a fixed sample of the map's descriptors (a sample
    of 512 pins both to about 5 %)."""

    def __init__(self, sample: np.ndarray) -> None:
        if sample.ndim != 2 or len(sample) < 2:
            raise EdgeVPRError("row statistics need a sample of at least two descriptors")
        self.sample = np.ascontiguousarray(sample, dtype=np.float32)

    def of(self, query: np.ndarray) -> tuple[float, float]:
        """(mean, spread) of ``query``'s cosines to the map."""
        row = self.sample @ query
        return float(row.mean()), max(float(row.std()), 1e-6)


def z_scorer(
    cosines: Callable[[np.ndarray], np.ndarray],
    query: np.ndarray,
    stats: RowStats,
    places: int,
    penalty: np.ndarray | None = None,
) -> Scorer:
    """A frame's z-values at route positions: its cosine to the nearest place (``cosines``
    gives the frame's cosines to the places at an array of unique positions), against its
    mean and spread over the map. ``penalty``: z-units taken off per place (a geo prior's
    outside)."""
    mean, spread = stats.of(query)
    last = places - 1

    def score(positions: np.ndarray) -> np.ndarray:
        nearest = np.clip(np.round(positions), 0, last).astype(np.int64)
        wanted, where = np.unique(nearest, return_inverse=True)
        z = (cosines(wanted) - mean) / spread
        if penalty is not None:
            z = z - penalty[wanted]
        return z[where]

    return score


class RouteTracker:
    """The beam of route hypotheses over a stream of frames (torch-free, no map access of
    its own: each frame brings its seeds and a scorer)."""

    def __init__(
        self, places: int, config: RouteConfig | None = None, shape: RouteShape | None = None
    ) -> None:
        self.places = whole(places, "route places", 1)
        self.config = config or RouteConfig()
        self.shape = shape or RouteShape(np.zeros(self.places, np.int64))
        if len(self.shape.segments) != self.places:
            raise EdgeVPRError(f"the route shape has {len(self.shape.segments)} places, not "
                               f"{self.places}")  # fmt: skip
        self._ends = self.shape.ends()
        relative = np.unique(np.asarray(self.config.speeds, np.float64))
        self._octaves = np.abs(np.log2(relative))
        self._speeds = relative * (self.config.pace or 1.0)  # places a frame
        self.reset()

    def reset(self) -> None:
        length = self.config.length
        self._position = np.zeros(0)
        self._end = np.zeros(0, np.int64)  # the last position of each hypothesis' drive
        self._speed = np.zeros(0, np.int64)
        self._ring = np.zeros((0, length))
        self._frames = 0

    @property
    def frames(self) -> int:
        """Frames of evidence in the window (at most L)."""
        return min(self._frames, self.config.length)

    def update(self, seeds: np.ndarray, score: Scorer, step: float = 1.0) -> RouteEstimate:
        """Advance by one frame: ``seeds`` are the route positions of the frame's nearest
        places, ``score`` gives the frame's z at any route positions, ``step`` is the
        frames elapsed since the last one (1 without timestamps)."""
        config = self.config
        column = self._frames % config.length
        self._frames += 1
        # a long gap moves the route at most L places at speed 1: its evidence is stale
        step = min(max(float(step), 0.0), config.length / (config.pace or 1.0))
        positions, ends, speeds, rings, costs = self._moved(step)
        seeded = np.asarray(seeds, np.float64)[: config.seeds]
        positions = np.concatenate([positions, np.tile(seeded, len(self._speeds))])
        seeded_ends = self._ends[np.clip(seeded.astype(np.int64), 0, self.places - 1)]
        ends = np.concatenate([ends, np.tile(seeded_ends, len(self._speeds))])
        speeds = np.concatenate([speeds, np.repeat(np.arange(len(self._speeds)), len(seeded))])
        rings = np.concatenate([rings, np.zeros((len(seeded) * len(self._speeds), config.length))])
        costs = np.concatenate([costs, np.zeros(len(seeded) * len(self._speeds))])
        rings[:, column] = score(positions) - costs - config.speed_cost * self._octaves[speeds]
        totals = rings.sum(axis=1) / self.frames
        keep = self._survivors(positions, speeds, totals)
        self._position, self._end = positions[keep], ends[keep]
        self._speed, self._ring = speeds[keep], rings[keep]
        return self._estimate(totals[keep])

    def _moved(self, step: float) -> tuple[np.ndarray, ...]:
        """Every hypothesis moved by its speed and by the speeds either side (at a cost);
        those that leave their drive are dropped."""
        if not len(self._position):
            empty, none = np.zeros(0), np.zeros(0, np.int64)
            return empty, none, none, np.zeros((0, self.config.length)), empty
        parts = []
        for change in (-1, 0, 1):
            speed = np.clip(self._speed + change, 0, len(self._speeds) - 1)
            cost = np.where(speed != self._speed, self.config.change_cost, 0.0)
            moved = self._position + self._speeds[speed] * step
            parts.append((moved, self._end, speed, self._ring, cost))
        position, end, speed, ring, cost = (np.concatenate(p) for p in zip(*parts, strict=True))
        inside = position <= end
        return position[inside], end[inside], speed[inside], ring[inside], cost[inside]

    def _survivors(self, positions: np.ndarray, speeds: np.ndarray, totals: np.ndarray):
        """One hypothesis per (half-place, speed), the best; then the beam's best."""
        key = np.round(positions * 2).astype(np.int64) * len(self._speeds) + speeds
        order = np.lexsort((-totals, key))
        first = np.ones(len(order), bool)
        first[1:] = key[order][1:] != key[order][:-1]
        unique = order[first]
        return unique[np.argsort(-totals[unique], kind="stable")[: self.config.beam]]

    def _rivals(self) -> np.ndarray:
        """Which hypotheses are a different answer from the best: in its drive, more than
        MARGIN_WINDOW places away; in another drive, further than ``near_m`` from it (or
        anywhere, where either position is unknown)."""
        best = self._position[0]
        far = np.abs(self._position - best) > MARGIN_WINDOW
        other = self._end != self._end[0]
        if not other.any() or self.shape.xy is None:
            return far
        places = np.clip(np.round(self._position).astype(np.int64), 0, self.places - 1)
        distance = np.linalg.norm(self.shape.xy[places] - self.shape.xy[places[0]], axis=1)
        apart = ~(np.nan_to_num(distance, nan=np.inf) <= self.shape.near_m)
        return np.where(other, apart, far)

    def _estimate(self, totals: np.ndarray) -> RouteEstimate:
        best = float(self._position[0])
        far = self._rivals()
        rival = float(totals[far].max()) if far.any() else float(totals.min()) - 1.0
        place = min(int(round(best)), self.places - 1)
        return RouteEstimate(
            position=best,
            place=place,
            speed=float(self._speeds[self._speed[0]]),
            score=float(totals[0]),
            margin=float(totals[0]) - rival,
            frames=self.frames,
            positions=self._position.copy(),
            scores=totals,
        )
