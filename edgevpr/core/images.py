"""Safe image decoding: any common file becomes the H x W x 3 uint8 RGB array a viewer
shows, or a one-line EdgeVPRError naming the file.

- 16-bit, grey, RGBA and palette images are accepted and converted like arrays of the
  matching encoding (:mod:`edgevpr.core.pixels`).
- The EXIF orientation is applied (:mod:`edgevpr.core.orientation`), so a phone photo
  is upright, as ``cv2.imread`` and every viewer show it.
- Decompression bombs are refused before any pixel is decoded.
- Large JPEGs can be decoded at 1/2, 1/4 or 1/8 scale by libjpeg's DCT scaling when the
  caller will shrink them far more anyway (``min_size``): several times faster. Whether a
  model's files are read so is part of its preprocessing spec (version 2).
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from edgevpr.core.checks import file_path
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.orientation import (
    apply_orientation,
    jpeg_header,
    swaps_axes,
    tiff_orientation,
    webp_orientation,
)
from edgevpr.core.pixels import MAX_PIXELS, to_rgb8

MAX_FILE_BYTES = 256 * 1024 * 1024
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# Reduced JPEG decoding keeps at least this many stored pixels per model input pixel on both
# axes; the measured descriptor cosine to a full decode is in benchmarks/results/inputs.md.
REDUCED_DECODE_MARGIN = 2
REDUCED_FLAGS = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHUNK = struct.Struct(">I4s")  # data length, type; then the data and a CRC of type + data
PNG_CRC = struct.Struct(">I")
PNG_SIZE = struct.Struct(">II")  # IHDR starts with width, height
PNG_IHDR_SIZE = 13

# OpenCV's own ceiling, applied when it parses the header, before it allocates.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))
# A bad file is reported once, as our one-line error; OpenCV would also log its own warning
# (e.g. "PNG input buffer is incomplete") to stderr. The user's OPENCV_LOG_LEVEL wins.
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)


def read_image(
    path: str | os.PathLike[str], min_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode ``path`` to upright RGB uint8 (H x W x 3).

    ``min_size`` (height, width): the size the caller will shrink the image to; a JPEG much
    larger than it may be decoded at a reduced scale that stays well above it.
    """
    path = file_path(path, "image")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise EdgeVPRError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if not path.is_file():
        raise EdgeVPRError(f"cannot read image {path}: not a file")
    if size == 0:
        raise EdgeVPRError(f"cannot read image {path}: the file is empty")
    if size > MAX_FILE_BYTES:
        raise EdgeVPRError(f"cannot read image {path}: {size} bytes is larger than allowed")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise EdgeVPRError(f"cannot read image {path}: {exc.strerror or exc}") from None
    return decode_image(data, str(path), min_size)


def decode_image(
    data: bytes | np.ndarray, name: str = "<bytes>", min_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode an encoded image held in memory to upright RGB uint8 (H x W x 3)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        buffer = np.frombuffer(data, dtype=np.uint8)
    elif isinstance(data, np.ndarray) and data.dtype == np.uint8:
        buffer = np.ascontiguousarray(data).reshape(-1)
    else:
        raise EdgeVPRError(f"cannot read image {name}: expected encoded bytes")
    if buffer.size == 0:
        raise EdgeVPRError(f"cannot read image {name}: the file is empty")
    view = memoryview(buffer)
    png_exif = _check_png(view, name)
    orientation, flags = 1, cv2.IMREAD_UNCHANGED
    if png_exif is not None:
        orientation = tiff_orientation(png_exif)
    elif view[:4] == b"RIFF":
        orientation = webp_orientation(view)
    else:
        orientation, stored = jpeg_header(view)
        factor = reduction_factor(stored, orientation, min_size)
        if factor > 1:
            flags = REDUCED_FLAGS[factor] | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        image = cv2.imdecode(buffer, flags)
    except cv2.error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "decoder error"
        raise EdgeVPRError(f"cannot read image {name}: {reason}") from None
    if image is None or image.size == 0:
        raise EdgeVPRError(f"cannot read image {name}: not a supported or intact image file")
    return decoded_to_rgb8(apply_orientation(image, orientation), name)


def reduction_factor(
    stored: tuple[int, int] | None, orientation: int, min_size: tuple[int, int] | None
) -> int:
    """The largest JPEG DCT scale-down (1, 2, 4 or 8) that keeps the upright image at least
    ``REDUCED_DECODE_MARGIN`` times ``min_size`` on both axes."""
    if stored is None or min_size is None:
        return 1
    height, width = stored[::-1] if swaps_axes(orientation) else stored
    for factor in (8, 4, 2):
        reduced = (math.ceil(height / factor), math.ceil(width / factor))
        if all(r >= REDUCED_DECODE_MARGIN * m for r, m in zip(reduced, min_size, strict=True)):
            return factor
    return 1


def _check_png(data: memoryview, name: str) -> bytes | None:
    """Walk a PNG's chunks before libpng sees it: a cut file, a damaged chunk (every chunk
    carries a CRC) or a header announcing no pixels or too many is refused here, in one
    line, where libpng would print its own complaints to stderr first.

    Returns the payload of its ``eXIf`` chunk (b"" when it has none); None for other files.
    """
    if bytes(data[: len(PNG_SIGNATURE)]) != PNG_SIGNATURE:
        return None
    exif = b""
    position = len(PNG_SIGNATURE)
    while True:
        if position + PNG_CHUNK.size + PNG_CRC.size > len(data):
            raise EdgeVPRError(f"cannot read image {name}: the PNG file is cut short")
        length, kind = PNG_CHUNK.unpack_from(data, position)
        end = position + PNG_CHUNK.size + length + PNG_CRC.size
        if end > len(data):
            raise EdgeVPRError(f"cannot read image {name}: the PNG file is cut short")
        (crc,) = PNG_CRC.unpack_from(data, end - PNG_CRC.size)
        critical = not kind[0] & 0x20  # libpng only warns about (and skips) damaged others
        if critical and zlib.crc32(data[position + 4 : end - PNG_CRC.size]) != crc:
            # a damaged type can hold any byte (a newline too): letters only, else hex
            chunk = kind.decode("ascii") if kind.isalpha() else f"0x{kind.hex()}"
            raise EdgeVPRError(f"cannot read image {name}: damaged PNG (bad CRC in {chunk})")
        if position == len(PNG_SIGNATURE):
            header = bytes(data[position + PNG_CHUNK.size : end - PNG_CRC.size])
            _check_png_header(kind, header, name)
        if kind == b"eXIf" and not exif:
            exif = bytes(data[position + PNG_CHUNK.size : end - PNG_CRC.size])
        if kind == b"IEND":
            return exif
        position = end


def _check_png_header(kind: bytes, ihdr: bytes, name: str) -> None:
    if kind != b"IHDR" or len(ihdr) != PNG_IHDR_SIZE:
        raise EdgeVPRError(f"cannot read image {name}: the PNG file has no valid header")
    width, height = PNG_SIZE.unpack_from(ihdr)
    if width == 0 or height == 0:
        raise EdgeVPRError(f"cannot read image {name}: its header says {width}x{height} pixels")
    if width * height > MAX_PIXELS:
        raise EdgeVPRError(f"cannot read image {name}: {width}x{height} is too large")


# What an OpenCV decode result holds, by channel count, as a pixel encoding.
DECODED_ENCODINGS = {1: "mono8", 3: "bgr8", 4: "bgra8"}


def decoded_to_rgb8(image: np.ndarray, name: str) -> np.ndarray:
    """Any OpenCV decode result (grey, BGR, BGRA; 8/16-bit or float) -> RGB uint8, through
    the same conversion as arrays of the matching encoding."""
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise EdgeVPRError(
            f"cannot read image {name}: {image.shape[1]}x{image.shape[0]} is too large"
        )
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = np.clip(image * 255.0, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise EdgeVPRError(f"cannot read image {name}: unsupported pixel type {image.dtype}")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels not in DECODED_ENCODINGS:
        raise EdgeVPRError(f"cannot read image {name}: {channels} channels are not supported")
    return to_rgb8(image, DECODED_ENCODINGS[channels], f"image {name}")


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeVPRError(f"image folder {folder} does not exist or is not a folder")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
