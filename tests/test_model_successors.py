"""MixVPR's successors: Bag-of-Queries (ResNet and DINOv2) and DINOv2-SALAD.

- the DINOv2 backbone has the official parameter names and shapes (ViT-B/14 listed here), so
  official DINOv2 weights load strictly; its position table is resized once in eval mode;
- the authors' checkpoint layouts (BoQ ``backbone.net``/``backbone.dino``, SALAD
  ``backbone.model``) load strictly, their configuration read off the shapes;
- every trainable block receives gradients from our losses;
- SALAD's transport plan has the masses it should;
- each family exports to ONNX, passes the FP32 gate through the runtime, and its graph holds
  no Resize for the position table.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from edgevpr.core.errors import EdgeVPRError
from edgevpr.model import ModelConfig, build_model, default_preprocess, get_preset
from edgevpr.model.checkpoint import load_checkpoint, save_checkpoint
from edgevpr.model.official import BOQ_RESNET_PARTS, load_dinov2_weights
from edgevpr.model.salad import log_optimal_transport
from edgevpr.model.vit import PRETRAINED_GRID

pytestmark = pytest.mark.slow  # full-size BoQ / SALAD / DINOv2 models and their exports

TINY = {
    "boq-resnet": ("resnet18", "boq", {"proj_channels": 64, "num_queries": 4, "row_dim": 4}, 64),
    "boq-dino": ("dinov2_vits14_raw", "boq",
                 {"proj_channels": 64, "num_queries": 4, "row_dim": 4}, 56),
    "salad": ("dinov2_vits14", "salad", {"num_clusters": 4, "cluster_dim": 8, "token_dim": 8},
              56),
}  # fmt: skip


def tiny(name: str) -> ModelConfig:
    backbone, aggregator, params, size = TINY[name]
    return ModelConfig(backbone, aggregator, params, default_preprocess(backbone, size, size))


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter random, so that a wrong key mapping cannot pass unnoticed."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return model


# ------------------------------------------------------------------ presets
@pytest.mark.parametrize(
    ("name", "dim", "size"),
    [("boq_resnet50_16384", 16384, 384), ("boq_dinov2_12288", 12288, 322),
     ("salad_dinov2_8448", 8448, 322), ("salad_dinov2_2112", 2112, 322),
     ("salad_dinov2_544", 544, 322)],
)  # fmt: skip
def test_presets_give_the_published_descriptor_sizes(name: str, dim: int, size: int) -> None:
    model = build_model(name)
    assert model.descriptor_dim == dim
    assert (model.config.preprocess.height, model.config.preprocess.width) == (size, size)


def test_dinov2_vitb14_has_the_official_names_and_shapes() -> None:
    state = build_model("salad_dinov2_8448").backbone.state_dict()
    expected = {
        "cls_token": (1, 1, 768), "pos_embed": (1, 1 + 37 * 37, 768), "mask_token": (1, 768),
        "patch_embed.proj.weight": (768, 3, 14, 14), "patch_embed.proj.bias": (768,),
        "blocks.0.norm1.weight": (768,), "blocks.0.attn.qkv.weight": (2304, 768),
        "blocks.0.attn.qkv.bias": (2304,), "blocks.0.attn.proj.weight": (768, 768),
        "blocks.0.ls1.gamma": (768,), "blocks.0.norm2.bias": (768,),
        "blocks.0.mlp.fc1.weight": (3072, 768), "blocks.0.mlp.fc2.weight": (768, 3072),
        "blocks.11.ls2.gamma": (768,), "norm.weight": (768,), "norm.bias": (768,),
    }  # fmt: skip
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert len(state) == 5 + 12 * 14 + 2  # nothing beyond DINOv2's own parameters
    assert sum(v.numel() for v in state.values()) == pytest.approx(86.6e6, rel=0.01)


def test_official_dinov2_weights_load_strictly_and_are_checked() -> None:
    official = perturbed(build_model(tiny("salad")).backbone).state_dict()
    backbone = build_model(tiny("salad")).backbone
    load_dinov2_weights(backbone, official)
    assert all(torch.equal(backbone.state_dict()[k], v) for k, v in official.items())
    official["pos_embed"] = official["pos_embed"][:, :100]
    with pytest.raises(EdgeVPRError, match="do not fit the backbone"):
        load_dinov2_weights(backbone, official)


def test_position_table_is_resized_once_in_eval_and_follows_new_weights() -> None:
    backbone = build_model(tiny("salad")).backbone.eval()
    first = backbone.position_embedding((4, 4))
    assert first.shape == (1, 17, 384) and backbone.position_embedding((4, 4)) is first
    same = backbone.position_embedding((PRETRAINED_GRID, PRETRAINED_GRID))
    assert torch.equal(same, backbone.pos_embed)  # the trained grid is not resampled
    backbone.load_state_dict(perturbed(build_model(tiny("salad")).backbone).state_dict())
    assert not torch.equal(backbone.position_embedding((4, 4)), first)


def dinov2_position_table(pos_embed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """DINOv2's ``interpolate_pos_encoding`` as its hub models run it (interpolate_offset
    0.1, no antialias), written from its formula: the table for an image of height x width
    pixels, patch 14, trained on a 37 x 37 grid."""
    n = pos_embed.shape[1] - 1
    side = int(math.sqrt(n))
    rows, cols = height // 14, width // 14
    if rows * cols == n and height == width:
        return pos_embed
    grid = pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, mode="bicubic", antialias=False,
                         scale_factor=((rows + 0.1) / side, (cols + 0.1) / side))  # fmt: skip
    assert grid.shape[-2:] == (rows, cols)
    grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
    return torch.cat([pos_embed[:, :1], grid], dim=1)


@pytest.mark.parametrize(("height", "width"), [(322, 322), (224, 224), (224, 322), (280, 210),
                                               (518, 518)])  # fmt: skip
def test_the_position_table_is_resized_as_dinov2_resizes_it(height: int, width: int) -> None:
    """Same table and same backbone map as DINOv2's own formula (with random weights a
    resize to the grid's size instead gave a map cosine of 0.999977 at 322 px)."""
    torch.manual_seed(0)
    backbone = perturbed(build_model(tiny("salad")).backbone).eval()
    with torch.no_grad():
        ours = backbone.position_embedding((height // 14, width // 14))
        theirs = dinov2_position_table(backbone.pos_embed, height, width)
        assert torch.allclose(ours, theirs, atol=1e-6)
        image = torch.randn(2, 3, height, width)
        features, _ = backbone(image)
        backbone._fixed[(height // 14, width // 14)] = theirs
        reference, _ = backbone(image)
    cosine = F.cosine_similarity(features.flatten(1), reference.flatten(1))
    assert (cosine >= 0.99999).all()


# ------------------------------------------------------------------ official layouts
def boq_resnet_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state in the BoQ release's names: backbone.net.N for the trunk."""
    parts = {v: k for k, v in BOQ_RESNET_PARTS.items()}
    out = {}
    for key, value in state.items():
        if key.startswith("backbone.model."):
            part, rest = key[len("backbone.model."):].split(".", 1)
            key = f"backbone.net.{parts[part]}.{rest}"
        out[key] = value
    return out


LAYOUTS = {  # family: (its key renaming, the prefix the release writes, source)
    "boq-resnet": (boq_resnet_layout, "", "boq-official"),
    "boq-dino": (lambda s: {k.replace("backbone.", "backbone.dino.", 1): v
                            for k, v in s.items()}, "model.", "boq-official"),
    "salad": (lambda s: {k.replace("backbone.", "backbone.model.", 1): v
                         for k, v in s.items()}, "", "salad-official"),
}  # fmt: skip


@pytest.mark.parametrize("family", sorted(LAYOUTS))
def test_official_layouts_load_strictly_with_the_config_read_off_the_shapes(
    family: str, tmp_path: Path
) -> None:
    rename, prefix, source = LAYOUTS[family]
    model = perturbed(build_model(tiny(family))).eval()
    released = {prefix + k: v for k, v in rename(model.state_dict()).items()}
    torch.save(released, tmp_path / "release.pth")
    backbone, aggregator, params, size = TINY[family]
    loaded = load_checkpoint(tmp_path / "release.pth", size=(size, size))
    assert loaded.source == source
    config = loaded.model.config
    assert (config.backbone, config.aggregator) == (backbone, aggregator)
    assert {k: config.params[k] for k in params} == params
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(loaded.model(images), model(images), atol=1e-6)
    del released[next(k for k in released if "aggregator.fc" in k or "dust_bin" in k)]
    torch.save(released, tmp_path / "broken.pth")
    with pytest.raises(EdgeVPRError):
        load_checkpoint(tmp_path / "broken.pth", size=(size, size))


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("family", sorted(TINY))
def test_gradients_reach_every_trainable_block(family: str) -> None:
    from edgevpr.train.losses import build_loss

    model = build_model(tiny(family)).train()
    size = model.config.preprocess.height
    images = torch.randn(8, 3, size, size)
    labels = torch.arange(4).repeat_interleave(2)
    loss = build_loss("ms")(model(images), labels)
    loss.backward()
    silent = [n for n, p in model.named_parameters() if p.requires_grad and
              (p.grad is None or not p.grad.abs().sum() > 0)]  # fmt: skip
    assert not silent, silent


def test_freezing_a_dinov2_keeps_the_embeddings_and_early_blocks() -> None:
    model = build_model(get_preset("salad_dinov2_8448"))
    model.freeze()
    trainable = {n.split(".")[1] for n, p in model.backbone.named_parameters(prefix="b")
                 if p.requires_grad}  # fmt: skip
    assert trainable == {"blocks", "norm"}
    blocks = {int(n.split(".")[1]) for n, p in model.backbone.named_parameters()
              if p.requires_grad and n.startswith("blocks.")}  # fmt: skip
    assert blocks == {8, 9, 10, 11}  # SALAD trains the last 4 of 12


# ------------------------------------------------------------------ SALAD's transport
def test_transport_plan_has_the_given_marginals() -> None:
    scores = torch.randn(2, 5, 30)
    plan = log_optimal_transport(scores, torch.tensor(1.0), iters=50).exp()
    total = 5 + 30  # the plan is scaled back by M + N
    assert torch.allclose(plan.sum(dim=1), torch.ones(2, 30), atol=1e-4)  # each token: 1
    assert torch.allclose(plan[:, :5].sum(dim=2), torch.ones(2, 5), atol=1e-3)
    assert torch.allclose(plan[:, 5].sum(dim=1), torch.full((2,), 30.0 - 5), atol=1e-2)
    assert plan.sum().item() == pytest.approx(2 * total - 2 * 5, rel=1e-3)


# ------------------------------------------------------------------ export
@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(TINY))
def test_each_family_exports_and_passes_the_fp32_gate(family: str, tmp_path: Path) -> None:
    from edgevpr.export.pipeline import Exporter, ExportOptions

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", build_model(tiny(family)))
    report = Exporter(tmp_path / "m.pt", ExportOptions(out=tmp_path / "out", parity_images=8),
                      say=lambda _: None).run()  # fmt: skip
    onnx_row = next(r for r in report.artifacts if r.format == "ONNX")
    assert onnx_row.status == "pass", onnx_row.failures
    graph = onnx.load(str(onnx_row.file)).graph
    assert "Resize" not in {node.op_type for node in graph.node}
    from edgevpr.runtime import Embedder

    embedder = Embedder(onnx_row.file, providers=["cpu"])
    size = embedder.metadata.preprocess.height
    found = embedder.embed_images([np.full((size + 9, size, 3), 90, np.uint8)])
    assert found.shape == (1, build_model(tiny(family)).descriptor_dim)


def test_info_describes_a_preset_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from edgevpr.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["info", "boq_resnet50_16384", "--json"])
    assert exited.value.code == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["descriptor"].startswith("16384-d") and facts["input"] == "3x384x384"
    assert 20 < facts["gflop_per_image"] < 60 and facts["kind"].startswith("preset")
