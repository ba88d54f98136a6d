"""What a localizer says about each frame: a :class:`Fix`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from edgevpr.core.errors import EdgeVPRError
from edgevpr.runtime.recognizer import Match

# The kinds of position have one home, shared with the tracks read in: metres east/north
# in the map's planar frame (UTM where the map says so), WGS84 degrees, or metres travelled
# along the drive that taught the map.
from edgevpr.runtime.tracks.track import EAST_NORTH, KINDS, LAT_LON, ROUTE_M

INITIALISING = "initialising"  # fewer frames than the sequence needs
TRACKING = "tracking"  # the last fixes were accepted
LOST = "lost"  # no fix accepted for a whole sequence length


@dataclass(frozen=True)
class Position:
    """A position whose kind is named, never guessed from a tuple."""

    kind: str  # EAST_NORTH, LAT_LON or ROUTE_M
    first: float  # east (metres), latitude (degrees) or metres along the route
    second: float  # north (metres) or longitude (degrees); 0 along a route
    utm_zone: str | None = None  # for east/north positions, where the map records it

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EdgeVPRError(f"position kind must be one of {', '.join(KINDS)}, not "
                               f"{self.kind}")  # fmt: skip

    @property
    def east(self) -> float:
        return self._planar()[0]

    @property
    def north(self) -> float:
        return self._planar()[1]

    @property
    def lat(self) -> float:
        return self._geographic()[0]

    @property
    def lon(self) -> float:
        return self._geographic()[1]

    @property
    def route_m(self) -> float:
        if self.kind != ROUTE_M:
            raise EdgeVPRError(f"this position is {self.kind}, not metres along a route")
        return self.first

    def _planar(self) -> tuple[float, float]:
        if self.kind != EAST_NORTH:
            raise EdgeVPRError("this position is latitude/longitude, not east/north")
        return self.first, self.second

    def _geographic(self) -> tuple[float, float]:
        if self.kind != LAT_LON:
            raise EdgeVPRError("this position is east/north, not latitude/longitude")
        return self.first, self.second

    def to_dict(self) -> dict[str, Any]:
        if self.kind == ROUTE_M:
            return {"kind": self.kind, "route_m": self.first}
        names = ("east", "north") if self.kind == EAST_NORTH else ("lat", "lon")
        data: dict[str, Any] = {"kind": self.kind, names[0]: self.first, names[1]: self.second}
        if self.utm_zone:
            data["utm_zone"] = self.utm_zone
        return data


@dataclass(frozen=True)
class Fix:
    """Where the robot is after one frame, and whether to act on it.

    ``accepted`` is the decision (confidence at or above the threshold, the sequence long
    enough, the frame not degenerate); ``confidence`` is in [0, 1] (the precision measured at
    this margin when the map carries a calibration, see ``edgevpr eval --pr``); ``reason``
    says why a fix was not accepted.
    """

    frame: int
    state: str
    accepted: bool
    confidence: float
    margin: float  # the raw confidence: z-units of evidence over the best rival (weighed by
    # sqrt(views / L) where the window holds fewer views than frames)
    position: Position | None = None
    uncertainty_m: float | None = None
    heading: float | None = None
    place_id: int | None = None
    route_position: float | None = None  # route maps: place index in traversal order
    speed: float | None = None  # route maps: places per frame
    matches: list[Match] = field(default_factory=list)  # the frame's own nearest places
    timestamp: float | None = None
    name: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """One JSON-able object (a line of ``edgevpr localize --out track.jsonl``)."""
        data: dict[str, Any] = {
            "frame": self.frame,
            "name": self.name,
            "timestamp": self.timestamp,
            "state": self.state,
            "accepted": self.accepted,
            "confidence": round(self.confidence, 4),
            "margin": round(self.margin, 4) if math.isfinite(self.margin) else None,
            "position": None if self.position is None else self.position.to_dict(),
            "uncertainty_m": _rounded(self.uncertainty_m, 2),
            "heading": _rounded(self.heading, 2),
            "place_id": self.place_id,
            "route_position": _rounded(self.route_position, 3),
            "speed": _rounded(self.speed, 3),
            "matches": [m.to_dict() for m in self.matches],
        }
        if self.reason:
            data["reason"] = self.reason
        return data


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
