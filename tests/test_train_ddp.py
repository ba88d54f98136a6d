"""DDP on this machine: two CPU processes with gloo train on disjoint places and end with
identical weights; ``edgevpr train`` runs under torchrun."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from edgevpr.data.synth import SynthConfig, generate
from edgevpr.model.checkpoint import load_checkpoint
from edgevpr.train.config import TrainConfig
from edgevpr.train.distributed import close_world, init_world
from edgevpr.train.trainer import Trainer

pytestmark = pytest.mark.slow  # starts torchrun and gloo process groups

TINY = {
    "model": "mixvpr_lite0_512",
    "size": [32, 32],
    "aggregator_params": {"mix_depth": 1, "out_channels": 16, "out_rows": 2},
    "pretrained": False,
    "loss": "dwt",
    "batch_places": 2,
    "images_per_place": 2,
    "epochs": 1,
    "warmup_steps": 1,
    "val_batch": 8,
    "threads": 1,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world_size: int, port: int, cfg: dict, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    world = init_world("cpu")
    try:
        trainer = Trainer(
            TrainConfig.from_dict(cfg), world, torch.device("cpu"), lambda _: None, False
        )
        first_batch = trainer.sampler.epoch_batches(0)[0]
        summary = trainer.run(time.monotonic())
        params = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        torch.save(
            {
                "params": params,
                "steps": summary["step"],
                "places": sorted(set(trainer.places.labels[first_batch].tolist())),
            },
            Path(out) / f"rank{rank}.pt",
        )
    finally:
        close_world(world)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp") / "synth"
    generate(root, SynthConfig(seed=1, places=2, val_places=2, train_places=8, height=32, width=32))
    return root


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights(dataset: Path, tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict({"data": str(dataset), "out": str(tmp_path / "run"), **TINY})
    mp.spawn(worker, args=(2, free_port(), cfg.to_dict(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # 8 places, 2 ranks, 2 places a batch: 2 steps each, on disjoint places.
    assert ranks[0]["steps"] == ranks[1]["steps"] == 2
    assert set(ranks[0]["places"]).isdisjoint(ranks[1]["places"])
    a, b = ranks[0]["params"], ranks[1]["params"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = load_checkpoint(tmp_path / "run" / "last.pt")  # written by rank 0 only
    trained = dict(saved.model.named_parameters())
    assert all(torch.equal(trained[k], a[k]) for k in a)
    assert saved.training_state["world_size"] == 2


@pytest.mark.slow
def test_edgevpr_train_runs_under_torchrun(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "edgevpr.cli",
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
        "ms",
        "--batch-places",
        "2",
        "--images-per-place",
        "2",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("training mixvpr_lite0_512") == 1  # rank 0 speaks
    assert "per process x 2" in result.stdout
    assert load_checkpoint(out / "last.pt").training_state["step"] == 2
