"""Maps larger than memory: a map split into square geo tiles, each a map file of its own,
of which only those around the current prior are loaded (least recently used out), so a
drone crosses a city with a bounded footprint.

A tiled map is a folder (``*.vprtiles``) with a manifest (``tiles.json``: the tile size, the
frame tiles are cut in, the model, and each tile's file, places and first place id) and one
version-2 map per tile. Ids stay unique across tiles: a tile's places are numbered from its
``first_id``. Every query needs a prior: it picks the tiles.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.errors import EdgeVPRError
from edgevpr.files import write_text_atomic
from edgevpr.runtime.checks import file_path, unit_rows, whole
from edgevpr.runtime.geo import GeoPrior, LocalProjection, check_prior
from edgevpr.runtime.placemap.core import PlaceMap
from edgevpr.runtime.placemap.parts import Neighbours
from edgevpr.runtime.placemap.search import in_frame

MANIFEST = "tiles.json"
FORMAT = "edgevpr.tiledmap"
VERSION = 1
SUFFIX = ".vprtiles"
DEFAULT_MAX_TILES = 9  # a 3 x 3 neighbourhood


@dataclass(frozen=True)
class Tile:
    key: str  # "ix_iy"
    ix: int
    iy: int
    places: int
    first_id: int
    file: str


class TiledMap:
    """The tiles of a map, loaded as priors need them.

    Example::

        city = TiledMap.load("city.vprtiles", max_tiles=9)
        found = city.query(descriptor, k=5, prior=GeoPrior(east, north, 300.0))[0]
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], max_tiles: int) -> None:
        self.folder = folder
        self.max_tiles = whole(max_tiles, "max_tiles", 1, 10_000)
        where = f"tiled map {folder}"
        try:
            self.tile_size_m = float(manifest["tile_size_m"])
            self.fingerprint = str(manifest["fingerprint"])
            self.descriptor_dim = whole(manifest["descriptor_dim"], "descriptor_dim", 1)
            frame = manifest["frame"]
            self._frame = (LocalProjection(bool(frame["planar"]), float(frame["lat0"]),
                                           float(frame["lon0"])),
                           frozenset(frame["utm_zones"]))  # fmt: skip
            self.tiles = {t["key"]: Tile(**t) for t in manifest["tiles"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgeVPRError(f"{where} has a broken manifest ({exc})") from None
        if not self.tile_size_m > 0 or manifest.get("format") != FORMAT:
            raise EdgeVPRError(f"{where} has a broken manifest")
        for tile in self.tiles.values():
            if Path(tile.file).name != tile.file:  # tiles live in the folder, nowhere else
                raise EdgeVPRError(f"{where} names a tile outside its folder: {tile.file}")
        self._loaded: OrderedDict[str, PlaceMap] = OrderedDict()
        self._ef: int | None = None
        self.source = folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], max_tiles: int = DEFAULT_MAX_TILES) -> TiledMap:
        """Read the manifest (tiles load on demand)."""
        folder = Path(folder)
        manifest = folder / MANIFEST
        if not manifest.is_file():
            raise EdgeVPRError(f"{folder} is not a tiled map (no {MANIFEST})")
        try:
            data = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EdgeVPRError(f"tiled map {folder} has an unreadable manifest ({exc})") from None
        if not isinstance(data, dict):
            raise EdgeVPRError(f"tiled map {folder} has a broken manifest")
        return cls(folder, data, max_tiles)

    def __len__(self) -> int:
        return sum(t.places for t in self.tiles.values())

    def coordinate_kind(self) -> str:
        """'east/north' or 'lat/lon': what a prior is given in."""
        return "east/north" if self._frame[0].planar else "lat/lon"

    def set_ef(self, ef: int) -> None:
        """Search breadth of every tile (loaded now or later)."""
        self._ef = whole(ef, "ef", 1, 100_000)
        for tile in self._loaded.values():
            tile.set_ef(self._ef)

    def loaded(self) -> list[str]:
        """Keys of the tiles in memory, least recently used first."""
        return list(self._loaded)

    def _tile(self, key: str) -> PlaceMap:
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        tile = PlaceMap.load(self.folder / self.tiles[key].file)
        if self._ef is not None:
            tile.set_ef(self._ef)
        if tile.fingerprint != self.fingerprint:
            raise EdgeVPRError(f"tile {key} of {self.folder} was made by another model")
        self._loaded[key] = tile
        while len(self._loaded) > self.max_tiles:
            self._loaded.popitem(last=False)
        return tile

    def tiles_near(self, prior: GeoPrior) -> list[str]:
        """Keys of the tiles the prior's circle overlaps (nearest first)."""
        point = in_frame(prior, self._frame)
        if point is None:
            raise EdgeVPRError("this prior cannot be placed in the tiled map's frame")
        x, y = point
        size, reach = self.tile_size_m, prior.radius_m
        keys = []
        for ix in range(math.floor((x - reach) / size), math.floor((x + reach) / size) + 1):
            for iy in range(math.floor((y - reach) / size), math.floor((y + reach) / size) + 1):
                near_x = min(max(x, ix * size), (ix + 1) * size)
                near_y = min(max(y, iy * size), (iy + 1) * size)
                gap = math.hypot(x - near_x, y - near_y)
                if gap <= reach and f"{ix}_{iy}" in self.tiles:
                    keys.append((gap, f"{ix}_{iy}"))
        return [key for _, key in sorted(keys)]

    def query(self, descriptors: np.ndarray, k: int = 5, prior: GeoPrior | None = None
              ) -> list[Neighbours]:  # fmt: skip
        """Top-k places within the prior, over the tiles it touches (their ids global)."""
        queries = unit_rows(descriptors, self.descriptor_dim, "query")
        k = whole(k, "k", 1)
        prior = check_prior(prior)
        if prior is None:
            raise EdgeVPRError("a tiled map answers only queries with a prior (it picks the tiles)")
        keys = self.tiles_near(prior)
        if len(keys) > self.max_tiles:
            raise EdgeVPRError(
                f"this prior touches {len(keys)} tiles, more than max_tiles={self.max_tiles}"
            )
        per_tile = [(self.tiles[key].first_id, self._tile(key).query(queries, k, prior))
                    for key in keys]  # fmt: skip
        return [_merged([(first, found[i]) for first, found in per_tile], k)
                for i in range(len(queries))]  # fmt: skip


def _merged(parts: list[tuple[int, Neighbours]], k: int) -> Neighbours:
    ids = np.concatenate([p.ids + first for first, p in parts]) if parts else np.zeros(0, np.int64)
    if not len(ids):
        return Neighbours(ids, np.zeros(0, np.float32), [], np.zeros(0))
    scores = np.concatenate([p.scores for _, p in parts])
    records = [r for _, p in parts for r in p.records]
    distances = np.concatenate([p.distances_m for _, p in parts])
    order = np.lexsort((ids, -scores))[:k]
    return Neighbours(ids[order], scores[order], [records[i] for i in order], distances[order])


def write_tiles(placemap: PlaceMap, folder: str | os.PathLike[str], tile_size_m: float) -> dict:
    """Split ``placemap`` into tiles of ``tile_size_m`` metres in ``folder`` (replaced as a
    whole: a new folder is written beside it and swapped in). Every place needs a position.
    Returns the manifest."""
    folder = file_path(folder, "tiled map")
    if not tile_size_m > 0:
        raise EdgeVPRError(f"the tile size must be positive, not {tile_size_m}")
    if folder.exists() and not (folder / MANIFEST).is_file():
        raise EdgeVPRError(f"refusing to overwrite {folder}: it is not a tiled map")
    ids, xy, frame = placemap.positions()
    if len(ids) and not np.isfinite(xy).all():
        missing = int((~np.isfinite(xy).all(axis=1)).sum())
        raise EdgeVPRError(f"{missing} places have no position: a tiled map needs them all")
    cells = np.floor(xy / tile_size_m).astype(np.int64)
    work = folder.with_name(folder.name + ".writing")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tiles, first_id = [], 0
    for cell in np.unique(cells, axis=0):
        members = ids[(cells == cell).all(axis=1)]
        key = f"{int(cell[0])}_{int(cell[1])}"
        placemap.subset(members).save(work / f"tile_{key}.vprmap")
        tiles.append({"key": key, "ix": int(cell[0]), "iy": int(cell[1]),
                      "places": len(members), "first_id": first_id,
                      "file": f"tile_{key}.vprmap"})  # fmt: skip
        first_id += len(members)
    projection, zones = frame
    manifest = {"format": FORMAT, "version": VERSION, "tile_size_m": float(tile_size_m),
                "fingerprint": placemap.fingerprint, "descriptor_dim": placemap.descriptor_dim,
                "frame": {"planar": projection.planar, "lat0": projection.lat0,
                          "lon0": projection.lon0, "utm_zones": sorted(zones)},
                "places": len(ids), "tiles": tiles}  # fmt: skip
    write_text_atomic(work / MANIFEST, json.dumps(manifest, indent=1))
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    work.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def is_tiled_map(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / MANIFEST).is_file()
