"""The one preprocessing implementation."""

from __future__ import annotations

import numpy as np
import pytest

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.preprocess import PreprocessSpec, preprocess, resize_rgb


def test_output_is_normalised_nchw_float32() -> None:
    spec = PreprocessSpec(height=32, width=48)
    image = np.full((10, 20, 3), 255, np.uint8)
    batch = preprocess([image, image], spec)
    assert batch.shape == (2, 3, 32, 48) and batch.dtype == np.float32
    expected = (1.0 - np.array(spec.mean)) / np.array(spec.std)
    assert np.allclose(batch[0, :, 5, 5], expected, atol=1e-6)


def test_channels_are_not_swapped() -> None:
    spec = PreprocessSpec(height=16, width=16, mean=(0, 0, 0), std=(1, 1, 1))
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, :, 0] = 255
    batch = preprocess([image], spec)
    assert batch[0, 0].min() == 1.0 and batch[0, 1].max() == 0.0


def test_resize_uses_the_recorded_interpolation() -> None:
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    bilinear = resize_rgb(image, PreprocessSpec(height=24, width=40, interpolation="bilinear"))
    bicubic = resize_rgb(image, PreprocessSpec(height=24, width=40, interpolation="bicubic"))
    assert bilinear.shape == bicubic.shape == (24, 40, 3)
    assert not np.array_equal(bilinear, bicubic)


def test_spec_round_trips_through_a_dict() -> None:
    spec = PreprocessSpec(height=64, width=128, interpolation="bicubic", mean=(0.5, 0.5, 0.5))
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"height": 0}, "out of range"),
        ({"width": 100000}, "out of range"),
        ({"interpolation": "lanczos9"}, "unknown interpolation"),
        ({"std": (0.0, 1.0, 1.0)}, "std > 0"),
        ({"color": "BGR"}, "unsupported"),
    ],
)
def test_bad_specs_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(EdgeVPRError, match=message):
        PreprocessSpec(**fields)


def test_unknown_and_future_fields_are_refused() -> None:
    with pytest.raises(EdgeVPRError, match="unknown preprocessing fields"):
        PreprocessSpec.from_dict({"height": 32, "gamma": 2.2})
    with pytest.raises(EdgeVPRError, match="version 3"):
        PreprocessSpec.from_dict({"version": 3})


def test_non_rgb_input_is_refused() -> None:
    with pytest.raises(EdgeVPRError, match="RGB"):
        preprocess([np.zeros((8, 8), np.uint8)], PreprocessSpec(height=16, width=16))
    with pytest.raises(EdgeVPRError, match="no images"):
        preprocess([], PreprocessSpec(height=16, width=16))
