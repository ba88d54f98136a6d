"""How right a localisation run was: each fix against the frame's true position, from the
same readers that teach maps (a bag's position topic, a GPX/CSV/TUM/SRT track, the frames'
evaluation-layout names), summarised as a :class:`TrackScore`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.geo import latlon_to_utm, utm_to_latlon
from edgevpr.runtime.localize.fix import EAST_NORTH, LAT_LON, ROUTE_M, Fix
from edgevpr.runtime.localize.stream import StreamFrame
from edgevpr.runtime.tracks.positions import (
    FramePosition,
    NamePositions,
    PositionOptions,
    Positions,
    name_position,
    open_positions,
)


def truth_positions(
    truth: str | None, source: Path, frames_kind: str, first: list[StreamFrame],
    options: PositionOptions,
) -> Positions | None:  # fmt: skip
    """Where the truth comes from: ``truth`` a position topic of the bag ``source`` (it
    starts with "/"), or a track file; None: the frames' names where they carry
    coordinates (else no truth)."""
    if truth is None:
        named = [name_position(f) for f in first]
        return NamePositions(named[0]) if named and all(named) else None  # type: ignore[arg-type]
    if truth.startswith("/") and not Path(truth).is_file():
        if frames_kind != "bag":
            raise EdgeVPRError(f"--truth {truth} names a topic: the frames must come from a bag")
        return open_positions(source, frames_kind, first,
                              PositionOptions(position_topic=truth, max_gap=options.max_gap,
                                              time_offset=options.time_offset))  # fmt: skip
    track = Path(truth)
    if not track.is_file():
        raise EdgeVPRError(f"--truth {truth}: no such file (or, for a bag, topic: /name)")
    return open_positions(source, frames_kind, first,
                          PositionOptions(track=track, max_gap=options.max_gap,
                                          time_offset=options.time_offset,
                                          start_time=options.start_time))  # fmt: skip


@dataclass(frozen=True)
class TrackScore:
    """A run against the truth: ``frames`` localised, ``with_truth`` of them with a true
    position; ``accepted`` fixes (of those with truth), ``precision`` the share of them
    within ``radius_m``, their error ``median_m`` and ``p95_m``; ``share_within``: of all
    frames with truth, the share whose fix (accepted or not: the localizer's best guess)
    was within the radius."""

    frames: int
    with_truth: int
    accepted: int
    radius_m: float
    precision: float | None
    median_m: float | None
    p95_m: float | None
    share_within: float | None
    truth: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        if not self.with_truth:
            return f"no frame has a true position in {self.truth}"
        radius = f"{self.radius_m:g} m"
        text = (f"against {self.truth}: {self.with_truth} frames with truth, {self.accepted} "
                f"accepted")  # fmt: skip
        if self.accepted:
            text += (f", {100 * (self.precision or 0):.1f} % of them within {radius} "
                     f"(error median {self.median_m:.2f} m, p95 {self.p95_m:.2f} m)")  # fmt: skip
        return text + f"; {100 * (self.share_within or 0):.1f} % of all fixes within {radius}"


class TruthScorer:
    """Collects each fix's error against the truth (frames without one are counted apart)."""

    def __init__(self, positions: Positions, radius_m: float) -> None:
        self.positions, self.radius_m = positions, radius_m
        self.frames = 0
        self.accepted: list[bool] = []
        self.errors: list[float] = []
        self.points: list[tuple[float, float]] = []  # every frame's truth, NaN where none

    def add(self, fix: Fix, frame: StreamFrame) -> None:
        self.frames += 1
        true = self.positions.of(frame, fix.frame)
        self.points.append((np.nan, np.nan) if true is None else (true.first, true.second))
        if true is None:
            return
        self.accepted.append(fix.accepted)
        self.errors.append(error_m(fix, true))

    def truth_xy(self) -> np.ndarray:
        """Every frame's true position (N x 2, NaN where none), in the truth's frame."""
        return np.array(self.points, np.float64).reshape(-1, 2)

    def score(self) -> TrackScore:
        accepted = np.array(self.accepted, bool)
        errors = np.array(self.errors, np.float64)
        chosen = errors[accepted]
        within = errors <= self.radius_m
        return TrackScore(
            frames=self.frames,
            with_truth=len(errors),
            accepted=int(accepted.sum()),
            radius_m=self.radius_m,
            precision=float(within[accepted].mean()) if len(chosen) else None,
            median_m=float(np.median(chosen)) if len(chosen) else None,
            p95_m=float(np.percentile(chosen, 95)) if len(chosen) else None,
            share_within=float(within.mean()) if len(errors) else None,
            truth=self.positions.description,
        )


def error_m(fix: Fix, true: FramePosition) -> float:
    """Metres between an accepted fix and the true position, in the truth's frame."""
    position = fix.position
    if position is None:
        return float("inf")
    if true.kind == ROUTE_M or position.kind == ROUTE_M:
        if true.kind != position.kind:
            raise EdgeVPRError("a route map's fixes are metres along the route: their truth "
                               "must be too (--spacing), not a position")  # fmt: skip
        return abs(position.route_m - true.first)
    east, north = _in_truth_frame(position.kind, position.first, position.second,
                                  position.utm_zone, true.zone)  # fmt: skip
    return float(np.hypot(east - true.first, north - true.second))


def _in_truth_frame(
    kind: str, first: float, second: float, zone: str | None, truth_zone: str | None
) -> tuple[float, float]:
    """A fix's position as east/north in the truth's UTM zone (or its local frame)."""
    if kind == EAST_NORTH and (zone == truth_zone or zone is None or truth_zone is None):
        return first, second  # one planar frame (a local frame is taken as the truth's)
    if truth_zone is None:
        raise EdgeVPRError("the truth is in a local frame and the map in latitude/longitude: "
                           "give a truth in latitude/longitude or UTM")  # fmt: skip
    lat, lon = (first, second) if kind == LAT_LON else utm_to_latlon(first, second, zone or "")
    return latlon_to_utm(lat, lon, truth_zone)
