"""Checkpoints: the edgevpr format, the MixVPR authors' layout, and hostile files."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from edgevpr.core.errors import EdgeVPRError
from edgevpr.model import build_model, get_preset
from edgevpr.model.checkpoint import load_checkpoint, save_checkpoint


def official_state_dict(
    out_channels: int, out_rows: int, depth: int = 4
) -> dict[str, torch.Tensor]:
    """A state dict with the authors' published key names and shapes, made without edgevpr:
    torchvision's ResNet-50 up to layer3 under backbone.model., and the MixVPR aggregator
    written out by hand for a 320x320 input (a 20x20 = 400-cell grid)."""
    resnet = torchvision.models.resnet50(weights=None).state_dict()
    state = {
        f"backbone.model.{k}": v for k, v in resnet.items() if not k.startswith(("layer4.", "fc."))
    }
    hw = 400
    for j in range(depth):
        state[f"aggregator.mix.{j}.mix.0.weight"] = torch.ones(hw)
        state[f"aggregator.mix.{j}.mix.0.bias"] = torch.zeros(hw)
        state[f"aggregator.mix.{j}.mix.1.weight"] = torch.randn(hw, hw) * 0.02
        state[f"aggregator.mix.{j}.mix.1.bias"] = torch.zeros(hw)
        state[f"aggregator.mix.{j}.mix.3.weight"] = torch.randn(hw, hw) * 0.02
        state[f"aggregator.mix.{j}.mix.3.bias"] = torch.zeros(hw)
    state["aggregator.channel_proj.weight"] = torch.randn(out_channels, 1024) * 0.02
    state["aggregator.channel_proj.bias"] = torch.zeros(out_channels)
    state["aggregator.row_proj.weight"] = torch.randn(out_rows, hw) * 0.02
    state["aggregator.row_proj.bias"] = torch.zeros(out_rows)
    return state


@pytest.mark.parametrize(
    "out_channels, out_rows, preset",
    [
        (1024, 4, "mixvpr_resnet50_4096"),
        (256, 2, "mixvpr_resnet50_512"),
        (64, 2, "mixvpr_resnet50_128"),
    ],
)
def test_official_raw_state_dict_loads_strictly(
    tmp_path: Path, out_channels: int, out_rows: int, preset: str
) -> None:
    state = official_state_dict(out_channels, out_rows)
    path = tmp_path / f"resnet50_MixVPR_{out_channels * out_rows}.ckpt"
    torch.save(state, path)
    ckpt = load_checkpoint(path)
    assert ckpt.source == "mixvpr-official"
    assert ckpt.config == get_preset(preset)
    assert ckpt.model.descriptor_dim == out_channels * out_rows
    loaded = ckpt.model.state_dict()
    assert set(loaded) == set(state)
    assert torch.equal(
        loaded["aggregator.channel_proj.weight"], state["aggregator.channel_proj.weight"]
    )


def test_official_lightning_wrapped_with_prefix_loads(tmp_path: Path) -> None:
    state = official_state_dict(1024, 4)
    wrapped = {
        "epoch": 3,
        "global_step": 1200,
        "state_dict": {f"model.{k}": v for k, v in state.items()},
    }
    path = tmp_path / "lightning.ckpt"
    torch.save(wrapped, path)
    ckpt = load_checkpoint(path)
    assert ckpt.config == get_preset("mixvpr_resnet50_4096")


def test_official_file_with_a_missing_key_is_refused(tmp_path: Path) -> None:
    state = official_state_dict(64, 2)
    del state["backbone.model.layer3.5.bn3.running_var"]
    path = tmp_path / "broken.ckpt"
    torch.save(state, path)
    with pytest.raises(EdgeVPRError, match="does not match its model") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_state_dict_of_no_known_family_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(EdgeVPRError, match="not a checkpoint edgevpr knows.*MixVPR, Bag-of-Q"):
        load_checkpoint(path)


def test_edgevpr_round_trip_gives_identical_descriptors(tmp_path: Path) -> None:
    model = build_model(get_preset("mixvpr_lite0_512").with_size(64, 64)).eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, provenance={"note": "test"})
    ckpt = load_checkpoint(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), ckpt.model(x))
    assert ckpt.provenance["note"] == "test"
    assert ckpt.config == model.config
    assert len(ckpt.sha256) == 64
    assert not list(tmp_path.glob(".*.tmp")), "atomic save left a temporary file"


class RunsCode:
    """Unpickling this runs a shell command: what a hostile checkpoint looks like."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": RunsCode(marker)}, path)
    with pytest.raises(EdgeVPRError, match="would run code") as info:
        load_checkpoint(path)
    assert not marker.exists(), "the payload ran"
    assert "\n" not in str(info.value)


def test_plain_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(EdgeVPRError):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"not a checkpoint at all", b"PK\x03\x04" + b"\x00" * 64],
    ids=["empty", "text", "broken-zip"],
)
def test_corrupt_files_give_one_line_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(EdgeVPRError) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_truncated_checkpoint_is_refused(tmp_path: Path) -> None:
    model = build_model(get_preset("mixvpr_lite0_512").with_size(64, 64))
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgeVPRError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_info_cli_prints_architecture_and_refuses_bad_files(tmp_path: Path) -> None:
    model = build_model(get_preset("mixvpr_lite0_512").with_size(64, 64))
    good = tmp_path / "model.pt"
    save_checkpoint(good, model)
    bad = tmp_path / "evil.pt"
    torch.save({"x": RunsCode(tmp_path / "pwned")}, bad)
    run = [sys.executable, "-m", "edgevpr.cli", "info"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "efficientnet_lite0 + mixvpr" in ok.stdout
    assert "512-d" in ok.stdout and "3x64x64" in ok.stdout
    refused = subprocess.run([*run, str(bad)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: refusing to load")
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "pwned").exists()
