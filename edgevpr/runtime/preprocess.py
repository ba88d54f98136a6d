"""Preprocessing, defined once: the spec travels with the model (checkpoint, ONNX metadata,
engine header) and this NumPy/OpenCV implementation is used by training, evaluation,
export parity and the runtime alike, so every stage feeds the network the same pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from edgevpr.errors import EdgeVPRError

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
    version: int = 1
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
        if values.get("version", 1) != 1:
            raise EdgeVPRError(f"preprocessing spec version {values['version']} is not supported")
        return cls(**values)


def resize_rgb(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Resize an H x W x 3 uint8 RGB image to the spec's size (uint8 out)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise EdgeVPRError(
            f"expected an H x W x 3 uint8 RGB image, got shape {image.shape} {image.dtype}"
        )
    if image.shape[:2] == spec.size:
        return image
    return cv2.resize(
        image, (spec.width, spec.height), interpolation=INTERPOLATIONS[spec.interpolation]
    )


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
