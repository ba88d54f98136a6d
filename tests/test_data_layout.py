"""The evaluation layout: UTM from file names, positives within a radius, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgevpr.core.errors import EdgeVPRError
from edgevpr.data.layout import (
    available_splits,
    find_within,
    parse_utm,
    read_image_set,
    read_split,
)

# A valid 1 x 1 black PNG.
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000a4944415408"
    "1d63000200000400010d3ba4b90000000049454e44ae426082"
)


def touch_image(folder: Path, east: float, north: float, stem: str = "x") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"@{east:.2f}@{north:.2f}@33@U@@@{stem}@@@@@@@@.png"
    path.write_bytes(PNG_1PX)
    return path


def test_parse_utm_reads_east_and_north_from_the_name_not_the_path(tmp_path: Path) -> None:
    folder = tmp_path / "@999@999@ folder"
    assert parse_utm(folder / "@583.5@4478.25@@@@@pano@@@@@@@@.jpg") == (583.5, 4478.25)
    assert parse_utm("@-12@1e3@.png") == (-12.0, 1000.0)


@pytest.mark.parametrize("name", ["image.jpg", "@only_east@.jpg", "@1@@.jpg", "@1@nan@.jpg"])
def test_names_without_coordinates_are_refused_naming_the_file(name: str) -> None:
    with pytest.raises(EdgeVPRError) as err:
        parse_utm(f"/data/{name}")
    assert name in str(err.value) and "\n" not in str(err.value)


def test_read_split_reads_database_and_queries(tmp_path: Path) -> None:
    for i in range(3):
        touch_image(tmp_path / "set/images/test/database", 0, 10 * i, f"d{i}")
    touch_image(tmp_path / "set/images/test/queries", 0, 12, "q0")
    split = read_split(tmp_path / "set", "test")
    assert (len(split.database), len(split.queries)) == (3, 1)
    assert split.queries.utm.tolist() == [[0.0, 12.0]]
    assert [p.tolist() for p in split.positives(5.0)] == [[1]]
    assert [p.tolist() for p in split.positives(25.0)] == [[1, 2, 0]]  # nearest first
    assert available_splits(tmp_path / "set") == ["test"]


def test_missing_and_empty_folders_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(EdgeVPRError, match="does not exist"):
        read_split(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    with pytest.raises(EdgeVPRError, match="not in the evaluation layout"):
        read_split(tmp_path / "flat")
    touch_image(tmp_path / "s/images/train/database", 0, 0)
    touch_image(tmp_path / "s/images/train/queries", 0, 0)
    with pytest.raises(EdgeVPRError, match="no split 'test'.*splits: train"):
        read_split(tmp_path / "s", "test")
    (tmp_path / "s/images/val/database").mkdir(parents=True)
    (tmp_path / "s/images/val/queries").mkdir(parents=True)
    with pytest.raises(EdgeVPRError, match="no images in .*val/database"):
        read_split(tmp_path / "s", "val")


def test_a_stray_image_without_coordinates_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    touch_image(folder, 0, 0)
    (folder / "holiday.png").write_bytes(PNG_1PX)
    with pytest.raises(EdgeVPRError, match="holiday.png has no UTM coordinates"):
        read_image_set(folder)


def brute_force(reference: np.ndarray, targets: np.ndarray, radius: float) -> list[list[int]]:
    out = []
    for t in targets:
        d = np.sqrt(((reference - t) ** 2).sum(axis=1))
        idx = np.flatnonzero(d <= radius)
        out.append(sorted(idx.tolist(), key=lambda i: (d[i], i)))
    return out


coords = st.floats(-500, 500, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(coords, coords), min_size=0, max_size=40),
    st.lists(st.tuples(coords, coords), min_size=1, max_size=10),
    st.floats(0, 300),
)
def test_find_within_equals_brute_force(ref, targets, radius) -> None:
    reference = np.array(ref, dtype=np.float64).reshape(-1, 2)
    queries = np.array(targets, dtype=np.float64)
    got = [hits.tolist() for hits in find_within(reference, queries, radius)]
    assert got == brute_force(reference, queries, radius)


def test_find_within_refuses_a_negative_radius() -> None:
    with pytest.raises(EdgeVPRError, match="radius"):
        find_within(np.zeros((1, 2)), np.zeros((1, 2)), -1.0)


def test_real_sets_parse_with_their_documented_ground_truth(shared_data: Path) -> None:
    nordland = read_split(shared_data / "nordland64", "test")
    assert (len(nordland.database), len(nordland.queries)) == (1176, 1176)
    counts = np.array([len(p) for p in nordland.positives(25.0)])
    # +-1 frame, frames 20 m apart: 3 positives, 2 at the ends of the route.
    assert counts.min() == 2 and counts.max() == 3 and (counts == 2).sum() == 2
    train = read_split(shared_data / "nordland64", "train")
    assert (len(train.database), len(train.queries)) == (2400, 2400)
    corridor = read_split(shared_data / "corridor", "test")
    counts = np.array([len(p) for p in corridor.positives(25.0)])
    assert (len(corridor.database), counts.max(), counts.min()) == (111, 5, 3)  # +-2 frames
