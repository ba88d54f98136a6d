"""A track: positions over time, as a GNSS receiver, an odometry topic or a flight log gives
them, and the position at any moment between its samples.

Positions are latitude/longitude (``LAT_LON``), metres east/north in a UTM zone or in a
local frame without one (``EAST_NORTH``), or metres travelled along a path (``ROUTE_M``).
A frame gets the position interpolated at its time: linearly between the two samples around
it (latitude/longitude too: over the second or so between fixes the error is millimetres),
the heading on the circle (359 deg and 1 deg average to 0, not 180), the horizontal variance
linearly. A frame further than ``max_gap`` seconds from every sample gets none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.geo import latlon_to_utm, utm_zone_for

LAT_LON, EAST_NORTH, ROUTE_M = "lat/lon", "east/north", "route metres"
KINDS = (LAT_LON, EAST_NORTH, ROUTE_M)
DEFAULT_MAX_GAP_S = 1.0


class Track:
    """Samples in time order: ``times`` in seconds (absolute where the source is, e.g. GPX,
    else relative to its start), ``values`` N x 2 (lat, lon), (east, north) or (metres, 0),
    ``altitude`` and ``heading`` (degrees clockwise from north) N with NaN where unknown,
    ``variance`` N horizontal variances in m^2 (NaN unknown), ``zone`` for UTM east/north.
    Samples are sorted by time; of two at one time the first given is kept."""

    def __init__(
        self, kind: str, times: npt.ArrayLike, values: npt.ArrayLike, source: str, *,
        altitude: npt.ArrayLike = (), heading: npt.ArrayLike = (),
        variance: npt.ArrayLike = (), zone: str | None = None, absolute: bool = False,
    ) -> None:  # fmt: skip
        if kind not in KINDS:
            raise EdgeVPRError(f"a track holds {', '.join(KINDS)}, not {kind!r}")
        self.kind, self.source, self.zone, self.absolute = kind, source, zone, absolute
        stamps = np.asarray(times, np.float64).reshape(-1)
        n = len(stamps)
        if not n:
            raise EdgeVPRError(f"{source} holds no position")
        points = np.asarray(values, np.float64).reshape(n, 2)
        named = (("altitude", altitude), ("heading", heading), ("variance", variance))
        extra = [_column(column, n, name, source) for name, column in named]
        if not np.isfinite(stamps).all() or not np.isfinite(points).all():
            raise EdgeVPRError(f"{source} has a NaN or infinite time or position")
        if kind == LAT_LON and ((np.abs(points[:, 0]) > 90).any()
                                or (np.abs(points[:, 1]) > 180).any()):  # fmt: skip
            raise EdgeVPRError(f"{source} has a latitude or longitude out of range")
        order = np.argsort(stamps, kind="stable")
        keep = np.ones(n, bool)
        keep[1:] = np.diff(stamps[order]) > 0
        order = order[keep]
        self.times, self.values = stamps[order], points[order]
        self.altitude, self.heading, self.variance = (column[order] for column in extra)

    def __len__(self) -> int:
        return len(self.times)

    @property
    def span(self) -> tuple[float, float]:
        return float(self.times[0]), float(self.times[-1])

    def shifted(self, seconds: float) -> Track:
        """The track with ``seconds`` added to every time (a clock offset)."""
        return self._with(self.kind, self.times + seconds, self.values, self.zone)

    def _with(self, kind: str, times: np.ndarray, values: np.ndarray, zone: str | None) -> Track:
        return Track(kind, times, values, self.source, altitude=self.altitude,
                     heading=self.heading, variance=self.variance, zone=zone,
                     absolute=self.absolute)  # fmt: skip

    def at(self, times: np.ndarray, max_gap: float = DEFAULT_MAX_GAP_S) -> TrackSample:
        """The track at ``times``: interpolated between the samples around each, the nearest
        sample's value beyond its ends; a time further than ``max_gap`` seconds from every
        sample is not valid."""
        times = np.asarray(times, np.float64).reshape(-1)
        right = np.clip(np.searchsorted(self.times, times), 1, max(len(self.times) - 1, 1))
        left = right - 1
        if len(self.times) == 1:
            left = right = np.zeros(len(times), np.int64)
        t0, t1 = self.times[left], self.times[right]
        span = np.where(t1 > t0, t1 - t0, 1.0)
        w = np.clip((times - t0) / span, 0.0, 1.0)[:, None]
        gap = np.minimum(np.abs(times - t0), np.abs(times - t1))
        values = self.values[left] * (1 - w) + self.values[right] * w
        return TrackSample(
            kind=self.kind,
            values=values,
            heading=_circular(self.heading[left], self.heading[right], w[:, 0]),
            altitude=self.altitude[left] * (1 - w[:, 0]) + self.altitude[right] * w[:, 0],
            variance=self.variance[left] * (1 - w[:, 0]) + self.variance[right] * w[:, 0],
            valid=np.isfinite(times) & (gap <= max_gap),
            zone=self.zone,
        )

    def in_utm(self, zone: str | None = None) -> Track:
        """A latitude/longitude track as UTM east/north, all in one zone: ``zone``, else
        the first sample's (a drive across a zone border stays in the zone it started
        in; the projection stays accurate to millimetres well beyond the border)."""
        if self.kind != LAT_LON:
            return self
        zone = zone or utm_zone_for(*self.values[0])
        metres = np.array([latlon_to_utm(lat, lon, zone) for lat, lon in self.values])
        return self._with(EAST_NORTH, self.times, metres, zone)

    def distance_travelled(self) -> np.ndarray:
        """Metres along the track at each sample (cumulative; latitude/longitude projected
        locally first)."""
        xy = self.in_utm().values if self.kind == LAT_LON else self.values
        steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
        return np.concatenate([[0.0], np.cumsum(steps)])


@dataclass(frozen=True)
class TrackSample:
    """A track at some times: ``values`` N x 2, ``valid`` where a sample was near."""

    kind: str
    values: np.ndarray
    heading: np.ndarray
    altitude: np.ndarray
    variance: np.ndarray
    valid: np.ndarray
    zone: str | None


def _column(values: npt.ArrayLike, n: int, name: str, source: str) -> np.ndarray:
    column = np.asarray(values, np.float64).reshape(-1)
    if not len(column):
        return np.full(n, np.nan)
    if len(column) != n:
        raise EdgeVPRError(f"{source}: {len(column)} {name} values for {n} positions")
    if np.isinf(column).any():
        raise EdgeVPRError(f"{source} has an infinite {name}")
    return column


def _circular(first: np.ndarray, second: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Headings (degrees) interpolated on the circle; NaN where either is unknown."""
    a, b = np.radians(first), np.radians(second)
    x = np.cos(a) * (1 - w) + np.cos(b) * w
    y = np.sin(a) * (1 - w) + np.sin(b) * w
    return np.asarray(_compass(np.degrees(np.arctan2(y, x))))


def _compass(degrees: np.ndarray | float) -> np.ndarray | float:
    """Degrees in [0, 360): a tiny negative angle's ``% 360`` rounds up to 360.0 itself."""
    wrapped = np.mod(degrees, 360.0)
    return np.where(wrapped >= 360.0, 0.0, wrapped)


def heading_from_quaternion(qx: float, qy: float, qz: float, qw: float) -> float:
    """Compass heading (degrees clockwise from north) of a ROS orientation in an ENU frame
    (yaw counter-clockwise from east)."""
    yaw = math.atan2(2 * (qw * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz))
    return float(_compass(90.0 - math.degrees(yaw)))
