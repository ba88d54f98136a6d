"""``Localizer``: a position from a stream of frames, with a confidence to act on.

Each frame is embedded by the map's model and matched against the map; the k nearest
places seed a tracker that weighs the evidence of the last L frames:

- on a route map (places in travel order) a beam of (route position, speed) paths
  (:mod:`edgevpr.runtime.localize.route`);
- on an area map (places in 2-D) an online Viterbi over places whose moves follow metric
  distance against elapsed time, a step limit, or odometry
  (:mod:`edgevpr.runtime.localize.area`).

Both score a place by the frame's exact cosine to it, as a z-value over the whole map, so
their cost per frame does not grow with the map (beyond its k-nearest search).
"""

from __future__ import annotations

import math
import os
import statistics
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgevpr.core.checks import instance, real, whole
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.geo import GeoPrior, check_prior, distances_m
from edgevpr.core.pixels import DEFAULT_ENCODING
from edgevpr.runtime.embedder import Embedder
from edgevpr.runtime.localize.area import AreaConfig, AreaTracker, Motion
from edgevpr.runtime.localize.calibration import (
    Calibration,
    default_threshold,
    sidecar,
    uncalibrated_confidence,
)
from edgevpr.runtime.localize.fix import (
    EAST_NORTH,
    INITIALISING,
    LAT_LON,
    LOST,
    ROUTE_M,
    TRACKING,
    Fix,
    Position,
)
from edgevpr.runtime.localize.layout import PlaceLayout
from edgevpr.runtime.localize.route import (
    MARGIN_WINDOW,
    RouteConfig,
    RouteShape,
    RouteTracker,
    RowStats,
    z_scorer,
)
from edgevpr.runtime.localize.stream import (
    StreamFrame,
    embedded_frames,
    frame_name,
    prepared_frame,
)
from edgevpr.runtime.localize.vectorcache import VectorCache
from edgevpr.runtime.placemap import Neighbours, PlaceMap
from edgevpr.runtime.recognizer import Match, check_same_model, matches_of

ROUTE, AREA, AUTO = "route", "area", "auto"
MODES = (AUTO, ROUTE, AREA)
STATS_SAMPLE = 512
# Places a hypothesis outside a geo prior is marked down by (z-units a frame).
OUTSIDE_PRIOR = 10.0
# Hypotheses within this score (z-units) of the best spread the uncertainty radius.
SPREAD_SCORE = 0.05
# Reach per frame on area maps without timestamps or a speed: this many place spacings.
DEFAULT_REACH_SPACINGS = 3.0
# Hypotheses looked at for the uncertainty radius, best first.
SPREAD_HYPOTHESES = 50


@dataclass(frozen=True)
class FixIntegrity:
    """When a fix is believed, whatever the margin its path has accumulated.

    A frame's z-value at a place is its cosine there against its own mean and spread over
    the map: at a place the frame does not show, it behaves like a draw from N(0, 1). Each
    frame is scored where the tracked path predicted it would be before seeing it (the best
    path chosen after the frame fits it by selection, even after a jump). A fix is accepted
    only when that support is at least ``gate`` (a frame from elsewhere passes 1.5 with
    probability 0.07), when no place far from the fix scores ``contradiction`` more than it
    in this frame, and when the mean support of the last ``frames`` frames is at least
    ``floor`` (below it a tracked path is lost: nothing is accepted until the frames support
    a path again, so evidence from before a jump never vouches for a fix after it). A path
    that takes over from another far away is accepted from the next frame on.

    Chosen on nordland64 with the kidnap benchmark (benchmarks/results/localize.md): the
    wrong accepted fixes fell from 114 to 8 over three kidnapped streams at the default
    threshold, while Recall@1 was unchanged.
    """

    gate: float = 1.5
    floor: float = 1.5
    frames: int = 2
    contradiction: float = 1.0

    def __post_init__(self) -> None:
        for name in ("gate", "floor"):
            if not -100 <= real(getattr(self, name), f"integrity {name}") <= 100:
                raise EdgeVPRError(f"integrity {name} must be in [-100, 100]")
        whole(self.frames, "integrity frames", 1, 1000)


class Localizer:
    """Where the robot is, from frames of one camera, against one map.

    Args:
        embedder: the exported model that built ``placemap``.
        placemap: the map to localise in.
        mode: "route" (places in travel order: sequence matching), "area" (a temporal filter
            over 2-D places) or "auto" (route when consecutive places are neighbours).
        length: frames of evidence (L).
        calibration: a :class:`Calibration`, a path to one, or "auto": the map's own
            ``<map>.localizer.json`` where it exists for this model and mode.
        threshold: accept fixes with at least this margin (default: the calibration's, else
            the mode's for this length, ``calibration.default_threshold``).
        max_speed: metres per second an area-map robot can move (with timestamps).
        k: nearest places reported with each fix.

    Example::

        localizer = Localizer(Embedder("best.onnx"), PlaceMap.load("route.vprmap"))
        for fix in localizer.run(frames):            # any iterable: arrays, paths, bytes
            if fix.accepted:
                print(fix.position.east, fix.position.north, fix.uncertainty_m)
    """

    def __init__(
        self,
        embedder: Embedder,
        placemap: PlaceMap,
        *,
        mode: str = AUTO,
        length: int = 10,
        calibration: Calibration | str | os.PathLike[str] | None = AUTO,
        threshold: float | None = None,
        max_speed: float | None = None,
        k: int = 5,
        route: RouteConfig | None = None,
        area: AreaConfig | None = None,
        integrity: FixIntegrity | None = None,
    ) -> None:
        instance(embedder, Embedder, "embedder", " (an exported model: Embedder('best.onnx'))")
        instance(placemap, PlaceMap, "placemap", " (PlaceMap.load('route.vprmap'))")
        check_same_model(embedder, placemap)
        if mode not in MODES:
            raise EdgeVPRError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if len(placemap) < 2:
            raise EdgeVPRError("a localizer needs a map of at least two places")
        self.embedder, self.placemap = embedder, placemap
        self.length = whole(length, "sequence length", 1, 1000)
        self.k = whole(k, "k", 1, 1000)
        self.max_speed = None if max_speed is None else real(max_speed, "max speed")
        self.layout = PlaceLayout.of(placemap)
        self.mode = (ROUTE if self.layout.is_route else AREA) if mode == AUTO else mode
        if self.mode == AREA and self.layout.kind in (None, ROUTE_M):
            raise EdgeVPRError("area tracking needs a map whose places have coordinates")
        self.integrity = integrity or FixIntegrity()
        route = route or RouteConfig()
        # a keyframed map's places lie several recorded frames apart: a stream recorded as
        # its drive was moves that much slower through them (RouteConfig.pace)
        self._pace: float = route.pace if route.pace is not None else self.layout.pace
        self._route_config = replace(route, length=self.length, pace=self._pace)
        self._area_config = replace(area or AreaConfig(), length=self.length)
        self.calibration = self._calibration(calibration)
        self.threshold = real(
            threshold
            if threshold is not None
            else self.calibration.threshold
            if self.calibration
            else default_threshold(self.mode, self.length),
            "threshold",
        )
        self._stats = RowStats(self._sample())
        self._cache = VectorCache(self._vectors, len(self.layout), self.embedder.descriptor_dim)
        self._lock = threading.Lock()
        self.reset()

    @property
    def pace(self) -> float | None:
        """Route matching: route places a frame at speed 1 (None for area tracking)."""
        return self._pace if self.mode == ROUTE else None

    # ------------------------------------------------------------------ set-up
    def _calibration(self, given: Any) -> Calibration | None:
        """The calibration to use: ``given`` (a Calibration or a file) must fit this model and
        way of matching; the one found beside the map (AUTO) is used where it fits and
        otherwise set aside with a note (``calibration_note``), never an error."""
        self.calibration_note: str | None = None
        if given is None:
            return None
        if isinstance(given, Calibration):
            found = given
        elif given == AUTO:
            source = self.placemap.source
            if source is None or not sidecar(source).is_file():
                return None
            found = Calibration.load(sidecar(source))
        else:
            found = Calibration.load(given)
        problem = self._misfit(found)
        if problem is None:
            return found
        if given == AUTO:
            self.calibration_note = f"not using the calibration beside the map: {problem}"
            return None
        raise EdgeVPRError(f"{problem}; recalibrate or pass calibration=None")

    def _misfit(self, found: Calibration) -> str | None:
        if found.fingerprint != self.embedder.fingerprint:
            return "the calibration was measured with another model"
        if (found.mode, found.length) != (self.mode, self.length):
            return (f"the calibration is for {found.mode} matching over {found.length} frames, "
                    f"not {self.mode} over {self.length}")  # fmt: skip
        return None

    @property
    def _route_shape(self) -> RouteShape:
        """The map's drives as segments of the route; another drive's place within
        MARGIN_WINDOW places' spacing of the best is the same answer."""
        spacing = self.layout.spacing_m or 0.0
        return RouteShape(self.layout.segments, self.layout.xy, MARGIN_WINDOW * spacing)

    def _sample(self) -> np.ndarray:
        ids = self.layout.ids
        picks = np.random.default_rng(0).permutation(len(ids))[:STATS_SAMPLE]
        return self.placemap.descriptors(ids[np.sort(picks)])

    def reset(self) -> None:
        """Forget the stream: the next frame starts a new sequence."""
        self._tracker = self._new_tracker()
        self._frame = 0
        self._last_time: float | None = None
        self._periods: deque[float] = deque(maxlen=25)
        self._pending_step = 0.0
        self._accepted: deque[bool] = deque(maxlen=self.length)
        self._steps: deque[float] = deque(maxlen=self.length)  # route: steps in the window
        self._support: deque[float] = deque(maxlen=self.integrity.frames)
        self._lost = False  # support failed: nothing accepted until a path re-earns it
        self._last_path: tuple[float, float] | None = None  # route: (position, speed)

    def _new_tracker(self) -> RouteTracker | AreaTracker:
        if self.mode == ROUTE:
            return RouteTracker(len(self.layout), self._route_config, self._route_shape)
        spacing = self.layout.spacing_m or 1.0
        return AreaTracker(self.layout.xy, spacing, self._area_config)

    # ------------------------------------------------------------------ one frame
    def update(
        self,
        frame: Any,
        *,
        encoding: str = DEFAULT_ENCODING,
        timestamp: float | None = None,
        prior: GeoPrior | None = None,
        odometry: tuple[float, float] | None = None,
        name: str | None = None,
    ) -> Fix:
        """One frame (pixels in ``encoding``, a path or encoded bytes) -> its fix."""
        rgb, blank = prepared_frame(frame, encoding, self.embedder.spec)
        descriptor = self.embedder.embed_image(rgb)
        return self.update_descriptor(
            descriptor,
            timestamp=timestamp,
            prior=prior,
            odometry=odometry,
            name=name,
            blank=blank,
        )

    def update_descriptor(
        self,
        descriptor: np.ndarray,
        *,
        timestamp: float | None = None,
        prior: GeoPrior | None = None,
        odometry: tuple[float, float] | None = None,
        name: str | None = None,
        blank: bool = False,
    ) -> Fix:
        """A frame already embedded by this map's model -> its fix."""
        prior = check_prior(prior)
        if timestamp is not None:
            timestamp = real(timestamp, "timestamp")
        if odometry is not None:
            odometry = (real(odometry[0], "odometry east"), real(odometry[1], "odometry north"))
        query = np.asarray(descriptor, np.float32).reshape(-1)
        if query.shape != (self.embedder.descriptor_dim,) or not np.isfinite(query).all():
            raise EdgeVPRError(
                f"a descriptor must be {self.embedder.descriptor_dim} finite numbers"
            )
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        with self._lock:
            return self._advance(query, timestamp, prior, odometry, name, blank)

    def _advance(
        self,
        query: np.ndarray,
        timestamp: float | None,
        prior: GeoPrior | None,
        odometry: tuple[float, float] | None,
        name: str | None,
        blank: bool,
    ) -> Fix:
        frame = self._frame
        self._frame += 1
        step = self._pending_step + self._step(timestamp, odometry)
        nearest, found = self._nearest(query, prior)
        matches = matches_of(found)
        base = Fix(frame=frame, state=self._state(), accepted=False, confidence=0.0,
                   margin=-math.inf, matches=matches, timestamp=timestamp, name=name)  # fmt: skip
        if blank:
            self._pending_step = step
            self._accepted.append(False)
            return replace(base, state=self._state(), reason="blank frame")
        self._pending_step = 0.0
        seeds = self.layout.index_of(nearest)
        outside = self._outside(prior)
        scorer = z_scorer(
            lambda positions: self._cache.dots(positions, query),
            query,
            self._stats,
            len(self.layout),
            None if outside is None else OUTSIDE_PRIOR * outside,
        )
        if self.mode == ROUTE:
            fix = self._route_fix(base, seeds, scorer, step)
        else:
            fix = self._area_fix(base, seeds, scorer, step, timestamp, odometry)
        self._accepted.append(fix.accepted)
        return replace(fix, state=self._state())

    def _nearest(self, query: np.ndarray, prior: GeoPrior | None) -> tuple[np.ndarray, Neighbours]:
        """The ids of the frame's nearest places (the tracker's seeds), and the first k as
        the fix's matches (records from the layout, only for those k)."""
        k = max(self.k, self._seeds())
        if prior is not None:
            found = self.placemap.query(query, k=k, prior=prior)[0]
            distances = None if found.distances_m is None else found.distances_m[: self.k]
            shown = Neighbours(found.ids[: self.k], found.scores[: self.k],
                               found.records[: self.k], distances)  # fmt: skip
            return found.ids, shown
        ids, scores = (row[0] for row in self.placemap.search(query[None], k=k))
        records = [self.layout.records[p] for p in self.layout.index_of(ids[: self.k])]
        return ids, Neighbours(ids[: self.k], scores[: self.k], records)

    def _seeds(self) -> int:
        config = self._route_config if self.mode == ROUTE else self._area_config
        return config.seeds

    def _step(self, timestamp: float | None, odometry: tuple[float, float] | None) -> float:
        """Frames elapsed since the last frame, for the tracker: from odometry (the places
        moved over the route's pace), timestamps (for route matching on a map whose drives
        have times, in frames of those drives: a camera at another rate than the recording
        moves through the places at the recorded pace all the same; else against the
        stream's typical period), else 1."""
        step = 1.0
        if timestamp is not None and self._last_time is not None:
            period = timestamp - self._last_time
            if period > 0:
                self._periods.append(period)
                recorded = self.layout.frame_period_s if self.mode == ROUTE else None
                step = period / (recorded or statistics.median(self._periods))
        if timestamp is not None:
            self._last_time = timestamp
        if odometry is not None and self.layout.spacing_m:
            places = math.hypot(*odometry) / self.layout.spacing_m
            # the route moves pace x speed places a frame: as many frames as at speed 1
            step = places / self._pace if self.mode == ROUTE else places
        return step

    def _vectors(self, positions: np.ndarray) -> np.ndarray:
        return self.placemap.descriptors(self.layout.ids[positions])

    def _outside(self, prior: GeoPrior | None) -> np.ndarray | None:
        """1 for layout positions outside the prior (or without coordinates), else 0."""
        if prior is None:
            return None
        distance = np.nan_to_num(distances_m(prior, self.layout.coordinates), nan=np.inf)
        return (distance > prior.radius_m).astype(np.float64)

    # ------------------------------------------------------------------ route and area
    def _route_fix(self, base: Fix, seeds: np.ndarray, scorer: Any, step: float) -> Fix:
        tracker = self._tracker
        assert isinstance(tracker, RouteTracker)
        predicted = self._predicted(step)
        self._steps.append(step)
        estimate = tracker.update(seeds, scorer, step)
        self._last_path = (estimate.position, estimate.speed)
        place = estimate.place
        # the frame's support, where the tracked path said it would be before seeing it:
        # the best path chosen after the frame fits it by selection, even after a jump
        at = float(place) if predicted is None else predicted
        support = float(scorer(np.array([at - 1.0, at, at + 1.0])).max())
        takeover = predicted is not None and abs(place - predicted) > MARGIN_WINDOW
        near = estimate.scores >= estimate.score - SPREAD_SCORE
        here = self.layout.xy[place]
        nearby = np.round(estimate.positions[near][:SPREAD_HYPOTHESES]).astype(np.int64)
        around = self.layout.xy[np.clip(nearby, 0, len(self.layout) - 1)]
        return self._decided(
            base,
            place=place,
            position=here,
            spread=self._spread(around, here),
            margin=estimate.margin * self._independence(),
            frames=estimate.frames,
            support=support,
            rival=self._best_elsewhere(seeds, place, scorer),
            takeover=takeover,
            route_position=estimate.position,
            speed=estimate.speed,
        )

    def _independence(self) -> float:
        """How far the route window's frames are independent evidence: 1 where they span
        at least L recorded frames (steps of the map's drive, or of the stream's own typical
        period); a camera at four times the recorded rate sees each view about four times,
        so its L frames hold L/4 views and the noise of their mean margin is twice as large:
        the margin is scaled by sqrt(views / L)."""
        return math.sqrt(min(1.0, sum(self._steps) / self.length))

    def _area_fix(
        self,
        base: Fix,
        seeds: np.ndarray,
        scorer: Any,
        step: float,
        timestamp: float | None,
        odometry: tuple[float, float] | None,
    ) -> Fix:
        tracker = self._tracker
        assert isinstance(tracker, AreaTracker)
        estimate = tracker.update(seeds, scorer, self._motion(step, timestamp, odometry))
        near = estimate.scores >= estimate.score - SPREAD_SCORE
        here = self.layout.xy[estimate.place]
        around = self.layout.xy[estimate.places[near][:SPREAD_HYPOTHESES]]
        return self._decided(
            base,
            place=estimate.place,
            position=here,
            spread=self._spread(around, here),
            margin=estimate.margin,
            frames=estimate.frames,
            support=float(scorer(np.array([float(estimate.place)]))[0]),
            rival=self._best_elsewhere(seeds, estimate.place, scorer),
        )

    def _motion(self, step: float, timestamp: float | None, odometry: Any) -> Motion:
        spacing = self.layout.spacing_m or 1.0
        if odometry is not None:
            return Motion(reach_m=math.hypot(*odometry), step=step, odometry=odometry)
        if self.max_speed is not None and timestamp is not None and self._periods:
            return Motion(reach_m=self.max_speed * self._periods[-1], step=step)
        return Motion(reach_m=DEFAULT_REACH_SPACINGS * spacing * max(step, 1.0), step=step)

    def _spread(self, points: np.ndarray, here: np.ndarray) -> float | None:
        """Metres within which the hypotheses nearly as good as the best lie (at least half
        a place spacing)."""
        if self.layout.spacing_m is None or not len(points):
            return None
        distance = np.linalg.norm(points.reshape(-1, 2) - here, axis=1)
        distance = distance[np.isfinite(distance)]
        return max(float(distance.max()) if len(distance) else 0.0, self.layout.spacing_m / 2)

    def _decided(
        self,
        base: Fix,
        *,
        place: int,
        position: np.ndarray,
        spread: float | None,
        margin: float,
        frames: int,
        support: float,
        rival: float,
        takeover: bool = False,
        route_position: float | None = None,
        speed: float | None = None,
    ) -> Fix:
        reason, weighed = self._rejection(margin, frames, support, rival, takeover)
        if weighed:
            confidence = (self.calibration.confidence(margin) if self.calibration is not None
                          else uncalibrated_confidence(margin, self.threshold))  # fmt: skip
        else:  # not a fix to weigh at all: no evidence of its own, or evidence against it
            confidence = 0.0
        record = self.layout.records[place]
        return replace(
            base,
            accepted=reason is None,
            confidence=confidence,
            margin=margin,
            position=self._position(position, record),
            uncertainty_m=spread,
            heading=record.heading,
            place_id=int(self.layout.ids[place]),
            route_position=route_position,
            speed=speed,
            reason=reason,
        )

    def _rejection(self, margin: float, frames: int, support: float, rival: float,
                   takeover: bool) -> tuple[str | None, bool]:  # fmt: skip
        """Why this frame's fix is not accepted (None: it is), and whether its margin is
        weighed at all (only a fix refused for its margin alone is). A tracked path whose last
        frames stop supporting it is lost: nothing is accepted until the frames support a
        path again, so evidence from before a jump never vouches for a fix after it."""
        integrity = self.integrity
        self._support.append(support)
        recent = float(np.mean(self._support))
        if len(self._support) == integrity.frames and recent < integrity.floor:
            if any(self._accepted):
                self._lost = True
            return (f"{'lost: ' if self._lost else ''}the last {integrity.frames} frames do not "
                    f"support the path (z {recent:.2f} < {integrity.floor:g})"), False  # fmt: skip
        if frames < self.length:
            return f"initialising ({frames} of {self.length} frames)", False
        if takeover:
            return "a new path took over: accepted once the next frame confirms it", False
        if support < integrity.gate:
            return (f"the frame does not support the fix (z {support:.2f} < "
                    f"{integrity.gate:g})"), False  # fmt: skip
        if rival - support >= integrity.contradiction:
            return (f"the frame shows another place (z {rival:.2f}) far better than the fix's "
                    f"({support:.2f})"), False  # fmt: skip
        if margin < self.threshold:
            return f"margin {margin:.3f} below the threshold {self.threshold:.3f}", True
        self._lost = False
        return None, True

    def _predicted(self, step: float) -> float | None:
        """Where the last best route path goes with this frame (None before the first)."""
        if self._last_path is None:
            return None
        position, speed = self._last_path
        return min(position + speed * step, len(self.layout) - 1.0)

    def _best_elsewhere(self, seeds: np.ndarray, place: int, scorer: Any) -> float:
        """The frame's best z among its nearest places that are not the fix's place: more
        than MARGIN_WINDOW places away along the route, and (where positions are known)
        further than that many spacings on the ground."""
        seeds = np.asarray(seeds, np.int64)
        far = np.abs(seeds - place) > MARGIN_WINDOW
        if self.layout.spacing_m:
            metres = np.linalg.norm(self.layout.xy[seeds] - self.layout.xy[place], axis=1)
            far &= ~(metres <= MARGIN_WINDOW * self.layout.spacing_m)
        return float(scorer(seeds[far].astype(np.float64)).max()) if far.any() else -math.inf

    def _position(self, xy: np.ndarray, record: Any) -> Position | None:
        """The fix's position in the map's own terms (east/north, else lat/lon)."""
        if self.layout.kind is None or not np.isfinite(xy).all():
            return None
        if self.layout.kind == EAST_NORTH:
            return Position(EAST_NORTH, float(xy[0]), float(xy[1]), record.utm_zone)
        if self.layout.kind == ROUTE_M:
            return Position(ROUTE_M, float(xy[0]), 0.0)
        return Position(LAT_LON, *self.layout.projection.lat_lon(xy))

    def _state(self) -> str:
        if self._lost:
            return LOST
        if self._tracker.frames < self.length:
            return INITIALISING
        return TRACKING if any(self._accepted) else LOST

    # ------------------------------------------------------------------ streams
    def run(
        self,
        frames: Iterable[Any],
        *,
        encoding: str = DEFAULT_ENCODING,
        prior: GeoPrior | None = None,
        progress: bool = False,
        on_unreadable: Any = None,
    ) -> Iterator[Fix]:
        """Fixes for any iterable of frames (pixels, paths, bytes or :class:`StreamFrame`),
        lazily: the next batch is decoded and embedded while the current one is tracked,
        and memory stays bounded for an endless stream. ``on_unreadable(frame, error)``
        skips unreadable frames (by default they stop the stream)."""
        return self._fixes(embedded_frames(self.embedder, frames, encoding, progress,
                                           on_unreadable), check_prior(prior))  # fmt: skip

    def _fixes(
        self, embedded: Iterator[tuple[StreamFrame, bool, np.ndarray]], prior: GeoPrior | None
    ) -> Iterator[Fix]:
        for item, blank, descriptor in embedded:
            yield self.update_descriptor(descriptor, timestamp=item.timestamp, prior=prior,
                                         odometry=item.odometry, name=frame_name(item),
                                         blank=blank)  # fmt: skip


__all__ = ["AREA", "AUTO", "ROUTE", "Localizer", "Match", "StreamFrame"]
