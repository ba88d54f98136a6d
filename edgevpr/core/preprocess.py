"""Preprocessing, defined once: the spec travels with the model (checkpoint, ONNX metadata,
engine header) and this NumPy/OpenCV implementation is used by training, evaluation,
export parity and the runtime alike, so every stage feeds the network the same pixels.

Spec versions (recorded in every model file, so a file keeps the pixels it was made with):

- **1**: ``cv2.resize`` with the named interpolation. Shrinking a photo far below its size
  this way aliases: a 12-megapixel photo at 128x96 gives descriptors with cosine 0.87-0.97
  to an antialiased resize of the same photo.
- **2** (the default for new models): shrinking is antialiased as in PIL and torchvision's
  ``Resize(antialias=True)``, which the MixVPR authors trained with: a ``bilinear`` (or
  ``bicubic``) kernel stretched over the scale factor, applied as two small matrix products
  after an exact box (``INTER_AREA``) pre-reduction to at most ``PREREDUCE_RATIO`` times the
  target. Descriptors stay within cosine 0.995 of torchvision's on real photos of every size
  measured (benchmarks/results/inputs.md), and large JPEG files are decoded at a reduced
  scale (see :mod:`edgevpr.core.images`). Enlarging is plain interpolation in both.
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.images import read_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

INTERPOLATIONS = {
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "nearest": cv2.INTER_NEAREST,
}


@dataclass(frozen=True)
class PreprocessSpec:
    """How an RGB uint8 image becomes the network's float32 input (1 x 3 x H x W)."""

    height: int = 320
    width: int = 320
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    color: str = "RGB"
    resize_library: str = "opencv"
    version: int = 2
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (8 <= self.height <= 4096 and 8 <= self.width <= 4096):
            raise EdgeVPRError(
                f"preprocess size {self.height}x{self.width} is out of range (8..4096)"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise EdgeVPRError(
                f"unknown interpolation '{self.interpolation}' "
                f"(choose from {', '.join(INTERPOLATIONS)})"
            )
        if self.color != "RGB" or self.resize_library != "opencv":
            raise EdgeVPRError(
                f"unsupported preprocessing: color {self.color}, resize {self.resize_library}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise EdgeVPRError("preprocess mean and std need three values, std > 0")
        if self.version not in VERSIONS:
            raise EdgeVPRError(
                f"preprocessing spec version {self.version} is not supported "
                f"(this edgevpr reads {', '.join(map(str, VERSIONS))}; a newer one wrote it?)"
            )

    @property
    def antialias(self) -> bool:
        """Whether shrinking is antialiased (version 2 on)."""
        return self.version >= 2

    @property
    def decode_size(self) -> tuple[int, int] | None:
        """The size image files may be decoded down towards (large JPEGs at a reduced DCT
        scale), or None where files must be decoded in full (version 1)."""
        return self.size if self.version >= 2 else None

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise EdgeVPRError(f"unknown preprocessing fields: {', '.join(sorted(unknown))}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        values.setdefault("version", 1)  # files from before versions were recorded
        return cls(**values)


VERSIONS = (1, 2)
# Version 2 shrinks by an exact box average to at most this many times the target first:
# the box adds 1 / (2 * ratio^2) to the kernel's variance (under 6 %), and the kernel then
# spans few enough source pixels that its matrix products stay cheap.
PREREDUCE_RATIO = 3
# The interpolations version 2 antialiases (area already averages; nearest stays nearest).
KERNELS = ("bilinear", "bicubic")
CUBIC_A = -0.5  # PIL's and torchvision's bicubic


def read_for_model(path: str | os.PathLike[str], spec: PreprocessSpec) -> np.ndarray:
    """An image file decoded as ``spec`` reads files (upright RGB uint8, not yet resized)."""
    return read_image(path, min_size=spec.decode_size)


def resize_rgb(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Resize an H x W x 3 uint8 RGB image to the spec's size (uint8 out)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise EdgeVPRError(
            f"expected an H x W x 3 uint8 RGB image, got shape {image.shape} {image.dtype}"
        )
    if image.shape[:2] == spec.size:
        return image
    shrinking = image.shape[0] > spec.height or image.shape[1] > spec.width
    if spec.antialias and shrinking and spec.interpolation in KERNELS:
        return antialiased_resize(image, spec.size, spec.interpolation)
    return cv2.resize(
        image, (spec.width, spec.height), interpolation=INTERPOLATIONS[spec.interpolation]
    )


def antialiased_resize(image: np.ndarray, size: tuple[int, int], kernel: str) -> np.ndarray:
    """Resize with ``kernel`` stretched over the scale factor on each shrunk axis (PIL's and
    torchvision's antialiased resize), after an exact box pre-reduction of large images."""
    height, width = size
    source_h, source_w = image.shape[:2]
    box_h = max(1, int(source_h / (height * PREREDUCE_RATIO)))
    box_w = max(1, int(source_w / (width * PREREDUCE_RATIO)))
    if box_h > 1 or box_w > 1:
        reduced = (source_w // box_w, source_h // box_h)
        image = cv2.resize(image, reduced, interpolation=cv2.INTER_AREA)
        source_h, source_w = image.shape[:2]
    pixels = image.astype(np.float32)
    tall = resample(pixels, *resampling_taps(source_h, height, kernel))
    wide = resample(tall.transpose(1, 0, 2), *resampling_taps(source_w, width, kernel))
    return np.clip(np.rint(wide.transpose(1, 0, 2)), 0, 255).astype(np.uint8)


def resample(pixels: np.ndarray, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rows of ``pixels`` (axis 0) resampled: output row j = sum over taps t of
    ``weights[j, t] * pixels[index[j, t]]``.

    A few taps a row in elementwise NumPy rather than a dense matrix product: BLAS would do
    ~60x the work here, and its threads keep spinning after the call, taking the cores
    from the model that runs next (measured on 2 cores, 640x480 -> 320x320: 33.7 ms, then
    MixVPR-R50 in 124 ms instead of 57; with taps 9.1 ms and 57 ms).
    """
    out = weights[:, 0, None, None] * pixels[index[:, 0]]
    for tap in range(1, index.shape[1]):
        out += weights[:, tap, None, None] * pixels[index[:, tap]]
    return out


@functools.lru_cache(maxsize=32)
def resampling_taps(source: int, target: int, kernel: str) -> tuple[np.ndarray, np.ndarray]:
    """(index, weights), each ``target x taps``: output pixel j averages the source pixels
    ``index[j]`` under the kernel centred on it (pixel centres aligned, as in PIL),
    normalised to sum to one. The kernel is stretched by the scale factor when shrinking;
    cached, since a camera's frames all have one size."""
    scale = source / target
    stretch = max(scale, 1.0)
    centres = (np.arange(target) + 0.5) * scale
    offsets = (np.arange(source) + 0.5)[None, :] - centres[:, None]
    weights = kernel_weights(offsets / stretch, kernel)
    weights /= weights.sum(axis=1, keepdims=True)
    used = weights != 0
    first = used.argmax(axis=1)
    taps = int((source - used[:, ::-1].argmax(axis=1) - first).max())
    index = np.minimum(first[:, None] + np.arange(taps), source - 1)
    inside = first[:, None] + np.arange(taps) < source
    taken = np.where(inside, np.take_along_axis(weights, index, axis=1), 0.0)
    return index, taken.astype(np.float32)


def kernel_weights(x: np.ndarray, kernel: str) -> np.ndarray:
    """The interpolation kernel at distances ``x`` (in units of the stretched pixel)."""
    x = np.abs(x)
    if kernel == "bilinear":
        return np.maximum(0.0, 1.0 - x)
    a = CUBIC_A
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def normalize(resized: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Resized uint8 images (N x H x W x 3) -> float32 N x 3 x H x W, mean/std normalised."""
    scale = np.float32(1.0 / 255.0)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    batch = (resized.astype(np.float32) * scale - mean) / std
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def preprocess(images: list[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """RGB uint8 images of any size -> the network's float32 N x 3 x H x W input."""
    if not images:
        raise EdgeVPRError("no images to preprocess")
    return normalize(np.stack([resize_rgb(img, spec) for img in images]), spec)
