"""City-scale maps: every index kind in the table (and its storages), compressed by projection,
re-ranked exactly; the version-2 file (memory-mapped, verified, compacted); version-1 files;
geo priors at any radius; tiles; resumable and Ray builds."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.geo import GeoPrior
from edgevpr.runtime.placemap import PlaceMap, PlaceRecord
from edgevpr.runtime.placemap.fileformat import container
from edgevpr.runtime.placemap.geogrid import GeoGrid
from edgevpr.runtime.placemap.kinds import INDEX_KINDS
from edgevpr.runtime.placemap.projection import PCA, WHITENED, Projection
from edgevpr.runtime.placemap.tiles import TiledMap, write_tiles

DIM = 48
PLACES = 2500
SIDE_M = 4000.0


def installed(kind: str) -> bool:
    needs = INDEX_KINDS[kind].needs
    return needs is None or importlib.util.find_spec(needs) is not None


SPECS = [
    pytest.param(kind.name, storage, pca, id=f"{kind.name}-{storage}-{'pca' if pca else 'full'}",
                 marks=pytest.mark.skipif(not installed(kind.name), reason=f"{kind.needs} absent"))
    for kind in INDEX_KINDS.values()
    for storage in kind.storages
    for pca in (None, 24)
]  # fmt: skip


def clustered(n: int, seed: int, clusters: int = 60) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM))
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    database = clustered(PLACES, 1)
    # queries: noisy copies of map places, so each has one clear answer
    picks = rng.integers(0, PLACES, 200)
    queries = database[picks] + 0.05 * rng.standard_normal((200, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return {"database": database, "queries": queries.astype(np.float32),
            "xy": rng.uniform(0, SIDE_M, (PLACES, 2))}  # fmt: skip


def records(xy: np.ndarray) -> list[PlaceRecord]:
    return [PlaceRecord(path=f"p{i}.jpg", east=float(x), north=float(y), timestamp=i)
            for i, (x, y) in enumerate(xy)]  # fmt: skip


def built(data: dict, kind: str, storage: str | None, pca: int | None, store: str = "f32"):
    projection = Projection.fit(data["database"], pca) if pca else None
    placemap = PlaceMap.create(DIM, "fp", index=kind, storage=storage, projection=projection,
                               store=store, capacity=PLACES)  # fmt: skip
    placemap.add(data["database"], records(data["xy"]))
    return placemap


def exact(data: dict, k: int, within: np.ndarray | None = None) -> np.ndarray:
    sims = data["queries"] @ data["database"].T
    if within is not None:
        sims = np.where(within, sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


# ------------------------------------------------------------------ every kind
@pytest.mark.parametrize(("kind", "storage", "pca"), SPECS)
def test_every_index_kind_finds_the_exact_answer_and_round_trips(
    data: dict, kind: str, storage: str, pca: int | None, tmp_path: Path
) -> None:
    placemap = built(data, kind, storage, pca)
    ids, scores = placemap.search(data["queries"], k=5)
    truth = exact(data, 5)
    # re-ranked from float descriptors; product quantisation trained on 2500 vectors (6-bit
    # codes) proposes the worst candidates
    assert np.mean(ids[:, 0] == truth[:, 0]) >= (0.95 if storage == "pq" else 0.97)
    top = np.take_along_axis(data["queries"] @ data["database"].T, ids, axis=1)
    assert np.allclose(scores, top, atol=1e-5)  # the scores are the exact cosines
    placemap.save(tmp_path / "m.vprmap")
    loaded = PlaceMap.load(tmp_path / "m.vprmap")
    assert (loaded.index_kind, loaded.storage, len(loaded)) == (kind, storage, PLACES)
    assert np.array_equal(loaded.search(data["queries"], k=5)[0], ids)
    assert loaded.record(3) == placemap.record(3)


@pytest.mark.parametrize(("kind", "storage", "pca"), SPECS)
def test_a_prior_of_any_radius_gives_the_exact_answer_within_it(
    data: dict, kind: str, storage: str, pca: int | None
) -> None:
    """Few places in the circle: searched exactly, so the very answer; many: the index's
    (native filter or over-fetch), so its own accuracy, never a place outside."""
    placemap = built(data, kind, storage, pca)
    rng = np.random.default_rng(3)
    for radius in (60.0, 400.0, 1500.0, 6000.0):  # a few places .. the whole map
        right = []
        for q in rng.integers(0, len(data["queries"]), 20):
            centre = rng.uniform(0, SIDE_M, 2)
            found = placemap.query(data["queries"][q], k=3, prior=GeoPrior(*centre, radius))[0]
            inside = np.linalg.norm(data["xy"] - centre, axis=1) <= radius
            sims = np.where(inside, data["queries"][q] @ data["database"].T, -np.inf)
            truth = np.argsort(-sims, kind="stable")[: min(3, int(inside.sum()))]
            assert inside[found.ids].all() and (found.distances_m <= radius + 1e-6).all()
            assert len(found) == len(truth)
            if radius <= 400:
                assert found.ids.tolist() == truth.tolist(), (radius, q)
            right.append(len(truth) == 0 or found.ids[0] == truth[0])
        assert np.mean(right) >= 0.9, radius


def test_removed_places_never_come_back_and_compaction_shrinks_the_file(
    data: dict, tmp_path: Path, cli
) -> None:
    placemap = built(data, "hnswlib", None, None)
    placemap.save(tmp_path / "full.vprmap")
    gone = np.arange(0, PLACES, 2)
    placemap.remove(gone)
    placemap.save(tmp_path / "half.vprmap")  # over a quarter removed: the index is rebuilt
    loaded = PlaceMap.load(tmp_path / "half.vprmap")
    ids, _ = loaded.search(data["queries"], k=10)
    assert not np.isin(ids, gone).any() and len(loaded) == PLACES - len(gone)
    size = {name: (tmp_path / f"{name}.vprmap").stat().st_size for name in ("full", "half")}
    assert size["half"] < 0.6 * size["full"]
    assert cli("index", "compact", tmp_path / "half.vprmap").code == 0
    assert len(PlaceMap.load(tmp_path / "half.vprmap")) == len(loaded)


# ------------------------------------------------------------------ compression
def test_pca_keeps_inner_products_and_whitening_renormalises(data: dict) -> None:
    projection = Projection.fit(data["database"], 24)
    assert projection.kind == PCA and projection.basis.shape == (24, DIM)
    assert np.allclose(projection.basis @ projection.basis.T, np.eye(24), atol=1e-4)
    a, b = projection.apply(data["queries"]), projection.apply(data["database"])
    error = np.abs(a @ b.T - data["queries"] @ data["database"].T)
    assert np.median(error) < 0.05  # the dropped directions held little
    whitened = Projection.fit(data["database"], 16, WHITENED)
    assert np.allclose(np.linalg.norm(whitened.apply(data["queries"]), axis=1), 1.0, atol=1e-5)
    with pytest.raises(EdgeVPRError, match="projected dimensions"):
        Projection.fit(data["database"], DIM + 1)


def test_a_smaller_store_and_no_store(data: dict, tmp_path: Path) -> None:
    half = built(data, "hnswlib", None, 24, store="f16")
    half.save(tmp_path / "f16.vprmap")
    assert np.mean(half.search(data["queries"], 1)[0][:, 0] == exact(data, 1)[:, 0]) >= 0.97
    assert half.descriptors([5]).dtype == np.float32
    bare = built(data, "hnswlib", None, None, store="none")
    bare.save(tmp_path / "none.vprmap")
    assert (tmp_path / "none.vprmap").stat().st_size < (tmp_path / "f16.vprmap").stat().st_size
    assert np.array_equal(bare.descriptors([5])[0], data["database"][5])  # from the index
    with pytest.raises(EdgeVPRError, match="descriptors stored"):
        PlaceMap.create(DIM, "fp", index="faiss-ivf", store="none")


# ------------------------------------------------------------------ the file
def test_version_1_maps_are_still_read(data: dict, tmp_path: Path) -> None:
    import hnswlib

    from edgevpr.runtime.placemap.fileformat import version1

    index = hnswlib.Index(space="ip", dim=DIM)
    index.init_index(max_elements=PLACES, M=16, ef_construction=200)
    index.add_items(data["database"], np.arange(PLACES))
    index.save_index(str(tmp_path / "index.bin"))
    metadata = {
        "format": version1.FORMAT_NAME, "format_version": 1, "created": "2025-01-01T00:00:00Z",
        "fingerprint": "fp", "descriptor_dim": DIM, "space": "ip", "next_id": PLACES,
        "hnsw": {"M": 16, "ef_construction": 200, "ef": 128}, "model": {}, "sources": [],
        "records": [{**r.to_dict(), "id": i} for i, r in enumerate(records(data["xy"]))],
    }  # fmt: skip
    # version 1 as edgevpr 0.1 wrote it: header, JSON metadata, hnswlib's own index file
    body = json.dumps(metadata, separators=(",", ":"), sort_keys=True).encode()
    index_bytes = (tmp_path / "index.bin").read_bytes()
    digest = hashlib.sha256(body + index_bytes).digest()
    (tmp_path / "old.vprmap").write_bytes(
        version1.HEADER.pack(version1.MAGIC, 1, len(body), len(index_bytes), digest)
        + body + index_bytes)  # fmt: skip
    old = PlaceMap.load(tmp_path / "old.vprmap")
    assert container.read_version(tmp_path / "old.vprmap") == 1 and len(old) == PLACES
    assert np.mean(old.search(data["queries"], 1)[0][:, 0] == exact(data, 1)[:, 0]) >= 0.97
    assert old.record(7).timestamp == 7
    assert np.allclose(old.descriptors([7])[0], data["database"][7])
    old.save(tmp_path / "new.vprmap")
    assert container.read_version(tmp_path / "new.vprmap") == 2


def test_every_record_field_round_trips(tmp_path: Path) -> None:
    given = [
        PlaceRecord(path="a/é.jpg", east=1.5, north=2.5, utm_zone="32V", heading=359.5,
                    timestamp="2024-05-01T10:00:00Z"),
        PlaceRecord(lat=-33.9, lon=151.2, timestamp=1.25),
        PlaceRecord(),
        PlaceRecord(path="b.png", east=3.0, north=4.0, utm_zone="33U", timestamp=12),
    ]  # fmt: skip
    placemap = PlaceMap.create(DIM, "fp")
    placemap.add(clustered(len(given), 3), given, source={"file": "m.onnx"})
    placemap.save(tmp_path / "m.vprmap")
    loaded = PlaceMap.load(tmp_path / "m.vprmap")
    assert [r.to_dict() for r in loaded.records()] == [r.to_dict() for r in placemap.records()]
    assert loaded.sources()[0]["places"] == len(given)


# ------------------------------------------------------------------ geo grid and tiles
def test_grid_candidates_hold_every_place_in_the_circle(data: dict) -> None:
    grid = GeoGrid(np.arange(PLACES), data["xy"])
    rng = np.random.default_rng(0)
    for radius in (5.0, 120.0, 900.0, 5000.0):
        x, y = rng.uniform(0, SIDE_M, 2)
        inside = np.flatnonzero(np.hypot(*(data["xy"] - (x, y)).T) <= radius)
        assert set(inside) <= set(grid.within(x, y, radius)[0].tolist())
        assert grid.count(x, y, radius) >= len(inside)


def test_tiled_map_answers_as_the_whole_map_and_keeps_few_tiles(
    data: dict, tmp_path: Path
) -> None:
    whole = built(data, "hnswlib", None, None)
    manifest = write_tiles(whole, tmp_path / "city.vprtiles", 1000.0)
    assert len(manifest["tiles"]) == 16 and sum(t["places"] for t in manifest["tiles"]) == PLACES
    tiled = TiledMap.load(tmp_path / "city.vprtiles", max_tiles=4)
    rng = np.random.default_rng(1)
    for q in range(20):
        centre = rng.uniform(0, SIDE_M, 2)
        prior = GeoPrior(*centre, 450.0)
        mine = tiled.query(data["queries"][q], k=3, prior=prior)[0]
        theirs = whole.query(data["queries"][q], k=3, prior=prior)[0]
        assert np.allclose(mine.scores, theirs.scores, atol=1e-5)
        assert [r.path for r in mine.records] == [r.path for r in theirs.records]
        assert len(tiled.loaded()) <= 4
    with pytest.raises(EdgeVPRError, match="prior"):
        tiled.query(data["queries"][0], k=3)
    broken = json.loads((tmp_path / "city.vprtiles/tiles.json").read_text())
    broken["tiles"][0]["file"] = "../elsewhere.vprmap"
    (tmp_path / "city.vprtiles/tiles.json").write_text(json.dumps(broken))
    with pytest.raises(EdgeVPRError, match="names the file"):
        TiledMap.load(tmp_path / "city.vprtiles")
