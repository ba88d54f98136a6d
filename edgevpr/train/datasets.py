"""A PlaceSet as a torch Dataset: each item is one image, its place label and position.

Pixels go through the runtime's own steps: ``read_for_model`` -> ``resize_rgb`` -> (augment
on uint8) -> ``normalize``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from edgevpr.core.preprocess import PreprocessSpec, normalize, read_for_model, resize_rgb
from edgevpr.data.places import PlaceSet
from edgevpr.train.augment import Augment


class PlaceImages(Dataset):
    """Item i -> (float32 3 x H x W image, place label, float64 (east, north) metres)."""

    def __init__(self, places: PlaceSet, spec: PreprocessSpec, augment: Augment | None = None):
        self.places = places
        self.spec = spec
        self.augment = augment
        # Relative to the set's corner: distances are unchanged and stay exact in float64.
        self.positions = places.utm - places.utm.min(axis=0) if len(places) else places.utm

    def __len__(self) -> int:
        return len(self.places)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        image = resize_rgb(read_for_model(self.places.paths[index], self.spec), self.spec)
        if self.augment is not None:
            image = self.augment(image)
        pixels = normalize(image[None], self.spec)[0]
        return (
            torch.from_numpy(pixels),
            int(self.places.labels[index]),
            torch.from_numpy(np.asarray(self.positions[index], dtype=np.float64)),
        )
