"""Safe image decoding: any common file becomes an H x W x 3 uint8 RGB array, or a
one-line EdgeVPRError naming the file. 16-bit, grey, RGBA and palette images are accepted;
decompression bombs are refused before any pixel is decoded.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from edgevpr.errors import EdgeVPRError

# Refuse anything larger than this many pixels (about a 100-megapixel photo): a crafted
# header can announce gigapixels and make the decoder allocate gigabytes.
MAX_PIXELS = 100_000_000
MAX_FILE_BYTES = 256 * 1024 * 1024
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

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


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode ``path`` to RGB uint8 (H x W x 3)."""
    path = Path(path)
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
    return decode_image(data, str(path))


def decode_image(data: bytes | np.ndarray, name: str = "<bytes>") -> np.ndarray:
    """Decode an encoded image held in memory to RGB uint8 (H x W x 3)."""
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    if buffer.size == 0:
        raise EdgeVPRError(f"cannot read image {name}: the file is empty")
    _check_png(buffer, name)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "decoder error"
        raise EdgeVPRError(f"cannot read image {name}: {reason}") from None
    if image is None or image.size == 0:
        raise EdgeVPRError(f"cannot read image {name}: not a supported or intact image file")
    return to_rgb8(image, name)


def _check_png(buffer: np.ndarray, name: str) -> None:
    """Walk a PNG's chunks before libpng sees it: a cut file, a damaged chunk (every chunk
    carries a CRC) or a header announcing no pixels or too many is refused here, in one
    line, where libpng would print its own complaints to stderr first."""
    data = memoryview(np.ascontiguousarray(buffer).reshape(-1).view(np.uint8))
    if bytes(data[: len(PNG_SIGNATURE)]) != PNG_SIGNATURE:
        return
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
            chunk = kind.decode("latin-1")
            raise EdgeVPRError(f"cannot read image {name}: damaged PNG (bad CRC in {chunk})")
        if position == len(PNG_SIGNATURE):
            header = bytes(data[position + PNG_CHUNK.size : end - PNG_CRC.size])
            _check_png_header(kind, header, name)
        if kind == b"IEND":
            return
        position = end


def _check_png_header(kind: bytes, ihdr: bytes, name: str) -> None:
    if kind != b"IHDR" or len(ihdr) != PNG_IHDR_SIZE:
        raise EdgeVPRError(f"cannot read image {name}: the PNG file has no valid header")
    width, height = PNG_SIZE.unpack_from(ihdr)
    if width == 0 or height == 0:
        raise EdgeVPRError(f"cannot read image {name}: its header says {width}x{height} pixels")
    if width * height > MAX_PIXELS:
        raise EdgeVPRError(f"cannot read image {name}: {width}x{height} is too large")


def to_rgb8(image: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Any OpenCV decode result (grey, BGR, BGRA; 8/16-bit or float) -> RGB uint8."""
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
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise EdgeVPRError(f"cannot read image {name}: {channels} channels are not supported")


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeVPRError(f"image folder {folder} does not exist or is not a folder")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
