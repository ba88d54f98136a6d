from __future__ import annotations

from pathlib import Path

import pytest

from edgevpr.runtime.embedder import Embedder

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real VPR sets beside the repository (../shared/data); skip where absent."""
    if not (SHARED_DATA / "corridor").is_dir() or not (SHARED_DATA / "nordland64").is_dir():
        pytest.skip(f"real VPR data not found at {SHARED_DATA}")
    return SHARED_DATA


# ------------------------------------------------------------------ one small real model
# EfficientNet-Lite0 + MixVPR 512 at 64x64: the real ImageNet weights, cheap enough for two
# CPU cores; exported once per session and shared by the runtime and input tests.
RUNTIME_MODEL_SIZE = 64


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    from edgevpr.export.onnx_export import export_onnx
    from edgevpr.model import build_model, get_preset
    from edgevpr.model.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)  # the head is untrained: the same head whichever test runs first
    folder = tmp_path_factory.mktemp("runtime-model")
    config = get_preset("mixvpr_lite0_512").with_size(RUNTIME_MODEL_SIZE, RUNTIME_MODEL_SIZE)
    save_checkpoint(folder / "lite0.pt", build_model(config, pretrained=True))
    export_onnx(load_checkpoint(folder / "lite0.pt"), folder / "lite0.onnx")
    return {"checkpoint": folder / "lite0.pt", "onnx": folder / "lite0.onnx"}


@pytest.fixture(scope="session")
def torch_model(exported: dict[str, Path]):  # -> Checkpoint (torch stays out of imports)
    from edgevpr.model.checkpoint import load_checkpoint

    return load_checkpoint(exported["checkpoint"])


@pytest.fixture(scope="session")
def embedder(exported: dict[str, Path]) -> Embedder:
    return Embedder(exported["onnx"], providers=["cpu"])


