"""A corpus of bad (and awkward-but-valid) inputs, generated on the fly, never downloaded.

Each maker writes one file into a folder and returns its path. ``IMAGES_OK`` must decode;
``IMAGES_BAD`` must be refused with a one-line error.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

RNG = np.random.default_rng(7)


def photo(height: int = 48, width: int = 64) -> np.ndarray:
    """A smooth, textured BGR image (not noise)."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 4 % 256, y * 5 % 256, (x + y) * 3 % 256], axis=-1)
    return base.astype(np.uint8)


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def encode(ext: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_with_header(width: int, height: int, body: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(body)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def palette_png() -> bytes:
    """An 8-bit indexed-colour PNG, written by hand (OpenCV never writes palettes)."""
    width, height = 16, 8
    palette = bytes(range(0, 48))  # 16 RGB entries
    rows = b"".join(b"\x00" + bytes(x % 16 for x in range(width)) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"PLTE", palette)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def decompression_bomb() -> bytes:
    """A tiny PNG that announces a 60000 x 60000 image (3.6 gigapixels, ~10 GB decoded)."""
    row = b"\x00" + b"\x00" * (60000 * 3)
    compressor = zlib.compressobj(9)
    body = compressor.compress(row * 4) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body)


IMAGES_OK: dict[str, Callable[[Path], Path]] = {
    "rgb-jpeg": lambda d: write(d, "rgb.jpg", encode(".jpg", photo())),
    "rgb-png": lambda d: write(d, "rgb.png", encode(".png", photo())),
    "grey-png": lambda d: write(d, "grey.png", encode(".png", photo()[:, :, 0])),
    "rgba-png": lambda d: write(
        d, "rgba.png", encode(".png", np.dstack([photo(), np.full((48, 64), 128, np.uint8)]))
    ),
    "16bit-png": lambda d: write(d, "deep.png", encode(".png", photo().astype(np.uint16) * 257)),
    "16bit-grey-png": lambda d: write(
        d, "deepgrey.png", encode(".png", photo()[:, :, 1].astype(np.uint16) * 257)
    ),
    "palette-png": lambda d: write(d, "palette.png", palette_png()),
    "png-named-jpg": lambda d: write(d, "mislabelled.jpg", encode(".png", photo())),
    "tiny-1x1": lambda d: write(d, "tiny.png", encode(".png", photo(1, 1))),
    "bmp": lambda d: write(d, "rgb.bmp", encode(".bmp", photo())),
}

IMAGES_BAD: dict[str, Callable[[Path], Path]] = {
    "zero-byte": lambda d: write(d, "empty.jpg", b""),
    "truncated-jpeg": lambda d: write(d, "cut.jpg", encode(".jpg", photo())[:40]),
    "truncated-png": lambda d: write(d, "cut.png", encode(".png", photo())[:60]),
    "text-named-jpg": lambda d: write(d, "notes.jpg", b"this is not an image\n" * 10),
    "random-bytes": lambda d: write(d, "noise.png", RNG.integers(0, 256, 4096, np.uint8).tobytes()),
    "decompression-bomb": lambda d: write(d, "bomb.png", decompression_bomb()),
    "absurd-header": lambda d: write(d, "huge.png", png_with_header(2**31 - 1, 2**31 - 1)),
    "zero-size-header": lambda d: write(d, "zero.png", png_with_header(0, 0)),
    "directory": lambda d: (d / "folder.jpg").mkdir() or (d / "folder.jpg"),
    "missing": lambda d: d / "does-not-exist.jpg",
}
