"""The decoder on damaged PNGs (what a bad disk, transfer or interrupted copy leaves): every
change is either decoded or refused with our one line, and nothing else reaches stderr -
libpng printed its own errors before the chunks were checked first."""

from __future__ import annotations

import numpy as np
import pytest
from corpus import encode, photo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.images import decode_image

PNGS = {
    "rgb": encode(".png", photo(40, 56)),
    "grey16": encode(".png", photo(40, 56)[:, :, 0].astype(np.uint16) * 257),
    "rgba": encode(".png", np.dstack([photo(40, 56), np.full((40, 56), 9, np.uint8)])),
}


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_damaged_png_is_decoded_or_refused_quietly(
    capfd: pytest.CaptureFixture[str], data: st.DataObject
) -> None:
    png = bytearray(PNGS[data.draw(st.sampled_from(sorted(PNGS)))])
    if data.draw(st.booleans()):
        png = png[: data.draw(st.integers(0, len(png) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 3))):
            png[data.draw(st.integers(0, len(png) - 1))] ^= data.draw(st.integers(1, 255))
    capfd.readouterr()
    try:
        image = decode_image(bytes(png), "damaged.png")
    except EdgeVPRError as exc:
        assert "\n" not in str(exc) and "damaged.png" in str(exc)
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert capfd.readouterr().err == ""
