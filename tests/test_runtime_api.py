"""The runtime's Python API fails the way the CLI does: wrong types and values are one
EdgeVPRError line, never a TypeError, ValueError, AttributeError or a C++ exception."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgevpr.cli import main as edgevpr_main
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.geo import GeoPrior
from edgevpr.core.layout_names import parse_layout_name
from edgevpr.core.pixels import to_rgb8
from edgevpr.runtime.embedder import Embedder
from edgevpr.runtime.placemap import PlaceMap, PlaceRecord
from edgevpr.runtime.recognizer import Recognizer

FINGERPRINT = "ab" * 32


@pytest.fixture(scope="module")
def small_map() -> PlaceMap:
    placemap = PlaceMap.create(8, FINGERPRINT)
    vectors = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    placemap.add(vectors, [PlaceRecord(east=float(i), north=0.0) for i in range(20)])
    return placemap


def refused(call, message: str) -> None:
    with pytest.raises(EdgeVPRError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_the_calls_a_new_user_tried(
    embedder: Embedder, exported: dict[str, Path], small_map: PlaceMap
) -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    recognizer_map = PlaceMap.create(embedder.descriptor_dim, embedder.fingerprint)
    recognizer_map.add(embedder.embed_images([image]))
    recognizer = Recognizer(embedder, recognizer_map)
    refused(lambda: Recognizer(embedder, "map.evm"), "placemap must be a PlaceMap")
    refused(lambda: Recognizer(embedder, None), "placemap must be a PlaceMap")
    refused(lambda: Recognizer("best.onnx", recognizer_map), "embedder must be a Embedder")
    refused(lambda: recognizer.recognize(image, prior=(0, 0, 50)), "prior must be a GeoPrior")
    refused(lambda: GeoPrior(1, 2, "50"), "prior radius_m must be a number, not '50'")
    refused(lambda: Embedder(exported["onnx"], threads="2"), "threads must be a whole number")
    refused(lambda: PlaceMap.create("512", "x"), "descriptor_dim must be a whole number")
    refused(lambda: PlaceMap.load(None), "place map must be a file path")
    refused(lambda: PlaceMap.load("m\x00.vprmap"), "place map .* holds a NUL byte")
    refused(lambda: embedder.embed_paths(["a\x00.jpg"]), "image .* holds a NUL byte")
    refused(lambda: small_map.remove(["a"]), r"place ids must be whole numbers, not \['a'\]")
    refused(lambda: small_map.record("x"), "place id must be a whole number, not 'x'")
    refused(lambda: PlaceMap.create(512, "x", capacity=10**12), "capacity must be between")
    # hnswlib allocates its capacity up front; the other kinds grow as places come
    refused(lambda: PlaceMap.create(512, "x", capacity=10**9, index="hnswlib"),
            "GiB, more than this machine")  # fmt: skip
    refused(lambda: recognizer.recognize(image, k="5"), "k must be a whole number, not '5'")
    refused(lambda: recognizer.recognize(image, k=True), "k must be a whole number, not True")
    refused(lambda: small_map.query(np.ones(8), k=True), "k must be a whole number")
    assert len(small_map) == 20  # nothing changed


def test_records_with_impossible_values_are_refused() -> None:
    refused(lambda: PlaceRecord(lat=91.0, lon=0.0), "latitude/longitude 91.0,0.0 is out of range")
    refused(lambda: PlaceRecord(lat=0.0, lon=-180.5), "out of range")
    refused(lambda: PlaceRecord(heading=360.0), r"heading 360.0 is not in \[0, 360\)")
    refused(lambda: PlaceRecord(heading=-1.0), "heading")
    for zone in ("61N", "0T", "33I", "33O", "T", "3x3"):
        refused(lambda zone=zone: PlaceRecord(east=1.0, north=2.0, utm_zone=zone), "UTM zone")
    assert PlaceRecord(lat=-90.0, lon=180.0, heading=359.9, utm_zone="32v").heading == 359.9


def test_layout_names_with_impossible_values_carry_none_of_them() -> None:
    parsed = parse_layout_name("@1@2@61@Q@95.0@10.0@pano@@360@@@@@@.jpg")
    assert parsed is not None
    assert (parsed.east, parsed.north) == (1.0, 2.0)
    assert parsed.utm_zone is None and parsed.lat is None and parsed.heading == 0.0
    assert parse_layout_name("@1@2@32@V@59.9@10.7@@@-90@@@@@@.jpg").heading == 270.0


# ------------------------------------------------------------------ every function, fuzzed
WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.integers(-(10**14), 10**14),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=2)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(np.zeros((2, 3), np.float32)),
    st.just(np.zeros((3, 3, 3), np.uint8)),
    st.just(object()),
)


def acceptable(call) -> None:
    try:
        call()
    except EdgeVPRError as exc:
        assert "\n" not in str(exc)


FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(st.integers(0, 6), WRONG)
def test_place_map_construction_takes_only_sane_arguments(position: int, value: object) -> None:
    names = ["dim", "fingerprint", "M", "ef_construction", "ef", "capacity", "model"]
    args = dict(zip(names, [8, FINGERPRINT, 16, 50, 32, 16, None], strict=True))
    args[names[position]] = value
    acceptable(lambda: PlaceMap.create(index="hnswlib", **args))


@FUZZ
@given(st.sampled_from(["add", "remove", "record", "query", "search", "descriptors", "set_ef",
                        "save", "load", "source_of"]), WRONG, WRONG)  # fmt: skip
def test_place_map_methods_take_only_sane_arguments(
    tmp_path_factory: pytest.TempPathFactory, method: str, first: object, second: object
) -> None:
    placemap = PlaceMap.create(8, FINGERPRINT, capacity=32)
    placemap.add(
        np.eye(8, dtype=np.float32), [PlaceRecord(east=float(i), north=0.0) for i in range(8)]
    )
    calls = {
        "add": lambda: placemap.add(first, second),
        "remove": lambda: placemap.remove(first),
        "record": lambda: placemap.record(first),
        "query": lambda: placemap.query(np.ones(8), k=first, prior=second),
        "search": lambda: placemap.search(first, k=second),
        "descriptors": lambda: placemap.descriptors(first),
        "set_ef": lambda: placemap.set_ef(first),
        "save": lambda: placemap.save(first) if not isinstance(first, str) else None,
        "load": lambda: PlaceMap.load(first) if not isinstance(first, str) else None,
        "source_of": lambda: placemap.source_of(first),
    }
    before = len(placemap)
    acceptable(calls[method])
    if method not in ("add", "remove"):
        assert len(placemap) == before


@FUZZ
@given(st.integers(0, 4), WRONG)
def test_geo_priors_and_records_take_only_sane_arguments(position: int, value: object) -> None:
    args = [10.0, 20.0, 50.0, None, None]
    args[position] = value
    acceptable(lambda: GeoPrior(*args))
    acceptable(lambda: GeoPrior.from_latlon(value, 10.0, 50.0))
    fields = ["path", "east", "north", "lat", "lon", "utm_zone", "heading", "timestamp", "id"]
    acceptable(lambda: PlaceRecord(**{fields[position * 2 % len(fields)]: value}))


@FUZZ
@given(WRONG, st.sampled_from(["rgb8", "bgr8", "mono8", "mono16", "bgra8", "x", None, 3]))
def test_pixel_conversion_takes_only_sane_arguments(pixels: object, encoding: object) -> None:
    acceptable(lambda: to_rgb8(pixels, encoding))


@FUZZ
@given(st.sampled_from(["embed_images", "embed_image", "embed_paths", "embed_batch", "warmup",
                        "stream", "recognize", "recognize_many", "recognize_k", "prior"]),
       WRONG)  # fmt: skip
def test_embedder_and_recognizer_take_only_sane_arguments(
    embedder: Embedder, method: str, value: object
) -> None:
    placemap = PlaceMap.create(embedder.descriptor_dim, embedder.fingerprint)
    placemap.add(embedder.embed_images([np.zeros((16, 16, 3), np.uint8)]))
    recognizer = Recognizer(embedder, placemap)
    image = np.zeros((16, 16, 3), np.uint8)
    calls = {
        "embed_images": lambda: embedder.embed_images(value),
        "embed_image": lambda: embedder.embed_image(value),
        "embed_paths": lambda: embedder.embed_paths(value),
        "embed_batch": lambda: embedder.embed_batch(value),
        "warmup": lambda: embedder.warmup(value),
        "stream": lambda: list(embedder.stream([image], encoding=value)),
        "recognize": lambda: recognizer.recognize(value),
        "recognize_many": lambda: list(recognizer.recognize_many(value)),
        "recognize_k": lambda: recognizer.recognize(image, k=value),
        "prior": lambda: recognizer.recognize(image, prior=value),
    }
    acceptable(calls[method])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["providers", "threads", "batch_size", "path"]), WRONG)
@example("providers", [0])  # once read as a (name, options) pair before it was checked
def test_embedder_construction_takes_only_sane_arguments(
    exported: dict[str, Path], name: str, value: object
) -> None:
    kwargs = {"path": exported["onnx"], name: value}
    acceptable(lambda: Embedder(**kwargs).close())


# ------------------------------------------------------------------ what index commands say
def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    try:
        edgevpr_main([str(a) for a in argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_index_commands_report_coordinates_sources_and_duplicates(
    tmp_path: Path, exported: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2

    rng = np.random.default_rng(1)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(
            str(images / f"@0@{10 * i}@@@@@{i}@@@@@@@@.png"), rng.integers(0, 255, (24, 32, 3))
        )
    cv2.imwrite(str(images / "no_coordinates.png"), rng.integers(0, 255, (24, 32, 3)))
    map_path = tmp_path / "map.vprmap"
    code, out, _ = run(capsys, "index", "build", exported["onnx"], images, "--out", map_path, "-q")
    assert code == 0 and "4 places" in out and "1 of them without coordinates" in out
    int8_like = tmp_path / "second.onnx"  # the same weights in another file, as an INT8 is
    int8_like.write_bytes(exported["onnx"].read_bytes())
    extra = tmp_path / "extra"
    extra.mkdir()
    cv2.imwrite(str(extra / "@5@5@@@@@x@@@@@@@@.png"), rng.integers(0, 255, (24, 32, 3)))
    again = sorted(images.iterdir())[0]
    code, out, err = run(capsys, "index", "add", map_path, again, extra, "--model", int8_like, "-q")
    assert code == 0 and "added 1 places" in out
    assert f"{again} is already in the map; not added again" in err
    code, out, _ = run(capsys, "index", "info", map_path, "--json")
    assert '"places_without_coordinates": 1' in out
    assert "lite0.onnx (fp32): 4 places; second.onnx (fp32): 1 places" in out
    code, _, err = run(capsys, "index", "add", map_path, again, "--model", int8_like, "-q")
    assert code == 2 and "every image is already in the map" in err
    sources = PlaceMap.load(map_path).sources()
    assert [(s["file"], s["places"]) for s in sources] == [("lite0.onnx", 4), ("second.onnx", 1)]
