"""Coordinates: evaluation-layout names, UTM projection, distances; the readers-writer lock."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.geo import haversine_m, latlon_to_utm, parse_zone, utm_zone_for
from edgevpr.core.layout_names import parse_layout_name
from edgevpr.runtime.placemap.rwlock import ReadWriteLock


def test_layout_name_with_only_east_north() -> None:
    parsed = parse_layout_name("@0@10.00@@@@@0000001@@@@@@@@.jpg")
    assert parsed is not None
    assert (parsed.east, parsed.north, parsed.stem) == (0.0, 10.0, "0000001")
    assert parsed.lat is None and parsed.utm_zone is None and parsed.heading is None


def test_layout_name_with_every_field() -> None:
    name = "@355123.45@4654321.00@33@T@42.0312@14.2512@pano7@3@271.5@0@0@2@20210301@note@.png"
    parsed = parse_layout_name(name)
    assert parsed is not None
    assert (parsed.east, parsed.north, parsed.utm_zone) == (355123.45, 4654321.0, "33T")
    assert (parsed.lat, parsed.lon, parsed.heading) == (42.0312, 14.2512, 271.5)
    assert parsed.timestamp == "20210301"


@pytest.mark.parametrize("name", ["frame_001.jpg", "photo@home.png", ""])
def test_names_outside_the_layout_carry_nothing(name: str) -> None:
    assert parse_layout_name(name) is None


def test_malformed_fields_are_dropped_not_guessed() -> None:
    parsed = parse_layout_name("@abc@12@@@95@10@@@@@@@@@.jpg")
    assert parsed is not None
    assert parsed.east is None and parsed.north is None  # half a pair is no position
    assert parsed.lat is None and parsed.lon is None  # latitude 95 does not exist


def test_utm_reference_points() -> None:
    assert latlon_to_utm(0.0, 3.0) == pytest.approx((500_000.0, 0.0), abs=1e-6)
    # on the central meridian northing is k0 x the meridian arc (WGS84: 4 984 944.4 m at 45 N)
    assert latlon_to_utm(45.0, 9.0)[1] == pytest.approx(0.9996 * 4_984_944.378, abs=0.01)
    # Eiffel Tower: 31U 448252 5411944 (published)
    assert latlon_to_utm(48.8583, 2.2945) == pytest.approx((448_251.9, 5_411_943.8), abs=0.5)
    east, north = latlon_to_utm(-33.8568, 151.2153)  # southern hemisphere: false northing
    assert 6_000_000 < north < 10_000_000 and 100_000 < east < 900_000


def test_utm_distances_match_great_circle_distances() -> None:
    rng = np.random.default_rng(0)
    for lat, lon in rng.uniform([-60, -170], [60, 170], size=(20, 2)):
        zone = utm_zone_for(lat, lon)
        a = np.array(latlon_to_utm(lat, lon, zone))
        b = np.array(latlon_to_utm(lat + 0.003, lon + 0.004, zone))
        planar = np.hypot(*(a - b))
        sphere = haversine_m(lat, lon, np.array([lat + 0.003]), np.array([lon + 0.004]))[0]
        assert planar == pytest.approx(sphere, rel=6e-3)  # UTM scale + sphere vs ellipsoid


def test_utm_zones_and_exceptions() -> None:
    assert utm_zone_for(48.86, 2.29) == "31U"
    assert utm_zone_for(60.39, 5.32) == "32V"  # Bergen: Norway exception
    assert utm_zone_for(78.22, 15.65) == "33X"  # Svalbard exception
    assert parse_zone("18t") == (18, True) and parse_zone("56H") == (56, False)
    with pytest.raises(EdgeVPRError, match="not a UTM zone"):
        parse_zone("99Q")
    with pytest.raises(EdgeVPRError, match="outside UTM"):
        utm_zone_for(86.0, 0.0)


def test_haversine_one_degree_of_latitude() -> None:
    assert haversine_m(0.0, 0.0, np.array([1.0]), np.array([0.0]))[0] == pytest.approx(
        111_195, rel=1e-3
    )


def test_writer_waits_for_readers_and_excludes_them() -> None:
    lock = ReadWriteLock()
    events: list[str] = []
    reading = threading.Event()

    def reader() -> None:
        with lock.reading():
            reading.set()
            time.sleep(0.05)
            events.append("read done")

    def writer() -> None:
        reading.wait()
        with lock.writing():
            events.append("write")

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert events == ["read done", "write"]


def test_readers_share_the_lock() -> None:
    lock = ReadWriteLock()
    inside = threading.Barrier(3, timeout=5)

    def reader() -> None:
        with lock.reading():
            inside.wait()  # all three are inside at once, or this times out

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not inside.broken
