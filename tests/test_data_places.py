"""Training places: grouping the evaluation layout by distance, held-out validation, and the
GSV-Cities reader."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from test_data_layout import PNG_1PX, touch_image

from edgevpr.core.errors import EdgeVPRError
from edgevpr.data.gsv import image_name, read_gsv_cities
from edgevpr.data.places import group_places, layout_training_set


def test_grouping_a_route_makes_places_of_neighbouring_frames() -> None:
    # Two traversals of a route with frames every 20 m (like nordland64).
    route = np.stack([np.zeros(10), 20.0 * np.arange(10)], axis=1)
    labels = group_places(np.concatenate([route, route]), radius=25.0)
    # Frames 0+1, 2+3, ... of both traversals: 5 places of 4 images.
    assert labels[:10].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert labels[10:].tolist() == labels[:10].tolist()
    assert group_places(route, radius=5.0).tolist() == list(range(10))


def test_grouping_does_not_depend_on_input_order() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 300, (60, 2))
    labels = group_places(points, 30.0)
    perm = rng.permutation(60)
    shuffled = group_places(points[perm], 30.0)
    assert np.array_equal(shuffled, labels[perm])
    # Every place is at most 2 x radius across.
    for place in np.unique(labels):
        members = points[labels == place]
        spread = np.sqrt(((members[:, None] - members[None]) ** 2).sum(-1)).max()
        assert spread <= 60.0 + 1e-9


def test_grouping_refuses_a_bad_radius() -> None:
    with pytest.raises(EdgeVPRError, match="place radius"):
        group_places(np.zeros((3, 2)), 0.0)


def route_set(root: Path, frames: int = 40, spacing: float = 20.0) -> Path:
    for i in range(frames):
        touch_image(root / "images/train/database", 0, i * spacing, f"s{i}")
        touch_image(root / "images/train/queries", 0, i * spacing, f"w{i}")
    return root


def test_layout_training_holds_out_the_end_of_the_route(tmp_path: Path) -> None:
    held = layout_training_set(route_set(tmp_path / "r"), val_fraction=0.2)
    train, val = held.train, held.val
    assert val is not None and len(val.database) == len(val.queries) == 8
    # The 4 held-out places are the last 8 frames; the training images stay > 25 m away.
    assert val.queries.utm[:, 1].min() == 640.0
    assert train.utm[:, 1].max() < 640.0 - 25.0
    # Frame 31 (20 m from the held-out stretch) is dropped, so its place keeps frame 30 only.
    assert train.images_per_place().tolist() == [4] * 15 + [2]
    assert np.array_equal(np.unique(train.labels), np.arange(16))


def test_layout_training_without_validation_uses_everything(tmp_path: Path) -> None:
    held = layout_training_set(route_set(tmp_path / "r"), val_fraction=0.0)
    assert held.val is None and len(held.train) == 80 and held.train.num_places == 20


def test_layout_training_errors(tmp_path: Path) -> None:
    with pytest.raises(EdgeVPRError, match="too few to hold out"):
        layout_training_set(route_set(tmp_path / "tiny", frames=4), val_fraction=0.1)
    with pytest.raises(EdgeVPRError, match="fraction"):
        layout_training_set(tmp_path / "tiny", val_fraction=1.0)
    sparse = tmp_path / "sparse"
    touch_image(sparse / "images/train/database", 0, 0)
    touch_image(sparse / "images/train/queries", 0, 500)
    with pytest.raises(EdgeVPRError, match="no place with 2 or more images"):
        layout_training_set(sparse, val_fraction=0.0)


def test_nordland_train_split_becomes_places_of_four(shared_data: Path) -> None:
    held = layout_training_set(shared_data / "nordland64", val_fraction=0.1)
    counts = held.train.images_per_place()
    assert held.val is not None and len(held.val.queries) == 240
    assert np.median(counts) == 4 and counts.min() >= 2


ROW_FIELDS = ["place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid"]


def gsv_tree(root: Path, images_per_place: dict[int, int]) -> Path:
    (root / "Dataframes").mkdir(parents=True)
    for city, lat0 in (("Lund", 55.7), ("Oslo", 59.9)):
        rows = []
        for place, count in images_per_place.items():
            for k in range(count):
                rows.append(
                    {
                        "place_id": place,
                        "year": 2015 + k,
                        "month": 7,
                        "northdeg": 90,
                        "city_id": city,
                        "lat": lat0 + place * 0.001 + k * 1e-5,
                        "lon": 13.2,
                        "panoid": f"pano_{place}-{k}",
                    }
                )
        with open(root / "Dataframes" / f"{city}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, ROW_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        for row in rows:
            path = root / "Images" / city / image_name({k: str(v) for k, v in row.items()})
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(PNG_1PX)
    return root


def test_gsv_cities_reader_labels_places_per_city(tmp_path: Path) -> None:
    root = gsv_tree(tmp_path / "gsv", {1: 4, 2: 5, 3: 2})
    places = read_gsv_cities(root, min_images=4)
    # Place 3 has too few images; places 1 and 2 in two cities -> 4 places, 18 images.
    assert places.num_places == 4 and len(places) == 18
    assert sorted(places.images_per_place().tolist()) == [4, 4, 5, 5]
    name = places.paths[0].name
    assert name.startswith("Lund_0000001_2015_07_090_55.701_13.2_pano_1-0")
    # Positions in metres: images of one place are metres apart (1e-5 deg ~ 1.1 m).
    same = places.labels == places.labels[0]
    spread = np.ptp(places.utm[same][:, 1])
    assert 3.0 < spread < 3.6
    assert read_gsv_cities(root, cities=["Oslo"], min_images=4).num_places == 2


def test_gsv_cities_errors_name_the_file(tmp_path: Path) -> None:
    root = gsv_tree(tmp_path / "gsv", {1: 4})
    missing = next((root / "Images" / "Oslo").iterdir())
    missing.unlink()
    with pytest.raises(EdgeVPRError, match=f"{missing.name}.*Oslo.csv line"):
        read_gsv_cities(root)
    with pytest.raises(EdgeVPRError, match="no dataframe for Paris"):
        read_gsv_cities(root, cities=["Paris"])
    with pytest.raises(EdgeVPRError, match="not GSV-Cities"):
        read_gsv_cities(tmp_path)
