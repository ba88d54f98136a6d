"""Checkpoints: one self-describing format, and direct loading of the MixVPR authors' files.

Everything is read with ``torch.load(weights_only=True)``: a file that would need to run
code to unpickle is refused, never executed.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgevpr import __version__
from edgevpr.core.errors import EdgeVPRError, first_line
from edgevpr.core.files import atomic_open, file_sha256
from edgevpr.core.provenance import utc_now
from edgevpr.model.config import ModelConfig
from edgevpr.model.official import official_layout
from edgevpr.model.vpr import VPRModel, build_model

FORMAT = "edgevpr.checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, CPU) and what the file said about it."""

    model: VPRModel
    source: str  # "edgevpr" or "mixvpr-official"
    provenance: dict[str, Any] = field(default_factory=dict)
    training_state: dict[str, Any] | None = None
    sha256: str = ""

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` that a crash cannot tear (see :mod:`edgevpr.core.files`)."""
    with atomic_open(path) as fh:
        torch.save(obj, fh)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: VPRModel,
    provenance: dict[str, Any] | None = None,
    training_state: dict[str, Any] | None = None,
) -> None:
    """Save ``model`` in the edgevpr format (atomically)."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "edgevpr_version": __version__,
        "config": model.config.to_dict(),
        "descriptor_dim": model.descriptor_dim,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "provenance": {
            "created": utc_now(),
            **(provenance or {}),
        },
    }
    if training_state is not None:
        payload["training_state"] = training_state
    atomic_torch_save(payload, path)


def read_safely(path: str | os.PathLike[str]) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into one line."""
    path = Path(path)
    if not path.is_file():
        raise EdgeVPRError(f"checkpoint {path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise EdgeVPRError(f"checkpoint {path} is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = first_line(exc)
        if "Weights only load failed" in first or "Unsupported" in str(exc):
            raise EdgeVPRError(
                f"refusing to load {path}: it holds Python objects that would run code when "
                "unpickled; only tensors and plain data are accepted"
            ) from None
        raise EdgeVPRError(f"checkpoint {path} is corrupt ({first})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file fails anywhere in the unpickler
        raise EdgeVPRError(
            f"checkpoint {path} is truncated or corrupt ({first_line(exc, 160)})"
        ) from None


def load_checkpoint(
    path: str | os.PathLike[str], size: tuple[int, int] | None = None
) -> Checkpoint:
    """Load an edgevpr checkpoint, or an official MixVPR one (raw or Lightning-wrapped).

    ``size`` overrides the input size inferred for official files whose grid is not square.
    """
    data = read_safely(path)
    if not isinstance(data, dict):
        raise EdgeVPRError(f"{path} is not a checkpoint (top level is {type(data).__name__})")
    if data.get("format") == FORMAT:
        ckpt = from_edgevpr(data, path)
    else:
        state = data.get("state_dict", data)
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            raise EdgeVPRError(f"{path} is neither an edgevpr checkpoint nor a state dict")
        ckpt = from_official(state, path, size)
    ckpt.sha256 = file_sha256(path)
    return ckpt


def from_edgevpr(data: dict[str, Any], path: str | os.PathLike[str]) -> Checkpoint:
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise EdgeVPRError(
            f"checkpoint {path} has format version {version}; this edgevpr reads {FORMAT_VERSION}"
        )
    state = data.get("state_dict")
    if "config" not in data or not isinstance(state, dict):
        raise EdgeVPRError(f"checkpoint {path} is incomplete: it needs a config and a state_dict")
    try:
        config = ModelConfig.from_dict(data["config"])
    except (TypeError, ValueError) as exc:
        raise EdgeVPRError(f"checkpoint {path} has a broken model config ({exc})") from None
    except EdgeVPRError as exc:
        raise EdgeVPRError(f"checkpoint {path} has a broken model config: {exc}") from None
    model = build_model(config)
    load_strict(model, state, path)
    provenance = data.get("provenance")
    return Checkpoint(
        model=model.eval(),
        source="edgevpr",
        provenance=dict(provenance) if isinstance(provenance, dict) else {},
        training_state=training_state_of(data, path),
    )


def training_state_of(data: dict[str, Any], path: Any) -> dict[str, Any] | None:
    state = data.get("training_state")
    if state is not None and not isinstance(state, dict):
        raise EdgeVPRError(f"checkpoint {path} has a broken training state")
    return state


def load_strict(model: VPRModel, state: dict[str, torch.Tensor], path: Any) -> None:
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise EdgeVPRError(f"checkpoint {path} has a state_dict that is not all named tensors")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        summary = " ".join(str(exc).split())[:240]
        raise EdgeVPRError(f"checkpoint {path} does not match its model: {summary}") from None


def from_official(
    state: dict[str, torch.Tensor], path: Any, size: tuple[int, int] | None
) -> Checkpoint:
    """A checkpoint of the authors' own layout (MixVPR, BoQ, SALAD), its configuration read
    off the tensor shapes."""
    layout = official_layout(state, path)
    try:
        config, state = layout.read(state, size)
    except EdgeVPRError as exc:
        raise EdgeVPRError(f"{path} is not a {layout.name} checkpoint: {exc}") from None
    except KeyError as exc:
        raise EdgeVPRError(f"{path} is not a {layout.name} checkpoint: missing {exc}") from None
    # Lightning files may carry extra keys for the loss/miner; only the model's are loaded.
    state = {k: v for k, v in state.items() if k.startswith(("backbone.", "aggregator."))}
    model = build_model(config)
    load_strict(model, state, path)
    return Checkpoint(
        model=model.eval(),
        source=layout.source,
        provenance={"origin": f"{layout.name} authors' release", "file": Path(path).name},
    )


def describe_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``edgevpr info`` for a checkpoint file."""
    return describe(load_checkpoint(path))


def describe(ckpt: Checkpoint) -> dict[str, Any]:
    """What ``edgevpr info`` prints for a checkpoint."""
    model = ckpt.model
    config = model.config
    backbone_params = sum(p.numel() for p in model.backbone.parameters())
    aggregator_params = sum(p.numel() for p in model.aggregator.parameters())
    return {
        "kind": f"PyTorch checkpoint ({ckpt.source})",
        "architecture": f"{config.backbone} + {config.aggregator} {config.params}",
        "parameters": f"{backbone_params + aggregator_params:,} "
        f"(backbone {backbone_params:,}, aggregator {aggregator_params:,})",
        "descriptor": f"{model.descriptor_dim}-d, L2-normalised",
        "input": f"3x{config.preprocess.height}x{config.preprocess.width}",
        "preprocessing": config.preprocess.to_dict(),
        "provenance": ckpt.provenance,
        "sha256": ckpt.sha256,
    }
