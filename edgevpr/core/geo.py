"""Where places are: a rough-position prior, distances, and WGS84 -> UTM.

Maps built from the evaluation layout carry UTM east/north in metres; a robot's GPS gives
latitude/longitude. A prior in either form is compared with each place in the form that place
has: planar distance for east/north, great-circle distance for latitude/longitude, and a
latitude/longitude prior is projected into the map's UTM zone when the places have only
east/north.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgevpr.core.checks import real, shown
from edgevpr.core.errors import EdgeVPRError

EARTH_RADIUS_M = 6_371_008.8  # mean radius; haversine error < 0.5 % anywhere
WGS84_A = 6_378_137.0
WGS84_F = 1 / 298.257223563
UTM_K0 = 0.9996
UTM_FALSE_EASTING = 500_000.0
UTM_FALSE_NORTHING_SOUTH = 10_000_000.0
UTM_LETTERS = "CDEFGHJKLMNPQRSTUVWXX"
UTM_BANDS = frozenset(UTM_LETTERS)


def check_latlon(lat: float, lon: float, what: str) -> None:
    """Latitude in [-90, 90] and longitude in [-180, 180], or a one-line error."""
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise EdgeVPRError(f"{what} latitude/longitude {lat},{lon} is out of range")


@dataclass(frozen=True)
class GeoPrior:
    """Keep only places within ``radius_m`` metres of a rough position.

    ``GeoPrior(east, north, radius_m)`` is in the map's own planar units (UTM metres for the
    evaluation layout); ``GeoPrior.from_latlon(lat, lon, radius_m)`` is a GPS fix.
    """

    east: float | None
    north: float | None
    radius_m: float
    lat: float | None = None
    lon: float | None = None

    def __post_init__(self) -> None:
        for name in ("east", "north", "lat", "lon", "radius_m"):
            value = getattr(self, name)
            if value is not None or name == "radius_m":
                object.__setattr__(self, name, real(value, f"prior {name}"))
        if not self.radius_m > 0:
            raise EdgeVPRError(
                f"prior radius must be a positive number of metres, got {self.radius_m}"
            )
        planar = self.east is not None and self.north is not None
        geographic = self.lat is not None and self.lon is not None
        partial = (self.east is None) != (self.north is None) or (self.lat is None) != (
            self.lon is None
        )
        if planar == geographic or partial:
            raise EdgeVPRError("a prior needs either east/north or lat/lon, not both or neither")
        if geographic:
            check_latlon(self.lat, self.lon, "prior")  # type: ignore[arg-type]

    @classmethod
    def from_latlon(cls, lat: float, lon: float, radius_m: float) -> GeoPrior:
        return cls(None, None, radius_m, lat=lat, lon=lon)

    @property
    def is_latlon(self) -> bool:
        return self.lat is not None

    def describe(self) -> str:
        if self.is_latlon:
            return f"within {self.radius_m:g} m of lat {self.lat:.6f}, lon {self.lon:.6f}"
        return f"within {self.radius_m:g} m of east {self.east:.2f}, north {self.north:.2f}"


def check_prior(prior: object) -> GeoPrior | None:
    """A geo prior is a GeoPrior or None: a bare tuple cannot say east/north from lat/lon."""
    if prior is not None and not isinstance(prior, GeoPrior):
        raise EdgeVPRError(
            f"prior must be a GeoPrior (GeoPrior(east, north, radius_m) or "
            f"GeoPrior.from_latlon(lat, lon, radius_m)), not {shown(prior)}"
        )
    return prior


@dataclass(frozen=True)
class PlaceCoordinates:
    """Coordinates of many places as columns (NaN where a place lacks them)."""

    east: np.ndarray
    north: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    utm_zones: frozenset[str]


def haversine_m(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """Great-circle distance in metres from one point to many."""
    phi1, phi2 = math.radians(lat), np.radians(lats)
    dphi = phi2 - phi1
    dlmb = np.radians(lons) - math.radians(lon)
    h = np.sin(dphi / 2) ** 2 + math.cos(phi1) * np.cos(phi2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def distances_m(prior: GeoPrior, places: PlaceCoordinates) -> np.ndarray:
    """Distance from the prior to every place; NaN where it cannot be known."""
    has_planar = bool(np.isfinite(places.east).any())
    if not prior.is_latlon:
        if not has_planar and np.isfinite(places.lat).any():
            raise EdgeVPRError(
                "this map's places have latitude/longitude, not east/north: give the prior "
                "as latitude/longitude (GeoPrior.from_latlon, --prior LAT,LON,R)"
            )
        return np.hypot(places.east - prior.east, places.north - prior.north)
    distance = haversine_m(prior.lat, prior.lon, places.lat, places.lon)  # type: ignore[arg-type]
    planar_only = np.isnan(distance) & ~np.isnan(places.east)
    if planar_only.any():
        if len(places.utm_zones) != 1:
            raise EdgeVPRError(
                "this map's places have UTM east/north but "
                + ("no UTM zone" if not places.utm_zones else "several UTM zones")
                + ", so a latitude/longitude prior cannot be placed on it; "
                "give the prior as EAST,NORTH,R in the map's units"
            )
        (zone,) = places.utm_zones
        east, north = latlon_to_utm(prior.lat, prior.lon, zone)  # type: ignore[arg-type]
        planar = np.hypot(places.east - east, places.north - north)
        distance = np.where(planar_only, planar, distance)
    return distance


def utm_zone_for(lat: float, lon: float) -> str:
    """The standard UTM zone (with latitude band) of a point, Norway/Svalbard exceptions too."""
    if not -80 <= lat < 84:
        raise EdgeVPRError(f"latitude {lat} is outside UTM's range (-80..84)")
    number = int((lon + 180) // 6) % 60 + 1
    if 56 <= lat < 64 and 3 <= lon < 12:
        number = 32
    elif 72 <= lat < 84 and 0 <= lon < 42:
        number = 31 if lon < 9 else 33 if lon < 21 else 35 if lon < 33 else 37
    return f"{number}{UTM_LETTERS[int((lat + 80) // 8)]}"


def parse_zone(zone: str) -> tuple[int, bool]:
    """'32V' -> (32, northern hemisphere); bands 'N'..'X' are north of the equator, and a
    zone without a band is taken as northern."""
    if not isinstance(zone, str):
        raise EdgeVPRError(f"{shown(zone)} is not a UTM zone (e.g. 32V or 18T)")
    text = zone.strip().upper()
    digits = text.rstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    letter = text[len(digits) :]
    if not digits.isdigit() or not 1 <= int(digits) <= 60 or len(letter) > 1:
        raise EdgeVPRError(f"'{zone}' is not a UTM zone (e.g. 32V or 18T)")
    if letter and letter not in UTM_BANDS:
        raise EdgeVPRError(f"'{zone}' is not a UTM zone: {letter} is not a latitude band (C..X)")
    return int(digits), (letter or "N") >= "N"


def is_utm_zone(zone: str) -> bool:
    try:
        parse_zone(zone)
    except EdgeVPRError:
        return False
    return True


def latlon_to_utm(lat: float, lon: float, zone: str | None = None) -> tuple[float, float]:
    """WGS84 latitude/longitude -> UTM (east, north) in metres, in ``zone`` if given.

    Krüger's series to third order: millimetre accuracy within a zone and well beyond it, so
    a prior a little over a zone border still lands correctly on the map's grid.
    """
    zone = zone or utm_zone_for(lat, lon)
    number, northern = parse_zone(zone)
    n = WGS84_F / (2 - WGS84_F)
    rectifying_radius = WGS84_A / (1 + n) * (1 + n**2 / 4 + n**4 / 64)
    alpha = (n / 2 - 2 * n**2 / 3 + 5 * n**3 / 16, 13 * n**2 / 48 - 3 * n**3 / 5, 61 * n**3 / 240)
    phi = math.radians(lat)
    dlmb = math.radians(lon - (number * 6 - 183))
    e2n = 2 * math.sqrt(n) / (1 + n)
    t = math.sinh(math.atanh(math.sin(phi)) - e2n * math.atanh(e2n * math.sin(phi)))
    xi = math.atan2(t, math.cos(dlmb))
    eta = math.atanh(math.sin(dlmb) / math.sqrt(1 + t * t))
    east_series = eta + sum(
        a * math.cos(2 * j * xi) * math.sinh(2 * j * eta) for j, a in enumerate(alpha, 1)
    )
    north_series = xi + sum(
        a * math.sin(2 * j * xi) * math.cosh(2 * j * eta) for j, a in enumerate(alpha, 1)
    )
    east = UTM_FALSE_EASTING + UTM_K0 * rectifying_radius * east_series
    north = UTM_K0 * rectifying_radius * north_series
    if not northern:
        north += UTM_FALSE_NORTHING_SOUTH
    return east, north


def utm_to_latlon(east: float, north: float, zone: str) -> tuple[float, float]:
    """UTM east/north in ``zone`` -> WGS84 latitude/longitude (Krüger's series, third order:
    millimetres within a zone, as the forward projection)."""
    number, northern = parse_zone(zone)
    n = WGS84_F / (2 - WGS84_F)
    rectifying_radius = WGS84_A / (1 + n) * (1 + n**2 / 4 + n**4 / 64)
    beta = (n / 2 - 2 * n**2 / 3 + 37 * n**3 / 96, n**2 / 48 + n**3 / 15, 17 * n**3 / 480)
    xi = (north - (0.0 if northern else UTM_FALSE_NORTHING_SOUTH)) / (UTM_K0 * rectifying_radius)
    eta = (east - UTM_FALSE_EASTING) / (UTM_K0 * rectifying_radius)
    terms = list(enumerate(beta, 1))
    xi_p = xi - sum(b * math.sin(2 * j * xi) * math.cosh(2 * j * eta) for j, b in terms)
    eta_p = eta - sum(b * math.cos(2 * j * xi) * math.sinh(2 * j * eta) for j, b in terms)
    chi = math.asin(math.sin(xi_p) / math.cosh(eta_p))
    delta = (2 * n - 2 * n**2 / 3 - 2 * n**3, 7 * n**2 / 3 - 8 * n**3 / 5, 56 * n**3 / 15)
    phi = chi + sum(d * math.sin(2 * j * chi) for j, d in enumerate(delta, 1))
    lon = (number * 6 - 183) + math.degrees(math.atan2(math.sinh(eta_p), math.cos(xi_p)))
    return math.degrees(phi), lon


@dataclass(frozen=True)
class LocalProjection:
    """Places in one flat frame of metres: east/north as they are, latitude/longitude
    projected around an origin (equirectangular: under 0.1 % error over a city)."""

    planar: bool
    lat0: float = 0.0
    lon0: float = 0.0

    @classmethod
    def of(cls, places: PlaceCoordinates) -> LocalProjection:
        if np.isfinite(places.east).any() or not np.isfinite(places.lat).any():
            return cls(planar=True)
        return cls(False, float(np.nanmean(places.lat)), float(np.nanmean(places.lon)))

    @property
    def _scale(self) -> float:
        return math.pi / 180 * EARTH_RADIUS_M

    def metres(self, places: PlaceCoordinates) -> np.ndarray:
        """N x 2 metres (NaN rows where a place has no position)."""
        if self.planar:
            return np.stack([places.east, places.north], axis=1)
        east = (places.lon - self.lon0) * self._scale * math.cos(math.radians(self.lat0))
        return np.stack([east, (places.lat - self.lat0) * self._scale], axis=1)

    def lat_lon(self, xy: np.ndarray) -> tuple[float, float]:
        """One point of the flat frame back to (latitude, longitude)."""
        lat = self.lat0 + float(xy[1]) / self._scale
        lon = self.lon0 + float(xy[0]) / (self._scale * math.cos(math.radians(self.lat0)))
        return lat, lon
