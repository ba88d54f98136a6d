"""Image decoding: awkward images work, bad ones give one line naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from corpus import IMAGES_BAD, IMAGES_OK
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.images import decode_image, list_images, read_image


@pytest.mark.parametrize("kind", sorted(IMAGES_OK))
def test_awkward_but_valid_images_decode_to_rgb8(tmp_path: Path, kind: str) -> None:
    image = read_image(IMAGES_OK[kind](tmp_path))
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] >= 1 and image.shape[1] >= 1


@pytest.mark.parametrize("kind", sorted(IMAGES_BAD))
def test_bad_images_are_refused_in_one_line(tmp_path: Path, kind: str) -> None:
    path = IMAGES_BAD[kind](tmp_path)
    with pytest.raises(EdgeVPRError) as info:
        read_image(path)
    message = str(info.value)
    assert "\n" not in message
    assert path.name in message


def test_channel_order_is_rgb(tmp_path: Path) -> None:
    import cv2

    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[:, :, 2] = 255  # red in OpenCV's BGR order
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), bgr)
    rgb = read_image(path)
    assert rgb[0, 0].tolist() == [255, 0, 0]


def test_sixteen_bit_keeps_the_high_byte(tmp_path: Path) -> None:
    import cv2

    deep = np.full((2, 2), 0xAB12, np.uint16)
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), deep)
    assert read_image(path)[0, 0].tolist() == [0xAB, 0xAB, 0xAB]


def test_list_images_filters_and_sorts(tmp_path: Path) -> None:
    for name in ["b.jpg", "a.PNG", "notes.txt", "c.jpeg"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.jpg", "c.jpeg"]
    with pytest.raises(EdgeVPRError, match="does not exist"):
        list_images(tmp_path / "nope")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=2048))
def test_decoder_never_crashes_on_arbitrary_bytes(data: bytes) -> None:
    try:
        image = decode_image(data, "fuzz")
    except EdgeVPRError as exc:
        assert "\n" not in str(exc)
    else:
        assert image.dtype == np.uint8 and image.shape[2] == 3


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 200), st.sampled_from([".png", ".jpg", ".bmp"]))
def test_decoder_refuses_every_truncation_of_a_real_image(cut: int, ext: str) -> None:
    import cv2
    from corpus import photo

    ok, buf = cv2.imencode(ext, photo())
    data = buf.tobytes()[:cut]
    try:
        decode_image(data, "cut")
    except EdgeVPRError as exc:
        assert "\n" not in str(exc)
