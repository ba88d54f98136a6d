"""EXIF orientation: the pixels a viewer shows, not the pixels a camera stored.

Phones and many cameras store the sensor's rows as they came and record in an EXIF
``Orientation`` tag (0x0112) how to turn them upright. Viewers apply it; OpenCV applies it
only when asked (``IMREAD_COLOR`` without ``IMREAD_IGNORE_ORIENTATION``) and not at all with
``IMREAD_UNCHANGED``, which keeps 16-bit and grey images as they are. So the tag is read here,
from JPEG (APP1), PNG (eXIf), and WebP (EXIF chunk) files, and applied after decoding.
TIFF files are different: the orientation is a tag of the image itself, and OpenCV's TIFF
decoder applies it whatever the flags (a test checks all eight values).

Every read is bounded and defensive: a damaged or hostile EXIF block gives orientation 1
(as stored), never an error or a read past the data.
"""

from __future__ import annotations

import struct

import numpy as np

TAG_ORIENTATION = 0x0112
TYPE_SHORT = 3
TIFF_LITTLE, TIFF_BIG = b"II*\x00", b"MM\x00*"
EXIF_PREFIX = b"Exif\x00\x00"
JPEG_SOI = b"\xff\xd8"
JPEG_APP1, JPEG_SOS, JPEG_EOI = 0xE1, 0xDA, 0xD9
# Start-of-frame markers carry the image size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}
MAX_IFD_ENTRIES = 1024
ORIENTATIONS = range(1, 9)


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels upright for an EXIF orientation 1..8 (others: unchanged).

    2 mirrors left-right, 3 turns 180 degrees, 4 mirrors top-bottom, 5 transposes, 6 turns
    90 degrees clockwise, 7 transposes across the other diagonal, 8 turns 90 degrees
    counter-clockwise. Works for H x W and H x W x C arrays; returns a contiguous array.
    """
    if orientation == 2:
        image = image[:, ::-1]
    elif orientation == 3:
        image = image[::-1, ::-1]
    elif orientation == 4:
        image = image[::-1]
    elif orientation == 5:
        image = image.swapaxes(0, 1)
    elif orientation == 6:
        image = image.swapaxes(0, 1)[:, ::-1]
    elif orientation == 7:
        image = image.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:
        image = image.swapaxes(0, 1)[::-1]
    return np.ascontiguousarray(image)


def swaps_axes(orientation: int) -> bool:
    """Whether upright pixels have the stored image's width as their height."""
    return orientation in (5, 6, 7, 8)


def tiff_orientation(block: bytes) -> int:
    """The Orientation tag of IFD0 in a TIFF-structured block (an EXIF payload), else 1."""
    if len(block) < 8 or block[:4] not in (TIFF_LITTLE, TIFF_BIG):
        return 1
    order = "<" if block[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", block, 4)
    if ifd + 2 > len(block):
        return 1
    (count,) = struct.unpack_from(order + "H", block, ifd)
    for entry in range(min(count, MAX_IFD_ENTRIES)):
        offset = ifd + 2 + 12 * entry
        if offset + 12 > len(block):
            return 1
        tag, kind, values = struct.unpack_from(order + "HHI", block, offset)
        if tag == TAG_ORIENTATION:
            if kind != TYPE_SHORT or values < 1:
                return 1
            (value,) = struct.unpack_from(order + "H", block, offset + 8)
            return value if value in ORIENTATIONS else 1
    return 1


def jpeg_header(data: bytes | memoryview) -> tuple[int, tuple[int, int] | None]:
    """(EXIF orientation, stored (height, width) or None) of a JPEG, read from its markers
    up to the first scan; (1, None) when it is not a readable JPEG."""
    if data[:2] != JPEG_SOI:
        return 1, None
    orientation, size, position = 1, None, 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in JPEG_STANDALONE:
            position += 2
            continue
        if marker in (JPEG_SOS, JPEG_EOI):
            break
        (length,) = struct.unpack_from(">H", data, position + 2)
        body = data[position + 4 : position + 2 + length]
        if length < 2 or len(body) != length - 2:
            break
        if marker == JPEG_APP1 and body[: len(EXIF_PREFIX)] == EXIF_PREFIX and orientation == 1:
            orientation = tiff_orientation(bytes(body[len(EXIF_PREFIX) :]))
        elif marker in JPEG_SOF and len(body) >= 5 and size is None:
            height, width = struct.unpack_from(">HH", body, 1)
            size = (height, width) if height and width else None
        position += 2 + length
    return orientation, size


def webp_orientation(data: bytes | memoryview) -> int:
    """The EXIF orientation of a WebP file (its RIFF ``EXIF`` chunk), else 1."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return 1
    position = 12
    while position + 8 <= len(data):
        kind = data[position : position + 4]
        (length,) = struct.unpack_from("<I", data, position + 4)
        body = data[position + 8 : position + 8 + length]
        if kind == b"EXIF":
            block = bytes(body)
            return tiff_orientation(block.removeprefix(EXIF_PREFIX))
        position += 8 + length + (length & 1)
    return 1
