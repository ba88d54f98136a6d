"""Every registered backbone and aggregator, iterated from the registry: a new part is
tested by registering it, without editing a test."""

from __future__ import annotations

import pytest
import torch

from edgevpr.core.errors import EdgeVPRError
from edgevpr.model import (
    ModelConfig,
    build_model,
    default_preprocess,
    get_preset,
    list_aggregators,
    list_backbones,
    list_models,
)
from edgevpr.model.registry import get_aggregator, get_backbone

# Small settings for the aggregators whose defaults are sized for 1024-channel maps.
SMALL = {
    "mixvpr": {"out_channels": 32, "out_rows": 2, "mix_depth": 2},
    "netvlad": {"clusters": 8},
    "boq": {"proj_channels": 64, "num_queries": 4, "row_dim": 2},
    "salad": {"num_clusters": 4, "cluster_dim": 8, "token_dim": 8},
}


def small_backbone(aggregator: str) -> str:
    """A small backbone that gives what the aggregator reads (a class token too, or not)."""
    return "dinov2_vits14" if get_aggregator(aggregator).takes_token else "resnet18"


@pytest.mark.parametrize("aggregator", list_aggregators())
def test_every_aggregator_gives_unit_descriptors_of_its_size(aggregator: str) -> None:
    backbone = small_backbone(aggregator)
    stride = get_backbone(backbone).stride
    size = (4 * stride, 6 * stride)
    config = ModelConfig(backbone, aggregator, SMALL.get(aggregator, {}),
                         default_preprocess(backbone, *size))  # fmt: skip
    model = build_model(config).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, model.descriptor_dim)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("aggregator", list_aggregators())
def test_every_aggregator_parameter_is_range_checked(aggregator: str) -> None:
    entry = get_aggregator(aggregator)
    assert entry.checked({}) == entry.defaults()
    for name, param in entry.params.items():
        assert entry.checked({name: param.low})[name] == param.low
        for wrong in (param.low - 1, param.high + 1, "1", True):
            with pytest.raises(EdgeVPRError, match=name):
                ModelConfig("resnet18", aggregator, {name: wrong})
    with pytest.raises(EdgeVPRError, match=f"unknown {aggregator} parameters: nope"):
        ModelConfig("resnet18", aggregator, {"nope": 1})


@pytest.mark.parametrize("backbone", list_backbones())
def test_every_backbone_has_its_registered_stride_and_channels(backbone: str) -> None:
    entry = get_backbone(backbone)
    net = entry.factory(False).eval()
    with torch.no_grad():
        features = net(torch.zeros(1, 3, 4 * entry.stride, 6 * entry.stride))
    if entry.returns_token:
        features, token = features
        assert token.shape == (1, entry.out_channels)
    assert features.shape == (1, entry.out_channels, 4, 6)
    spec = default_preprocess(backbone, 64, 96)
    assert (spec.mean, spec.std) == (entry.mean, entry.std)


@pytest.mark.parametrize("name", list_models())
def test_every_preset_names_registered_parts(name: str) -> None:
    config = get_preset(name)
    assert config.backbone in list_backbones() and config.aggregator in list_aggregators()
