"""GSV-Cities (Ali-bey et al. 2022), the set MixVPR trains on:

    <root>/Dataframes/<City>.csv   place_id, year, month, northdeg, city_id, lat, lon, panoid
    <root>/Images/<City>/<city_id>_<place_id:07d>_<year>_<month:02d>_<northdeg:03d>_<lat>_<lon>_<panoid>.jpg

Place ids are per city; here they become one global label per (city, place_id). Positions
are metres on a local plane per city (equirectangular about the city's mean latitude),
accurate to well under a metre inside a place, which is what the distance-weighted losses use.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.data.places import PlaceSet, relabel

COLUMNS = ("place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid")
EARTH_RADIUS_M = 6_371_008.8


def is_gsv_cities(root: str | os.PathLike[str]) -> bool:
    root = Path(root)
    return (root / "Dataframes").is_dir() and (root / "Images").is_dir()


def image_name(row: dict[str, str]) -> str:
    """The file name the GSV-Cities release gives the image described by a CSV row.

    Coordinates are written as Python prints the parsed float (as the authors' code does)."""
    return (
        f"{row['city_id']}_{int(row['place_id']) % 10**5:07d}_{int(row['year']):04d}_"
        f"{int(row['month']):02d}_{int(row['northdeg']):03d}_{float(row['lat'])!r}_"
        f"{float(row['lon'])!r}_{row['panoid']}.jpg"
    )


def _plain_name(name: str) -> bool:
    """A file or folder name, not a path: the dataframe may not point outside Images/."""
    if not isinstance(name, str) or name in ("", ".", ".."):
        return False
    return not any(sep in name for sep in ("/", "\\", "\0"))


def local_metres(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Degrees -> (east, north) metres on a plane tangent at the mean latitude."""
    lat0 = math.radians(float(np.mean(lat)))
    east = np.radians(lon - np.mean(lon)) * EARTH_RADIUS_M * math.cos(lat0)
    north = np.radians(lat - np.mean(lat)) * EARTH_RADIUS_M
    return np.stack([east, north], axis=1)


def read_city(csv_path: Path, images_root: Path) -> tuple[list[Path], list[int], np.ndarray]:
    """One city's images, per-city place ids and local positions."""
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise EdgeVPRError(f"{csv_path} is not a GSV-Cities dataframe: no {', '.join(missing)}")
        rows = list(reader)
    if not rows:
        raise EdgeVPRError(f"{csv_path} lists no images")
    paths, place_ids, lat, lon = [], [], [], []
    for line, row in enumerate(rows, start=2):
        try:
            name = image_name(row)
            lat.append(float(row["lat"]))
            lon.append(float(row["lon"]))
            place_ids.append(int(row["place_id"]))
        except (TypeError, ValueError):
            raise EdgeVPRError(
                f"{csv_path} line {line}: bad place_id/year/month/northdeg/lat/lon values"
            ) from None
        if not _plain_name(row["city_id"]) or not _plain_name(name):
            raise EdgeVPRError(
                f"{csv_path} line {line}: city_id/panoid would lead out of {images_root}"
            )
        path = images_root / row["city_id"] / name
        if not path.is_file():
            raise EdgeVPRError(f"{path} (listed in {csv_path} line {line}) does not exist")
        paths.append(path)
    return paths, place_ids, local_metres(np.array(lat), np.array(lon))


def read_gsv_cities(
    root: str | os.PathLike[str], cities: list[str] | None = None, min_images: int = 4
) -> PlaceSet:
    """GSV-Cities as a PlaceSet; places with fewer than ``min_images`` images are dropped
    (the authors keep places with at least 4)."""
    root = Path(root)
    if not is_gsv_cities(root):
        raise EdgeVPRError(f"{root} is not GSV-Cities (expected Dataframes/ and Images/ in it)")
    frames = sorted((root / "Dataframes").glob("*.csv"))
    if cities is not None:
        wanted = set(cities)
        unknown = wanted - {f.stem for f in frames}
        if unknown:
            raise EdgeVPRError(f"{root} has no dataframe for {', '.join(sorted(unknown))}")
        frames = [f for f in frames if f.stem in wanted]
    if not frames:
        raise EdgeVPRError(f"no city dataframes (*.csv) in {root / 'Dataframes'}")
    paths: list[Path] = []
    keys: list[int] = []
    positions = []
    for city_index, frame in enumerate(frames):
        city_paths, place_ids, utm = read_city(frame, root / "Images")
        paths += city_paths
        # City index in the high digits: place ids repeat across cities.
        keys += [city_index * 10**7 + p for p in place_ids]
        # Cities are far apart: offset each city's plane so no two cities overlap.
        positions.append(utm + np.array([city_index * 1e7, 0.0]))
    places = PlaceSet(tuple(paths), relabel(np.array(keys)), np.concatenate(positions), root.name)
    kept = places.drop_small_places(min_images)
    if len(kept) == 0:
        raise EdgeVPRError(f"no place in {root} has {min_images} or more images")
    return kept
