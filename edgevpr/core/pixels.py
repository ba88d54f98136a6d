"""The pixel contract: how an array of pixels says what it holds.

Arrays carry no colour order, so every public function that takes pixel arrays takes an
``encoding`` named as ROS's ``sensor_msgs/Image`` names it. ``cv2.imread`` and
``cv2.VideoCapture`` give ``"bgr8"``; PIL, imageio and most camera SDKs give ``"rgb8"``.
The default is ``DEFAULT_ENCODING`` (``"rgb8"``), in this one place.

``to_rgb8`` turns any listed encoding into the H x W x 3 uint8 RGB array that preprocessing
takes. 16-bit grey keeps its high byte, exactly as a 16-bit image file does when decoded,
so an array and the same image as a file give the same descriptor.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edgevpr.core.checks import shown
from edgevpr.core.errors import EdgeVPRError

# Refuse anything larger than this many pixels (about a 100-megapixel photo): a crafted
# file header can announce gigapixels and make a decoder allocate gigabytes.
MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class Encoding:
    """One ROS image encoding: its channels, sample type and the conversion to RGB."""

    channels: int
    dtype: type
    to_rgb: int | None  # an OpenCV cvtColor code; None: already RGB


ENCODINGS: dict[str, Encoding] = {
    "rgb8": Encoding(3, np.uint8, None),
    "bgr8": Encoding(3, np.uint8, cv2.COLOR_BGR2RGB),
    "rgba8": Encoding(4, np.uint8, cv2.COLOR_RGBA2RGB),
    "bgra8": Encoding(4, np.uint8, cv2.COLOR_BGRA2RGB),
    "mono8": Encoding(1, np.uint8, cv2.COLOR_GRAY2RGB),
    "mono16": Encoding(1, np.uint16, cv2.COLOR_GRAY2RGB),
    "16UC1": Encoding(1, np.uint16, cv2.COLOR_GRAY2RGB),
}
DEFAULT_ENCODING = "rgb8"


def check_encoding(encoding: object) -> Encoding:
    """The named encoding, or a one-line error listing the supported ones."""
    if not isinstance(encoding, str) or encoding not in ENCODINGS:
        raise EdgeVPRError(
            f"unknown pixel encoding {shown(encoding)} (supported: {', '.join(ENCODINGS)})"
        )
    return ENCODINGS[encoding]


def to_rgb8(pixels: object, encoding: str = DEFAULT_ENCODING, name: str = "image") -> np.ndarray:
    """Pixels in ``encoding`` -> H x W x 3 uint8 RGB (the input itself when already so).

    Grey images may be H x W or H x W x 1. Anything that does not fit the encoding (shape,
    sample type, empty, too large) is a one-line error naming ``name``.
    """
    spec = check_encoding(encoding)
    if not isinstance(pixels, np.ndarray):
        raise EdgeVPRError(f"{name}: expected a NumPy array of pixels, not {type(pixels).__name__}")
    shape = pixels.shape
    channels = 1 if pixels.ndim == 2 else shape[2] if pixels.ndim == 3 else -1
    if channels != spec.channels or pixels.dtype != spec.dtype:
        raise EdgeVPRError(
            f"{name}: encoding '{encoding}' needs H x W{_channel_text(spec.channels)} "
            f"{np.dtype(spec.dtype).name} pixels, got {shape} {pixels.dtype}"
        )
    if shape[0] == 0 or shape[1] == 0:
        raise EdgeVPRError(f"{name}: is empty ({shape[1]}x{shape[0]})")
    if shape[0] * shape[1] > MAX_PIXELS:
        raise EdgeVPRError(f"{name}: {shape[1]}x{shape[0]} is too large")
    if spec.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if spec.to_rgb is None:
        return pixels
    if pixels.ndim == 3 and spec.channels == 1:
        pixels = pixels[:, :, 0]
    return cv2.cvtColor(np.ascontiguousarray(pixels), spec.to_rgb)


def _channel_text(channels: int) -> str:
    return "" if channels == 1 else f" x {channels}"
