"""Training augmentation, applied to the resized uint8 image between the runtime's
``resize_rgb`` and ``normalize``, so training sees the pixels the runtime would see, plus
the augmentation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torchvision.transforms import v2

from edgevpr.core.errors import EdgeVPRError

Augment = Callable[[np.ndarray], np.ndarray]
AUGMENTS = ("randaugment", "light", "none")


def build_augment(name: str) -> Augment | None:
    """'randaugment': the MixVPR recipe (RandAugment, 3 ops, bilinear); 'light': colour
    jitter and a small shift, for very small images; 'none'. Randomness comes from torch's
    generator, which the trainer seeds."""
    if name == "none":
        return None
    if name == "randaugment":
        transform = v2.RandAugment(num_ops=3, interpolation=v2.InterpolationMode.BILINEAR)
    elif name == "light":
        transform = v2.Compose(
            [
                v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.3, hue=0.02),
                v2.RandomAffine(
                    degrees=3,
                    translate=(0.05, 0.05),
                    scale=(0.9, 1.1),
                    interpolation=v2.InterpolationMode.BILINEAR,
                ),
            ]
        )
    else:
        raise EdgeVPRError(f"unknown augmentation '{name}' (choose from {', '.join(AUGMENTS)})")

    def apply(image: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return transform(tensor).permute(1, 2, 0).contiguous().numpy()

    return apply
