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
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.core.checks import file_path, unit_rows, whole
from edgevpr.core.errors import EdgeVPRError, first_line
from edgevpr.core.files import replace_folder, write_text_atomic
from edgevpr.core.geo import GeoPrior, LocalProjection, check_prior, is_utm_zone
from edgevpr.runtime.placemap.core import PlaceMap
from edgevpr.runtime.placemap.parts import Neighbours
from edgevpr.runtime.placemap.search import in_frame

MANIFEST = "tiles.json"
FORMAT = "edgevpr.tiledmap"
VERSION = 1
SUFFIX = ".vprtiles"
DEFAULT_MAX_TILES = 9  # a 3 x 3 neighbourhood
# A city of 100 km x 100 km in 250 m tiles is 160k tiles; the caps keep a forged manifest
# from costing minutes and gigabytes (1e6 tiles took 8.8 s and 815 MB to read).
MAX_MANIFEST_TILES = 250_000
MAX_MANIFEST_BYTES = 64 << 20
MIN_TILE_M, MAX_TILE_M = 1.0, 1e7
MAX_CELL = 1 << 40  # tile indices: a tile of 1 m at 1e12 m is beyond any map
TILE_FIELDS = ("key", "ix", "iy", "places", "first_id", "file")


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

    def __init__(
        self, folder: Path, manifest: dict[str, Any], max_tiles: int, verify: bool = False
    ) -> None:
        self.folder = folder
        self._verify = verify
        self.max_tiles = whole(max_tiles, "max_tiles", 1, 10_000)
        where = f"tiled map {folder}"
        try:
            if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
                raise ValueError("not a version-1 tiled map manifest")
            self.tile_size_m = _number(manifest["tile_size_m"], "tile_size_m", MIN_TILE_M,
                                       MAX_TILE_M)  # fmt: skip
            self.fingerprint = manifest["fingerprint"]
            if not isinstance(self.fingerprint, str) or not self.fingerprint:
                raise ValueError("fingerprint is not a string")
            self.descriptor_dim = whole(manifest["descriptor_dim"], "descriptor_dim", 1, 65536)
            self._frame = _frame(manifest["frame"])
            self.tiles = _tiles(manifest["tiles"])
        except (KeyError, TypeError, ValueError, EdgeVPRError) as exc:
            raise EdgeVPRError(f"{where} has a broken manifest ({first_line(exc)})") from None
        self._cells = np.array([(t.ix, t.iy) for t in self.tiles.values()], np.int64).reshape(-1, 2)
        self._keys = list(self.tiles)
        self._loaded: OrderedDict[str, PlaceMap] = OrderedDict()
        self._ef: int | None = None
        self.source = folder

    @classmethod
    def load(
        cls, folder: str | os.PathLike[str], max_tiles: int = DEFAULT_MAX_TILES,
        verify: bool = False,
    ) -> TiledMap:  # fmt: skip
        """Read the manifest, every entry checked (tiles load on demand; ``verify``: each
        with every stored descriptor checked, see ``PlaceMap.load``)."""
        folder = file_path(folder, "tiled map")
        manifest = folder / MANIFEST
        if not manifest.is_file():
            raise EdgeVPRError(f"{folder} is not a tiled map (no {MANIFEST})")
        try:
            if manifest.stat().st_size > MAX_MANIFEST_BYTES:
                raise EdgeVPRError(f"tiled map {folder} has a manifest over "
                                   f"{MAX_MANIFEST_BYTES >> 20} MB")  # fmt: skip
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise EdgeVPRError(
                f"tiled map {folder} has an unreadable manifest ({first_line(exc)})"
            ) from None
        if not isinstance(data, dict):
            raise EdgeVPRError(f"tiled map {folder} has a broken manifest")
        return cls(folder, data, max_tiles, verify)

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
        entry = self.tiles[key]
        path = self.folder / entry.file
        if path.is_symlink():  # a tile is a file of the folder, never one elsewhere
            raise EdgeVPRError(f"tile {key} of {self.folder} is a symbolic link; not followed")
        tile = PlaceMap.load(path, verify=self._verify)
        if self._ef is not None:
            tile.set_ef(self._ef)
        if tile.fingerprint != self.fingerprint:
            raise EdgeVPRError(f"tile {key} of {self.folder} was made by another model")
        ids = tile.ids()
        if len(ids) != entry.places or (len(ids) and ids[-1] >= entry.places):
            raise EdgeVPRError(f"tile {key} of {self.folder} holds other places than its "
                               "manifest says")  # fmt: skip
        self._loaded[key] = tile
        while len(self._loaded) > self.max_tiles:
            self._loaded.popitem(last=False)
        return tile

    def tiles_near(self, prior: GeoPrior) -> list[str]:
        """Keys of the tiles the prior's circle overlaps (nearest first). The work is the
        smaller of the cells the circle's square covers and the tiles the map has: a prior
        far larger than a tile walks the manifest, never every empty cell."""
        point = in_frame(prior, self._frame)
        if point is None:
            raise EdgeVPRError("this prior cannot be placed in the tiled map's frame")
        x, y = point
        size, reach = self.tile_size_m, prior.radius_m
        low = (math.floor((x - reach) / size), math.floor((y - reach) / size))
        high = (math.floor((x + reach) / size), math.floor((y + reach) / size))
        cells = (high[0] - low[0] + 1) * (high[1] - low[1] + 1)
        if cells <= len(self._keys):
            keys = [f"{ix}_{iy}" for ix in range(low[0], high[0] + 1)
                    for iy in range(low[1], high[1] + 1)]  # fmt: skip
            cell = np.array([[int(k.split("_")[0]), int(k.split("_")[1])] for k in keys
                             if k in self.tiles], np.int64).reshape(-1, 2)  # fmt: skip
        else:
            cell = self._cells
        near = np.clip(np.array([x, y]), cell * size, (cell + 1) * size)
        gap = np.hypot(x - near[:, 0], y - near[:, 1])
        order = np.lexsort((cell[:, 1], cell[:, 0], gap))
        return [f"{cell[i, 0]}_{cell[i, 1]}" for i in order if gap[i] <= reach]

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
    whole: a new folder is written beside it under a name of its own and swapped in; the
    previous tiled map, and only it, is then removed). Every place needs a position.
    Returns the manifest."""
    folder = file_path(folder, "tiled map")
    tile_size_m = _number(tile_size_m, "the tile size", MIN_TILE_M, MAX_TILE_M)
    if folder.exists() and not is_tiled_map(folder):
        raise EdgeVPRError(f"refusing to overwrite {folder}: it is not a tiled map")
    ids, xy, frame = placemap.positions()
    if len(ids) and not np.isfinite(xy).all():
        missing = int((~np.isfinite(xy).all(axis=1)).sum())
        raise EdgeVPRError(f"{missing} places have no position: a tiled map needs them all")
    cells = np.floor(xy / tile_size_m).astype(np.int64)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".writing", dir=folder.parent))
    try:
        manifest = _write_tile_files(placemap, work, ids, cells, tile_size_m, frame)
        replace_folder(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _write_tile_files(placemap: PlaceMap, work: Path, ids: np.ndarray, cells: np.ndarray,
                      tile_size_m: float, frame: Any) -> dict:  # fmt: skip
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
    return manifest


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EdgeVPRError(f"{name} must be a number, not {type(value).__name__}")
    if not low <= float(value) <= high:
        raise EdgeVPRError(f"{name} must be between {low:g} and {high:g}, not {value!r}")
    return float(value)


def _frame(frame: Any) -> tuple[LocalProjection, frozenset]:
    if not isinstance(frame, dict) or not isinstance(frame["planar"], bool):
        raise ValueError("frame is malformed")
    zones = frame["utm_zones"]
    if not isinstance(zones, list) or not all(isinstance(z, str) and is_utm_zone(z)
                                             for z in zones):  # fmt: skip
        raise ValueError("frame's UTM zones are malformed")
    lat0, lon0 = _number(frame["lat0"], "lat0", -90, 90), _number(frame["lon0"], "lon0", -180, 180)
    return LocalProjection(frame["planar"], lat0, lon0), frozenset(zones)


def _tiles(items: Any) -> dict[str, Tile]:
    """The manifest's tiles, each entry checked: one key per cell, one file per tile, in the
    folder, and id ranges that do not overlap."""
    if not isinstance(items, list) or len(items) > MAX_MANIFEST_TILES:
        raise ValueError(f"tiles must be a list of at most {MAX_MANIFEST_TILES:,} entries")
    tiles: dict[str, Tile] = {}
    for item in items:
        if not isinstance(item, dict) or sorted(item) != sorted(TILE_FIELDS):
            raise ValueError(f"a tile entry must have exactly {', '.join(TILE_FIELDS)}")
        tile = Tile(key=item["key"], ix=whole(item["ix"], "ix", -MAX_CELL, MAX_CELL),
                    iy=whole(item["iy"], "iy", -MAX_CELL, MAX_CELL),
                    places=whole(item["places"], "places", 0, 2**40),
                    first_id=whole(item["first_id"], "first_id", 0, 2**50),
                    file=item["file"])  # fmt: skip
        if tile.key != f"{tile.ix}_{tile.iy}" or tile.key in tiles:
            raise ValueError(f"tile key {tile.key!r} is repeated or not its cell")
        if not isinstance(tile.file, str) or tile.file != f"tile_{tile.key}.vprmap":
            raise ValueError(f"tile {tile.key} names the file {tile.file!r}")
        tiles[tile.key] = tile
    spans = sorted((t.first_id, t.first_id + t.places) for t in tiles.values())
    if any(end > start for (_, end), (start, _) in zip(spans, spans[1:], strict=False)):
        raise ValueError("tiles' id ranges overlap")
    return tiles


def is_tiled_map(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / MANIFEST).is_file()
