"""Tiled maps and calibrations trust nothing they read: a forged manifest (repeated keys,
one file under two keys, overlapping or fractional ids, wrong types, symlinked tiles, a
million tiles) is one line; a prior of any size touches only the tiles the map has; a tiled
build never removes folders it did not make; a calibration out of range is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.geo import GeoPrior
from edgevpr.runtime.localize.calibration import Calibration
from edgevpr.runtime.placemap import PlaceMap, PlaceRecord
from edgevpr.runtime.placemap.tiles import TiledMap, write_tiles

DIM = 16


@pytest.fixture
def tiled(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((200, DIM)).astype(np.float32)
    placemap = PlaceMap.create(DIM, "fp", index="hnswlib")
    xy = rng.uniform(0, 3000, (200, 2))
    placemap.add(vectors, [PlaceRecord(east=float(x), north=float(y)) for x, y in xy])
    write_tiles(placemap, tmp_path / "city.vprtiles", 1000.0)
    return tmp_path / "city.vprtiles"


def edit_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / "tiles.json").read_text())
    edit(manifest)
    (folder / "tiles.json").write_text(json.dumps(manifest))


def refused(folder: Path, match: str) -> None:
    with pytest.raises(EdgeVPRError, match=match) as caught:
        city = TiledMap.load(folder, max_tiles=100)
        city.query(np.ones(DIM, np.float32), k=3, prior=GeoPrior(1500.0, 1500.0, 5000.0))
    assert "\n" not in str(caught.value)


def repeat_key(m: dict) -> None:
    m["tiles"].append(dict(m["tiles"][0]))


def one_file_two_keys(m: dict) -> None:
    m["tiles"][1]["file"] = m["tiles"][0]["file"]


def overlapping_ids(m: dict) -> None:
    m["tiles"][1]["first_id"] = m["tiles"][0]["first_id"] + 1


def fractional_id(m: dict) -> None:
    m["tiles"][1]["first_id"] = 7.5


def places_as_text(m: dict) -> None:
    m["tiles"][0]["places"] = "many"


def id_as_text(m: dict) -> None:
    m["tiles"][0]["first_id"] = "7"


def tiny_tiles(m: dict) -> None:
    m["tile_size_m"] = 1e-9


def too_many_tiles(m: dict) -> None:
    m["tiles"] = [{"key": f"{i}_0", "ix": i, "iy": 0, "places": 0, "first_id": 0,
                   "file": f"tile_{i}_0.vprmap"} for i in range(300_000)]  # fmt: skip


@pytest.mark.parametrize(("edit", "match"), [
    (repeat_key, "repeated"), (one_file_two_keys, "names the file"),
    (overlapping_ids, "overlap"), (fractional_id, "first_id must be a whole number"),
    (places_as_text, "places must be a whole number"), (id_as_text, "first_id must be"),
    (tiny_tiles, "tile_size_m must be between"), (too_many_tiles, "at most 250,000"),
])  # fmt: skip
def test_a_forged_manifest_is_one_line(tiled: Path, edit, match: str) -> None:
    edit_manifest(tiled, edit)
    refused(tiled, match)


def test_a_symlinked_tile_is_not_followed(tiled: Path, tmp_path: Path) -> None:
    tile = sorted(tiled.glob("tile_*.vprmap"))[0]
    elsewhere = tmp_path / "elsewhere.vprmap"
    tile.rename(elsewhere)
    tile.symlink_to(elsewhere)
    refused(tiled, "symbolic link")


def test_a_tile_holding_other_places_than_its_entry_is_refused(tiled: Path) -> None:
    edit_manifest(tiled, lambda m: m["tiles"][0].update(places=m["tiles"][0]["places"] + 1))
    refused(tiled, "other places than its manifest says|overlap")


@pytest.mark.parametrize("radius", [1.0, 800.0, 3e6, 1e9, 1e15])
def test_a_prior_of_any_size_finds_exactly_the_tiles_it_touches(
    tiled: Path, radius: float
) -> None:
    """The cells of a huge prior's square are never walked one by one (1e9 m hung)."""
    city = TiledMap.load(tiled)
    x, y = 1234.0, 2345.0
    found = city.tiles_near(GeoPrior(x, y, radius))
    expected = []
    for key, tile in city.tiles.items():
        near = np.clip([x, y], [tile.ix * 1000.0, tile.iy * 1000.0],
                       [(tile.ix + 1) * 1000.0, (tile.iy + 1) * 1000.0])  # fmt: skip
        gap = float(np.hypot(x - near[0], y - near[1]))
        if gap <= radius:
            expected.append((gap, key))
    assert sorted(found) == sorted(k for _, k in expected)
    gaps = dict((k, g) for g, k in expected)
    assert [gaps[k] for k in found] == sorted(gaps[k] for k in found)  # nearest first


def test_a_tiled_build_leaves_folders_it_did_not_make(tmp_path: Path, tiled: Path) -> None:
    """``<out>.old`` and ``<out>.writing`` are the user's names: never removed."""
    for name in ("city.vprtiles.old", "city.vprtiles.writing"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mine.txt").write_text("keep")
    rng = np.random.default_rng(3)
    placemap = PlaceMap.create(DIM, "fp", index="hnswlib")
    placemap.add(rng.standard_normal((50, DIM)).astype(np.float32),
                 [PlaceRecord(east=float(i * 10), north=0.0) for i in range(50)])  # fmt: skip
    write_tiles(placemap, tiled, 1000.0)
    assert len(TiledMap.load(tiled)) == 50
    for name in ("city.vprtiles.old", "city.vprtiles.writing"):
        assert (tmp_path / name / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "city.vprtiles", "city.vprtiles.old", "city.vprtiles.writing"]  # fmt: skip


# ------------------------------------------------------------------ calibration
def calibration(**changes: object) -> dict:
    data = {"format": "edgevpr.localizer-calibration", "format_version": 1,
            "fingerprint": "fp", "mode": "route", "length": 10, "threshold": 0.5,
            "precision": 0.99, "curve": [[0.1, 0.2], [0.5, 0.9], [1.0, 1.0]],
            "source": {}}  # fmt: skip
    data.update(changes)
    return data


@pytest.mark.parametrize("changes", [
    {"threshold": -1e300}, {"threshold": float("nan")}, {"threshold": 1e9},
    {"curve": [[0.1, 5.0]]}, {"curve": [[0.1, -3.0]]}, {"curve": [[float("nan"), 0.5]]},
    {"curve": [[0.5, 0.9], [0.1, 0.2]]}, {"curve": [[0.1, 0.9], [0.5, 0.2]]}, {"curve": []},
    {"precision": 1.5}, {"mode": "tunnel"}, {"length": 0}, {"length": 2.5},
    {"fingerprint": 7},
], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items())[:40])  # fmt: skip
def test_a_calibration_out_of_range_is_refused(tmp_path: Path, changes: dict) -> None:
    path = tmp_path / "m.vprmap.localizer.json"
    path.write_text(json.dumps(calibration(**changes)))
    with pytest.raises(EdgeVPRError, match="is broken") as caught:
        Calibration.load(path)
    assert "\n" not in str(caught.value)


def test_a_calibration_in_range_gives_confidences_in_range(tmp_path: Path) -> None:
    path = tmp_path / "m.vprmap.localizer.json"
    path.write_text(json.dumps(calibration()))
    loaded = Calibration.load(path)
    for margin in (-5.0, 0.0, 0.3, 0.7, 2.0, float("nan"), float("inf")):
        assert 0.0 <= loaded.confidence(margin) <= 1.0


def test_verify_checks_every_descriptor_of_each_tile_it_loads(tiled: Path) -> None:
    from edgevpr.runtime.placemap.fileformat.container import MapFile

    tile = tiled / TiledMap.load(tiled).tiles_near(GeoPrior(500.0, 500.0, 1.0))[0].join(
        ["tile_", ".vprmap"])  # fmt: skip
    entry = next(e for e in MapFile(tile).entries if e.name == "vectors")
    with open(tile, "r+b") as fh:
        fh.seek(entry.offset + entry.length - 3)
        fh.write(b"\x7f")
    prior = GeoPrior(500.0, 500.0, 400.0)
    with pytest.raises(EdgeVPRError, match="fails its check"):
        TiledMap.load(tiled, verify=True).query(np.ones(DIM, np.float32), k=3, prior=prior)
