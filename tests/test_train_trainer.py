"""The training loop on a tiny synthetic set: reproducible, resumable, budgeted, and the
checkpoints it writes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from edgevpr.core.images import read_image
from edgevpr.core.preprocess import preprocess
from edgevpr.data.places import layout_training_set
from edgevpr.data.synth import SynthConfig, generate
from edgevpr.model.checkpoint import load_checkpoint
from edgevpr.model.vpr import build_model
from edgevpr.train.config import TrainConfig
from edgevpr.train.datasets import PlaceImages
from edgevpr.train.trainer import train

TINY_MODEL = {
    "model": "mixvpr_lite0_512",
    "size": (32, 32),
    "aggregator_params": {"mix_depth": 1, "out_channels": 16, "out_rows": 2},
    "pretrained": False,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train") / "synth"
    generate(root, SynthConfig(seed=0, places=3, val_places=3, train_places=8, height=32, width=48))
    return root


def config(dataset: Path, out: Path, **overrides) -> TrainConfig:
    values = {
        "data": str(dataset),
        "out": str(out),
        **TINY_MODEL,
        "loss": "dwt",
        "batch_places": 4,
        "images_per_place": 2,
        "epochs": 1,
        "warmup_steps": 2,
        "val_batch": 8,
        **overrides,
    }
    return TrainConfig(**values)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model.state_dict()


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dataset_items_use_the_runtime_preprocessing(dataset: Path) -> None:
    places = layout_training_set(dataset, val_fraction=0.0).train
    spec = TrainConfig(data="", out="", **TINY_MODEL).model_config().preprocess
    image, label, position = PlaceImages(places, spec)[5]
    expected = preprocess([read_image(places.paths[5])], spec)[0]
    assert np.array_equal(image.numpy(), expected)
    assert label == places.labels[5] and position.dtype == torch.float64


def test_seeded_runs_reproduce_and_resume_exactly(dataset: Path, tmp_path: Path) -> None:
    quiet = {"log": lambda _: None, "show_progress": False}
    logs: list[str] = []
    # A: two epochs straight. B: the same run in two sessions (one epoch, then --resume).
    straight = train(config(dataset, tmp_path / "a", seed=3, epochs=2), log=logs.append)
    first = config(dataset, tmp_path / "b", seed=3, epochs=1)
    train(first, **quiet)
    after_one_epoch = weights(tmp_path / "b/last.pt")
    resumed = train(replace(first, epochs=2), resume=tmp_path / "b/last.pt", **quiet)
    assert straight["step"] == resumed["step"] == 4  # 8 places / 4 a batch, 2 epochs
    assert len(resumed["history"]) == 2
    assert same(weights(tmp_path / "a/last.pt"), weights(tmp_path / "b/last.pt"))
    # Another seed, another run.
    train(config(dataset, tmp_path / "c", seed=4, epochs=1), **quiet)
    assert not same(weights(tmp_path / "c/last.pt"), after_one_epoch)
    torch.manual_seed(3)
    initial = build_model(config(dataset, tmp_path).model_config()).state_dict()
    trained = weights(tmp_path / "a/last.pt")
    key = "aggregator.channel_proj.weight"
    assert not torch.equal(trained[key], initial[key])
    # Lite0 preset: stem and stage 1 frozen (their batch-norm statistics still follow the data).
    for key in ("backbone.model.conv_stem.weight", "backbone.model.blocks.0.depthwise_conv.weight"):
        assert torch.equal(trained[key], initial[key])
    assert any("val R@1" in line for line in logs)
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    assert history[-1]["step"] == 4 and set(history[-1]["recall"]) == {"1", "5", "10", "20"}
    best = load_checkpoint(tmp_path / "a" / "best.pt")
    assert best.training_state is None and best.provenance["loss"] == "dwt"


def test_zero_epochs_saves_the_untrained_model(dataset: Path, tmp_path: Path) -> None:
    summary = train(config(dataset, tmp_path / "u", epochs=0, seed=5), log=lambda _: None)
    torch.manual_seed(5)
    fresh = build_model(config(dataset, tmp_path).model_config()).state_dict()
    assert summary["step"] == 0 and summary["best"]["recall"]["1"] >= 0
    assert same(weights(tmp_path / "u/best.pt"), fresh)


def test_time_budget_stops_cleanly_and_resume_finishes(dataset: Path, tmp_path: Path) -> None:
    quiet = {"log": lambda _: None, "show_progress": False}
    cfg = config(dataset, tmp_path / "t", epochs=1, minutes=1e-6)
    summary = train(cfg, **quiet)
    assert summary["stopped_by_budget"] and summary["step"] == 0
    state = load_checkpoint(tmp_path / "t/last.pt").training_state
    assert state["step"] == 0 and state["batch_in_epoch"] == 0
    finished = train(replace(cfg, minutes=None), resume=tmp_path / "t/last.pt", **quiet)
    assert finished["step"] == 2 and not finished["stopped_by_budget"]
    logs: list[str] = []
    again = train(
        replace(cfg, minutes=None),
        resume=tmp_path / "t/last.pt",
        log=logs.append,
        show_progress=False,
    )
    assert again["step"] == 2 and any("raise --epochs" in line for line in logs)
    assert len(again["history"]) == len(finished["history"])




def test_cli_trains_resumes_and_explains(cli,
    dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(dataset),
        "--out",
        str(out),
        "--model",
        "mixvpr_lite0_512",
        "--size",
        "32x32",
        "--aggregator-param",
        "mix_depth=1",
        "--aggregator-param",
        "out_channels=16",
        "--no-pretrained",
        "--loss",
        "triplet",
        "--batch-places",
        "4",
        "--images-per-place",
        "2",
        "--epochs",
        "1",
        "--no-progress",
    ]
    code, out_text, _ = cli(args)
    assert code == 0 and "loss triplet" in out_text and (out / "best.pt").is_file()
    code, _, err = cli(args)
    assert code == 2 and "already holds a run" in err and err.count("\n") == 1
    code, _, err = cli(["train", "--resume", str(out), "--loss", "ms"])
    assert code == 2 and "cannot change --loss" in err
    code, _, err = cli(["train", "--resume", str(out / "best.pt")])
    assert code == 2 and "no training state" in err
    code, out_text, _ = cli(["train", "--resume", str(out), "--epochs", "2", "--no-progress"])
    assert code == 0 and "epoch 2.00/2" in out_text
    assert load_checkpoint(out / "last.pt").training_state["config"]["loss"] == "triplet"
    for bad, message in [
        (["train", "--out", str(tmp_path / "x")], "--data and --out are required"),
        (
            ["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "x")],
            "does not exist",
        ),
        (
            [*args[:-1], "--batch-places", "50", "--out", str(tmp_path / "y")],
            "lower --batch-places",
        ),
        ([*args, "--size", "30x30"], "multiple of 16"),
    ]:
        code, _, err = cli(bad)
        assert code == 2 and message in err and err.count("\n") == 1, (bad, err)
