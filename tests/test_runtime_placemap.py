"""Place map: growth, removal, persistence and its failure modes, concurrency, geo prior.

Descriptors here are synthetic but structured (noisy copies of cluster centres): on uniform
random vectors HNSW has no neighbourhood structure to exploit (its recall is near zero).
"""

from __future__ import annotations

import hashlib
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.geo import GeoPrior, latlon_to_utm
from edgevpr.runtime.placemap import PlaceMap, PlaceRecord, search
from edgevpr.runtime.placemap.fileformat import container
from edgevpr.runtime.placemap.kinds import INDEX_KINDS

DIM = 32


def clustered(n: int, seed: int = 0, clusters: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM))
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def line_records(n: int, step: float = 10.0) -> list[PlaceRecord]:
    """Places along a straight road, ``step`` metres apart (east = 1000 + i * step)."""
    return [
        PlaceRecord(path=f"img{i:05d}.jpg", east=1000 + i * step, north=5000.0) for i in range(n)
    ]


def exact_top1(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    return np.argmax(queries @ database.T, axis=1)


@pytest.fixture(scope="module")
def database() -> np.ndarray:
    return clustered(3000, seed=1)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered(400, seed=2)


@pytest.fixture(scope="module")
def built(database: np.ndarray) -> PlaceMap:
    built = PlaceMap.create(DIM, "fp-test", capacity=100, index="hnswlib")
    built.add(database, line_records(len(database)))
    return built


def test_capacity_grows_and_ids_follow_insertion(built: PlaceMap, database: np.ndarray) -> None:
    assert len(built) == 3000
    assert built._index.held() == 3000  # grown from room for 100
    assert built.ids().tolist() == list(range(3000))
    assert built.record(17).path == "img00017.jpg" and built.record(17).id == 17


def test_query_returns_self_with_score_one_and_records(
    built: PlaceMap, database: np.ndarray
) -> None:
    found = built.query(database[[5, 900]], k=3)
    assert [r.ids[0] for r in found] == [5, 900]
    assert np.allclose([r.scores[0] for r in found], 1.0, atol=1e-5)
    assert found[1].records[0].east == 1000 + 900 * 10.0
    assert all(np.all(np.diff(r.scores) <= 1e-6) for r in found)  # best first


def test_top1_agrees_with_exact_search(
    built: PlaceMap, database: np.ndarray, queries: np.ndarray
) -> None:
    ids, scores = built.search(queries, k=1)
    exact = exact_top1(queries, database)
    assert np.mean(ids[:, 0] == exact) >= 0.99
    assert np.allclose(scores[:, 0], np.sum(queries * database[ids[:, 0]], axis=1), atol=1e-5)


def test_descriptors_are_normalised_on_the_way_in() -> None:
    m = PlaceMap.create(DIM, "fp")
    x = clustered(50)
    m.add(x * 7.5)
    found = m.query(x[3] * 0.1, k=1)[0]
    assert found.ids[0] == 3 and abs(found.scores[0] - 1.0) < 1e-5
    assert np.allclose(m.descriptors([3]), x[3:4], atol=1e-6)


def test_remove_hides_places_and_ids_are_never_reused(database: np.ndarray) -> None:
    m = PlaceMap.create(DIM, "fp")
    m.add(database[:500])
    m.remove([0, 1, 2])
    assert len(m) == 497 and 1 not in m
    found = m.query(database[:3], k=5)
    assert all(not set(r.ids.tolist()) & {0, 1, 2} for r in found)
    new_ids = m.add(database[:2])
    assert new_ids.tolist() == [500, 501]
    assert m.query(database[0], k=1)[0].ids[0] == 500


def test_remove_unknown_id_changes_nothing(database: np.ndarray) -> None:
    m = PlaceMap.create(DIM, "fp")
    m.add(database[:10])
    with pytest.raises(EdgeVPRError, match="no place with id 99"):
        m.remove([3, 99])
    assert len(m) == 10 and 3 in m


def test_query_survives_removing_almost_everything(database: np.ndarray) -> None:
    m = PlaceMap.create(DIM, "fp")
    m.add(database[:300])
    m.remove(np.arange(295))
    found = m.query(database[:4], k=10)
    assert all(sorted(r.ids.tolist()) == [295, 296, 297, 298, 299] for r in found)


def test_k_larger_than_map_and_empty_map() -> None:
    m = PlaceMap.create(DIM, "fp")
    assert len(m.query(clustered(1)[0], k=5)[0]) == 0
    m.add(clustered(3))
    assert len(m.query(clustered(1)[0], k=50)[0]) == 3
    with pytest.raises(EdgeVPRError, match="k must be"):
        m.query(clustered(1), k=0)


def test_wrong_dimension_and_bad_values_are_refused(built: PlaceMap) -> None:
    with pytest.raises(EdgeVPRError, match="32-d"):
        built.query(np.ones((2, DIM + 1), np.float32))
    with pytest.raises(EdgeVPRError, match="32-d"):
        built.add(np.ones((2, 16), np.float32))
    with pytest.raises(EdgeVPRError, match="NaN"):
        built.query(np.full((1, DIM), np.nan, np.float32))
    with pytest.raises(EdgeVPRError, match="all zeros"):
        built.query(np.zeros((1, DIM), np.float32))
    with pytest.raises(EdgeVPRError, match="2 descriptors but 1 place records"):
        PlaceMap.create(DIM, "fp").add(clustered(2), [PlaceRecord()])


def test_records_are_validated() -> None:
    with pytest.raises(EdgeVPRError, match="both east and north"):
        PlaceRecord(east=1.0)
    with pytest.raises(EdgeVPRError, match="finite"):
        PlaceRecord(lat=float("nan"), lon=1.0)
    record = PlaceRecord(east=np.float32(2.5), north=np.int64(3), timestamp=np.float64(7.0))
    assert record.to_dict() == {"east": 2.5, "north": 3.0, "timestamp": 7.0}
    assert type(record.east) is float


# ------------------------------------------------------------------ persistence
def test_save_load_round_trip(tmp_path: Path, built: PlaceMap, queries: np.ndarray) -> None:
    built.set_ef(77)
    path = tmp_path / "road.vprmap"
    built.save(path)
    loaded = PlaceMap.load(path)
    assert (len(loaded), loaded.descriptor_dim, loaded.fingerprint) == (3000, DIM, "fp-test")
    assert (loaded.M, loaded.ef_construction, loaded.ef) == (16, 200, 77)
    assert loaded.records() == built.records()
    a_ids, a_scores = built.search(queries, k=5)
    b_ids, b_scores = loaded.search(queries, k=5)
    assert np.array_equal(a_ids, b_ids) and np.allclose(a_scores, b_scores)
    assert loaded.source == path
    built.set_ef(INDEX_KINDS["hnswlib"].defaults["ef"])


def test_round_trip_keeps_removals_and_grows_after_load(
    tmp_path: Path, database: np.ndarray
) -> None:
    m = PlaceMap.create(DIM, "fp", capacity=64)
    m.add(database[:64])
    m.remove([10, 11])
    m.save(tmp_path / "m.vprmap")
    loaded = PlaceMap.load(tmp_path / "m.vprmap")
    assert len(loaded) == 62 and 10 not in loaded
    ids = loaded.add(database[64:200])
    assert ids[0] == 64 and len(loaded) == 198
    assert loaded.query(database[150], k=1)[0].ids[0] == 150


def test_saving_is_atomic_and_leaves_no_temporary_files(
    tmp_path: Path, built: PlaceMap, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.vprmap"
    built.save(path)
    before = path.read_bytes()

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(container.os, "fsync", failing_fsync)
    with pytest.raises(EdgeVPRError, match="No space left"):
        built.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.vprmap"]


def test_refuses_to_overwrite_a_file_that_is_not_a_map(tmp_path: Path, built: PlaceMap) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"precious weights")
    with pytest.raises(EdgeVPRError, match="refusing to overwrite"):
        built.save(model)
    assert model.read_bytes() == b"precious weights"


@pytest.fixture()
def saved_map(tmp_path: Path) -> Path:
    m = PlaceMap.create(DIM, "fp", index="hnswlib")
    m.add(clustered(200), line_records(200))
    m.save(tmp_path / "m.vprmap")
    return tmp_path / "m.vprmap"


@pytest.mark.parametrize("cut", ["inside the magic", "after the header", "half", "last byte"])
def test_truncated_map_is_a_one_line_error(saved_map: Path, cut: str) -> None:
    data = saved_map.read_bytes()
    keep = {
        "inside the magic": 10,
        "after the header": container.HEADER.size + 5,
        "half": len(data) // 2,
        "last byte": len(data) - 1,
    }[cut]
    saved_map.write_bytes(data[:keep])
    with pytest.raises(EdgeVPRError, match="truncated") as caught:
        PlaceMap.load(saved_map)
    assert "\n" not in str(caught.value) and str(saved_map) in str(caught.value)


def test_flipped_byte_is_caught_by_the_checksum(saved_map: Path) -> None:
    entries = {e.name: e for e in container.MapFile(saved_map).entries}
    data = bytearray(saved_map.read_bytes())
    data[entries["records.floats"].offset + 3] ^= 0x40
    saved_map.write_bytes(bytes(data))
    with pytest.raises(EdgeVPRError, match="checksum mismatch in records.floats"):
        PlaceMap.load(saved_map)


def test_foreign_and_empty_files_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "notes.txt"
    foreign.write_text("hello, this is not a map at all, honestly " * 10)
    with pytest.raises(EdgeVPRError, match="not an edgevpr place map"):
        PlaceMap.load(foreign)
    empty = tmp_path / "empty.vprmap"
    empty.write_bytes(b"")
    with pytest.raises(EdgeVPRError, match="empty"):
        PlaceMap.load(empty)
    with pytest.raises(EdgeVPRError, match="does not exist"):
        PlaceMap.load(tmp_path / "missing.vprmap")
    with pytest.raises(EdgeVPRError, match="not a file"):
        PlaceMap.load(tmp_path)


def test_newer_format_version_is_refused(saved_map: Path) -> None:
    data = bytearray(saved_map.read_bytes())
    struct.pack_into("<H", data, len(container.MAGIC), container.VERSION + 1)
    saved_map.write_bytes(bytes(data))
    with pytest.raises(EdgeVPRError, match="format version 3.*newer"):
        PlaceMap.load(saved_map)


def test_extra_bytes_after_the_end_are_refused(saved_map: Path) -> None:
    with open(saved_map, "ab") as fh:
        fh.write(b"junk")
    with pytest.raises(EdgeVPRError, match="unexpected bytes"):
        PlaceMap.load(saved_map)


def test_file_is_a_json_header_and_aligned_numeric_sections(saved_map: Path) -> None:
    mapped = container.MapFile(saved_map)
    metadata = mapped.metadata
    assert metadata["format"] == "edgevpr.placemap" and metadata["descriptor_dim"] == DIM
    assert metadata["places"] == 200 and metadata["index"]["kind"] == "hnswlib"
    assert mapped.sections["records.floats"][0, 0] == 1000.0  # east of the first place
    data = saved_map.read_bytes()
    for entry in mapped.entries:  # page-aligned, checksummed, plain numbers (no pickle)
        assert entry.offset % container.ALIGN == 0 and entry.dtype in container.DTYPES
        body = data[entry.offset : entry.offset + entry.length]
        assert hashlib.sha256(body).hexdigest() == entry.sha256


# ------------------------------------------------------------------ concurrency
def test_eight_threads_querying_get_exactly_the_serial_results(
    built: PlaceMap, queries: np.ndarray
) -> None:
    serial = [built.query(q, k=5)[0] for q in queries]
    barrier = threading.Barrier(8)

    def worker(offset: int) -> list[tuple[list[int], list[float]]]:
        barrier.wait()
        order = np.roll(np.arange(len(queries)), offset * 50)
        out = {}
        for i in order:
            found = built.query(queries[i], k=5)[0]
            out[int(i)] = (found.ids.tolist(), found.scores.tolist())
        return [out[i] for i in range(len(queries))]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, range(8)))
    expected = [(s.ids.tolist(), s.scores.tolist()) for s in serial]
    assert all(r == expected for r in results)


def test_queries_while_a_writer_adds_and_removes(database: np.ndarray, queries: np.ndarray) -> None:
    m = PlaceMap.create(DIM, "fp", capacity=16)
    m.add(database[:200], line_records(200))
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                for found in m.query(queries[:20], k=5):
                    # every id returned has its record, and it is the record of that id
                    assert [r.id for r in found.records] == found.ids.tolist()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    try:
        for start in range(200, 3000, 350):
            m.add(database[start : start + 350], line_records(3000)[start : start + 350])
        m.remove(np.arange(0, 100))
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors[0]
    assert len(m) == 2900
    ids, _ = m.search(queries, k=1)
    exact = exact_top1(queries, database[100:]) + 100
    assert np.mean(ids[:, 0] == exact) >= 0.99


# ------------------------------------------------------------------ geo prior
def test_prior_keeps_only_places_in_range(built: PlaceMap, database: np.ndarray) -> None:
    prior = GeoPrior(1000 + 1500 * 10.0, 5000.0, radius_m=100.0)  # places 1490..1510
    found = built.query(database[[5, 1500]], k=5, prior=prior)
    for result in found:
        assert len(result) == 5
        assert all(1490 <= i <= 1510 for i in result.ids)
        assert np.all(result.distances_m <= 100.0)
    assert found[1].ids[0] == 1500 and found[1].distances_m[0] == 0.0


def test_prior_matches_exact_search_over_the_places_in_range(
    built: PlaceMap, database: np.ndarray, queries: np.ndarray
) -> None:
    prior = GeoPrior(1000 + 700 * 10.0, 5000.0, radius_m=2000.0)  # 401 places in range
    in_range = np.arange(500, 901)
    expected = in_range[np.argsort(-(queries @ database[in_range].T), axis=1)[:, :3]]
    found = built.query(queries, k=3, prior=prior)
    assert all(f.ids.tolist() == e.tolist() for f, e in zip(found, expected, strict=True))


def test_prior_through_hnswlib_filter_when_many_places_are_in_range(
    built: PlaceMap, database: np.ndarray, queries: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "EXACT_PRIOR_BUDGET", 0)  # force the filtered graph walk
    prior = GeoPrior(1000 + 1500 * 10.0, 5000.0, radius_m=5000.0)  # 1001 of 3000 places
    in_range = np.arange(1000, 2001)
    exact = in_range[np.argmax(queries @ database[in_range].T, axis=1)]
    found = built.query(queries, k=3, prior=prior)
    assert all(set(f.ids.tolist()) <= set(in_range.tolist()) for f in found)
    assert np.mean([f.ids[0] for f in found] == exact) >= 0.99
    narrow = built.query(queries[:5], k=10, prior=GeoPrior(1000.0, 5000.0, 25.0))
    assert all(sorted(f.ids.tolist()) == [0, 1, 2] for f in narrow)  # fewer than k in range


def test_prior_with_nothing_in_range_returns_no_candidates(
    built: PlaceMap, database: np.ndarray
) -> None:
    found = built.query(database[:2], k=5, prior=GeoPrior(0.0, 0.0, 10.0))
    assert [len(f) for f in found] == [0, 0]


def test_latlon_prior_on_latlon_and_utm_maps() -> None:
    x = clustered(30)
    lats = 59.3 + np.arange(30) * 0.001  # ~111 m apart, northwards
    latlon = PlaceMap.create(DIM, "fp")
    latlon.add(x, [PlaceRecord(lat=float(a), lon=18.07) for a in lats])
    found = latlon.query(x[10], k=30, prior=GeoPrior.from_latlon(float(lats[10]), 18.07, 120.0))[0]
    assert sorted(found.ids.tolist()) == [9, 10, 11]

    utm = PlaceMap.create(DIM, "fp")
    coords = [latlon_to_utm(float(a), 18.07, "34V") for a in lats]
    utm.add(x, [PlaceRecord(east=e, north=n, utm_zone="34V") for e, n in coords])
    found = utm.query(x[10], k=30, prior=GeoPrior.from_latlon(float(lats[10]), 18.07, 120.0))[0]
    assert sorted(found.ids.tolist()) == [9, 10, 11]

    with pytest.raises(EdgeVPRError, match="not east/north"):
        latlon.query(x[10], k=3, prior=GeoPrior(500_000.0, 6_500_000.0, 120.0))

    no_zone = PlaceMap.create(DIM, "fp")
    no_zone.add(x, [PlaceRecord(east=e, north=n) for e, n in coords])
    with pytest.raises(EdgeVPRError, match="no UTM zone"):
        no_zone.query(x[10], k=3, prior=GeoPrior.from_latlon(59.3, 18.07, 120.0))


def test_prior_is_validated() -> None:
    with pytest.raises(EdgeVPRError, match="radius"):
        GeoPrior(0.0, 0.0, -5.0)
    with pytest.raises(EdgeVPRError, match="out of range"):
        GeoPrior.from_latlon(95.0, 0.0, 10.0)
    with pytest.raises(EdgeVPRError, match="either east/north or lat/lon"):
        GeoPrior(1.0, None, 10.0)  # type: ignore[arg-type]
