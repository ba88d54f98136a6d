"""What a training run starts from: its device, its seeds and its data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgevpr.core.errors import EdgeVPRError
from edgevpr.data.gsv import is_gsv_cities, read_gsv_cities
from edgevpr.data.layout import EvalSplit, available_splits, read_split
from edgevpr.data.places import PlaceSet, layout_training_set
from edgevpr.model.vpr import VPRModel
from edgevpr.train.config import TrainConfig


def derived_seed(*keys: int) -> int:
    """A 63-bit seed from integers (seed, epoch, rank, ...), the same on every machine."""
    return int(
        np.random.SeedSequence([k & 0xFFFFFFFF for k in keys]).generate_state(2, np.uint64)[0] >> 1
    )


def pick_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise EdgeVPRError(f"--device {name}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EdgeVPRError(f"--device {name}: no CUDA device is available")
    return device


def load_training_data(cfg: TrainConfig) -> tuple[PlaceSet, EvalSplit | None]:
    """The training places and the validation split, by dataset layout."""
    root = Path(cfg.data)
    if not root.is_dir():
        raise EdgeVPRError(f"training data folder {root} does not exist or is not a folder")
    val: EvalSplit | None = None
    if cfg.val_data:
        splits = available_splits(cfg.val_data)
        val = read_split(cfg.val_data, cfg.val_split or ("val" if "val" in splits else "test"))
    if is_gsv_cities(root):
        places = read_gsv_cities(root, list(cfg.cities) if cfg.cities else None)
        return places, val
    if val is None and "val" in available_splits(root):
        val = read_split(root, cfg.val_split or "val")
    fraction = 0.0 if val is not None else cfg.val_fraction
    held = layout_training_set(root, "train", cfg.place_radius, fraction, cfg.radius)
    return held.train, val if val is not None else held.val


def describe_config(cfg: TrainConfig, model: VPRModel) -> str:
    mc = model.config
    weights = "ImageNet" if cfg.pretrained else "random"
    return (
        f"{cfg.model}: {mc.backbone} + {mc.aggregator} ({model.descriptor_dim}-d), input "
        f"{mc.preprocess.height}x{mc.preprocess.width}, {weights} backbone, "
        f"{mc.frozen_stages} frozen stages"
    )
