"""The model family: paper sizes, descriptor shapes and norms, configs."""

from __future__ import annotations

import pytest
import torch

from edgevpr.core.errors import EdgeVPRError
from edgevpr.model import PRESETS, ModelConfig, build_model, default_preprocess
from edgevpr.model.backbones import RESNET_ARCHS

pytestmark = pytest.mark.slow  # builds every preset at full size (VGG16, ResNet-101, ViT-B)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_configuration_has_the_published_parameter_count() -> None:
    model = build_model("mixvpr_resnet50_4096")
    assert count(model) == 10_880_900
    assert count(model.backbone) == 8_543_296
    assert count(model.aggregator) == 2_337_604
    assert model.descriptor_dim == 4096


def test_resnet50_feature_map_at_320_is_1024x20x20() -> None:
    model = build_model("mixvpr_resnet50_4096").eval()
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, 320, 320))
    assert features.shape == (1, 1024, 20, 20)


@pytest.mark.parametrize("backbone", [*RESNET_ARCHS, "vgg16", "efficientnet_lite0"])
@pytest.mark.parametrize("aggregator", ["mixvpr", "gem", "avg", "mac", "netvlad", "cosplace"])
def test_descriptor_shape_and_unit_norm(backbone: str, aggregator: str) -> None:
    params = {"out_channels": 32, "out_rows": 2, "mix_depth": 2} if aggregator == "mixvpr" else {}
    if aggregator == "netvlad":
        params = {"clusters": 8}
    config = ModelConfig(backbone, aggregator, params, default_preprocess(backbone, 64, 96))
    model = build_model(config).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 64, 96))
    assert out.shape == (3, model.descriptor_dim)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.isfinite(out).all()


def test_mixvpr_flattens_channel_major() -> None:
    """Index c * out_rows + r, as the authors flatten: row r of channel c."""
    model = build_model(
        ModelConfig(
            "resnet18",
            "mixvpr",
            {"out_channels": 8, "out_rows": 3},
            default_preprocess("resnet18", 64, 64),
        )
    ).eval()
    agg = model.aggregator
    feats = torch.randn(2, 256, 4, 4)
    with torch.no_grad():
        x = agg.mix(feats.flatten(2))
        x = agg.channel_proj(x.transpose(1, 2)).transpose(1, 2)
        expected = torch.nn.functional.normalize(agg.row_proj(x).flatten(1), dim=-1)
        grid = agg.row_proj(x)  # 2 x 8 x 3
        assert torch.allclose(agg(feats), expected)
        assert torch.allclose(
            agg(feats)[:, 5 * 3 + 2] / expected.norm(dim=1),
            grid[:, 5, 2] / grid.flatten(1).norm(dim=1),
        )


def test_every_preset_builds_by_name() -> None:
    for name, config in PRESETS.items():
        assert build_model(name).config == config


def test_lite0_presets_use_lite_normalisation() -> None:
    spec = PRESETS["mixvpr_lite0_512"].preprocess
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.5, 0.5, 0.5)
    assert PRESETS["mixvpr_resnet50_4096"].preprocess.mean == (0.485, 0.456, 0.406)


def test_freeze_stops_gradients_in_stem_layer1_layer2_only() -> None:
    model = build_model("mixvpr_resnet18_4096")
    model.freeze()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("backbone.model.conv1") for n in frozen)
    assert any(n.startswith("backbone.model.layer2") for n in frozen)
    assert not any(n.startswith("backbone.model.layer3") for n in frozen)
    assert not any(n.startswith("aggregator") for n in frozen)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"aggregator": "vlad"}, "unknown aggregator"),
        ({"aggregator_params": {"out_rows": 0}}, "out of range"),
        ({"aggregator_params": {"mix_depth": "4"}}, "must be a number"),
        ({"aggregator_params": {"clusters": 8}}, "unknown mixvpr parameters"),
        ({"preprocess": default_preprocess("resnet50", 100, 100)}, "multiple of 16"),
        ({"frozen_stages": -1}, "out of range"),
    ],
)
def test_bad_configs_are_refused_in_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(EdgeVPRError, match=message) as info:
        ModelConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_unknown_backbone_and_preset_are_refused() -> None:
    with pytest.raises(EdgeVPRError, match="unknown backbone"):
        build_model(ModelConfig(backbone="resnet9000"))
    with pytest.raises(EdgeVPRError, match="unknown model"):
        build_model("mixvpr_nope")


def test_config_dict_round_trip() -> None:
    config = PRESETS["mixvpr_lite0_512"].with_size(128, 256)
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_torchvision_weights_offline_give_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.error

    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(EdgeVPRError, match="resnet18-f37072fd.pth") as info:
        build_model("mixvpr_resnet18_4096", pretrained=True)
    assert "\n" not in str(info.value)
