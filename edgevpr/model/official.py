"""The authors' own checkpoint layouts, each read into an edgevpr config and state dict: one
entry per family in ``LAYOUTS`` (MixVPR, Bag-of-Queries, SALAD), told apart by a key only
that family has, its hyper-parameters read off the tensor shapes.

- MixVPR: ``backbone.model.*`` (torchvision ResNet names, or EfficientNet/VGG) and
  ``aggregator.mix.N.mix.*``, ``channel_proj``, ``row_proj``; the grid gives the input size.
- BoQ: ``aggregator.boqs.N.queries``; a ResNet kept as ``backbone.net.{0,1,4,5,6}`` (conv1,
  bn1, layer1-3 of an ``nn.Sequential``) or DINOv2 as ``backbone.dino.*`` (its last block's
  output, no final norm). Published at 16384-d (ResNet-50, 384 x 384 at test) and 12288-d
  (DINOv2 ViT-B/14, 322 x 322).
- SALAD: ``aggregator.dust_bin``; DINOv2 as ``backbone.model.*`` with its final norm.

Plain DINOv2 weights (``cls_token``, ``pos_embed``, ``blocks.N...``, ``norm``) load into a
DINOv2 backbone with :func:`load_dinov2_weights`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.preprocess import PreprocessSpec
from edgevpr.model.config import ModelConfig, default_preprocess

State = dict[str, torch.Tensor]
MIX_KEY = re.compile(r"^(.*?)aggregator\.mix\.(\d+)\.mix\.0\.weight$")
BOQ_KEY = re.compile(r"^(.*?)aggregator\.boqs\.(\d+)\.queries$")
SALAD_KEY = re.compile(r"^(.*?)aggregator\.dust_bin$")
# BoQ keeps the ResNet trunk as nn.Sequential(conv1, bn1, relu, maxpool, layer1..layer3)
BOQ_RESNET_PARTS = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3"}
DINO_ARCHS = {(384, 12): "dinov2_vits14", (768, 12): "dinov2_vitb14"}
BOQ_RESNET_SIZE, DINO_SIZE = 384, 322


@dataclass(frozen=True)
class Layout:
    """One family's layout: ``read(state, size) -> (config, state in edgevpr names)``."""

    name: str
    source: str  # Checkpoint.source
    key: re.Pattern[str]
    read: Callable[[State, tuple[int, int] | None], tuple[ModelConfig, State]]


def strip_to(state: State, key: re.Pattern[str]) -> State:
    """Remove a wrapper prefix ('model.', 'module.', ...) found in front of ``key``."""
    for name in state:
        match = key.match(name)
        if match:
            prefix = match.group(1)
            return state if not prefix else {
                k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)
            }  # fmt: skip
    raise EdgeVPRError(f"no key matches {key.pattern}")


def count(state: State, pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


# ------------------------------------------------------------------ backbones
def infer_resnet(state: State) -> str:
    """The torchvision ResNet/ResNeXt of ``backbone.model.*`` (or MixVPR's other trunks)."""
    if "backbone.model.features.0.weight" in state:
        return "vgg16"
    if any(k.startswith("backbone.model.blocks.") for k in state):
        return "efficientnet_lite0"
    depth = count(state, r"backbone\.model\.layer3\.(\d+)\.")
    if not depth:
        raise EdgeVPRError("cannot tell the backbone: no backbone.model.layer3 keys")
    if "backbone.model.layer1.0.conv3.weight" not in state:
        return {2: "resnet18", 6: "resnet34"}.get(depth) or unknown_depth(depth)
    conv2 = state["backbone.model.layer1.0.conv2.weight"]
    if conv2.shape[1] != conv2.shape[0] and depth == 6:
        return "resnext50_32x4d"
    return {6: "resnet50", 23: "resnet101"}.get(depth) or unknown_depth(depth)


def unknown_depth(depth: int) -> str:
    raise EdgeVPRError(f"unsupported ResNet variant ({depth} blocks in layer3)")


def renamed(state: State, old: str, new: str) -> State:
    return {(new + k[len(old):] if k.startswith(old) else k): v for k, v in state.items()}


def dino_arch(state: State, prefix: str) -> str:
    dim = state[f"{prefix}cls_token"].shape[-1]
    depth = count(state, re.escape(prefix) + r"blocks\.(\d+)\.")
    if (dim, depth) not in DINO_ARCHS:
        raise EdgeVPRError(f"unsupported DINOv2 variant ({dim}-d, {depth} blocks)")
    return DINO_ARCHS[(dim, depth)]


def square(size: tuple[int, int] | None, default: int) -> tuple[int, int]:
    return size or (default, default)


def config_for(backbone: str, aggregator: str, params: dict[str, Any],
               size: tuple[int, int]) -> ModelConfig:  # fmt: skip
    return ModelConfig(backbone=backbone, aggregator=aggregator, aggregator_params=params,
                       preprocess=default_preprocess(backbone, *size))  # fmt: skip


# ------------------------------------------------------------------ families
def read_mixvpr(state: State, size: tuple[int, int] | None) -> tuple[ModelConfig, State]:
    state = strip_to(state, MIX_KEY)
    depth = count(state, r"aggregator\.mix\.(\d+)\.mix\.0\.weight")
    hw = state["aggregator.mix.0.mix.0.weight"].shape[0]
    hidden = state["aggregator.mix.0.mix.1.weight"].shape[0]
    if size is None:
        side = math.isqrt(hw)
        if side * side != hw:
            raise EdgeVPRError(
                f"the mixer works on a {hw}-cell grid, which is not square: give the input size"
            )
        size = (side * 16, side * 16)
    elif (size[0] // 16) * (size[1] // 16) != hw:
        raise EdgeVPRError(f"input size {size[0]}x{size[1]} does not give the {hw}-cell grid")
    params = {"mix_depth": depth, "mlp_ratio": hidden / hw,
              "out_channels": state["aggregator.channel_proj.weight"].shape[0],
              "out_rows": state["aggregator.row_proj.weight"].shape[0]}  # fmt: skip
    config = ModelConfig(backbone=infer_resnet(state), aggregator="mixvpr",
                         aggregator_params=params,
                         preprocess=PreprocessSpec(height=size[0], width=size[1]))  # fmt: skip
    return config, state


def read_boq(state: State, size: tuple[int, int] | None) -> tuple[ModelConfig, State]:
    state = strip_to(state, BOQ_KEY)
    proj = state["aggregator.proj_c.weight"]
    params = {"proj_channels": proj.shape[0],
              "num_queries": state["aggregator.boqs.0.queries"].shape[1],
              "num_layers": count(state, r"aggregator\.boqs\.(\d+)\.queries"),
              "row_dim": state["aggregator.fc.weight"].shape[0]}  # fmt: skip
    if "backbone.net.0.weight" in state:
        for index, part in BOQ_RESNET_PARTS.items():
            state = renamed(state, f"backbone.net.{index}.", f"backbone.model.{part}.")
        backbone = infer_resnet(state)
        return config_for(backbone, "boq", params, square(size, BOQ_RESNET_SIZE)), state
    if "backbone.dino.cls_token" in state:
        backbone = dino_arch(state, "backbone.dino.") + "_raw"
        state = renamed(state, "backbone.dino.", "backbone.")
        return config_for(backbone, "boq", params, square(size, DINO_SIZE)), state
    raise EdgeVPRError("cannot tell the backbone: no backbone.net or backbone.dino keys")


def read_salad(state: State, size: tuple[int, int] | None) -> tuple[ModelConfig, State]:
    state = strip_to(state, SALAD_KEY)
    params = {"num_clusters": state["aggregator.score.3.weight"].shape[0],
              "cluster_dim": state["aggregator.cluster_features.3.weight"].shape[0],
              "token_dim": state["aggregator.token_features.2.weight"].shape[0]}  # fmt: skip
    backbone = dino_arch(state, "backbone.model.")
    state = renamed(state, "backbone.model.", "backbone.")
    return config_for(backbone, "salad", params, square(size, DINO_SIZE)), state


LAYOUTS = (
    Layout("MixVPR", "mixvpr-official", MIX_KEY, read_mixvpr),
    Layout("Bag-of-Queries", "boq-official", BOQ_KEY, read_boq),
    Layout("SALAD", "salad-official", SALAD_KEY, read_salad),
)


def official_layout(state: State, path: Any) -> Layout:
    """The family whose key ``state`` holds."""
    for layout in LAYOUTS:
        if any(layout.key.match(k) for k in state):
            return layout
    names = ", ".join(layout.name for layout in LAYOUTS)
    raise EdgeVPRError(f"{path} is not a checkpoint edgevpr knows (edgevpr, {names})")


def load_dinov2_weights(backbone: torch.nn.Module, state: State) -> None:
    """Official DINOv2 weights (a ``dinov2_vit*14`` state dict) into a DINOv2 backbone, every
    key and shape checked."""
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        summary = " ".join(str(exc).split())[:240]
        raise EdgeVPRError(f"these DINOv2 weights do not fit the backbone: {summary}") from None
