"""The training loop: place-balanced batches, SGD with warm-up and step decay, validation
Recall@N after every epoch, best and last checkpoints, exact resume, and DDP.

Under ``torchrun`` every process runs this same loop on its own shard of places; DDP
averages the gradients, rank 0 validates and writes the checkpoints.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.files import write_text_atomic
from edgevpr.eval.evaluate import evaluate
from edgevpr.eval.recall import format_recalls
from edgevpr.eval.torch_embedder import TorchEmbedder
from edgevpr.model.checkpoint import load_checkpoint, save_checkpoint
from edgevpr.model.vpr import build_model
from edgevpr.train.augment import build_augment
from edgevpr.train.config import RESUMABLE, TrainConfig
from edgevpr.train.datasets import PlaceImages
from edgevpr.train.distributed import (
    World,
    any_rank,
    barrier,
    close_world,
    init_world,
    mean_over_ranks,
)
from edgevpr.train.losses import build_loss
from edgevpr.train.sampler import PlaceBatchSampler
from edgevpr.train.schedule import WarmupStepSchedule
from edgevpr.train.setup import derived_seed, describe_config, load_training_data, pick_device

LAST = "last.pt"
BEST = "best.pt"
HISTORY = "history.json"
VAL_NS = (1, 5, 10, 20)


@dataclass
class Progress:
    """Where the run stands; saved in the checkpoint's training state."""

    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch done
    step: int = 0  # optimizer steps done
    seconds: float = 0.0  # training wall time over all sessions
    best: dict[str, Any] | None = None
    history: list[dict[str, Any]] | None = None


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        world: World,
        device: torch.device,
        log: Callable[[str], None],
        show_progress: bool = True,
    ) -> None:
        self.cfg, self.world, self.device, self.log = cfg, world, device, log
        self.show_progress = show_progress and world.is_main
        self.out = Path(cfg.out)
        self.places, self.val = load_training_data(cfg)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.model = build_model(cfg.model_config(), pretrained=cfg.pretrained)
        self.model.freeze()
        self.model.to(device)
        spec = self.model.config.preprocess
        self.dataset = PlaceImages(self.places, spec, build_augment(cfg.augment))
        self.sampler = PlaceBatchSampler(
            self.places.labels,
            cfg.batch_places,
            cfg.images_per_place,
            cfg.seed,
            world.rank,
            world.size,
        )
        self.loss_fn = build_loss(cfg.loss, cfg.margin, cfg.eps, cfg.sigma, cfg.miner, cfg.radius)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        self.schedule = WarmupStepSchedule(cfg.lr, cfg.warmup_steps, cfg.milestones, cfg.gamma)
        self.amp = bool(cfg.amp if cfg.amp is not None else True) and device.type == "cuda"
        if cfg.amp and not self.amp and world.is_main:
            log("note: mixed precision needs a CUDA device; training in FP32")
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.net: torch.nn.Module = self.model
        if world.distributed:
            ids = [device.index] if device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        # Each rank its own augmentation stream; model init above was identical everywhere.
        torch.manual_seed(derived_seed(cfg.seed, 1, world.rank))
        self.progress = Progress(history=[])

    # --- resume -------------------------------------------------------------------------

    def restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        state = ckpt.training_state
        if not state or "optimizer" not in state:
            raise EdgeVPRError(
                f"{path} has no training state to resume from (resume from a {LAST} "
                "written by edgevpr train)"
            )
        self.model.load_state_dict(ckpt.model.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(
            epoch=int(state["epoch"]),
            batch_in_epoch=int(state["batch_in_epoch"]),
            step=int(state["step"]),
            seconds=float(state.get("seconds", 0.0)),
            best=state.get("best"),
            history=list(state.get("history", [])),
        )
        rng = state.get("rng", {})
        if (
            self.world.size == int(state.get("world_size", 1))
            and self.world.is_main
            and "torch" in rng
        ):
            torch.set_rng_state(rng["torch"])
            random.setstate(rng["python"])
        else:  # another process layout: a fresh, still deterministic, stream per rank
            torch.manual_seed(derived_seed(self.cfg.seed, 2, self.world.rank, self.progress.step))

    def training_state(self) -> dict[str, Any]:
        p = self.progress
        return {
            "config": self.cfg.to_dict(),
            "epoch": p.epoch,
            "batch_in_epoch": p.batch_in_epoch,
            "step": p.step,
            "seconds": p.seconds,
            "best": p.best,
            "history": p.history,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
            "world_size": self.world.size,
        }

    # --- one step and one epoch -----------------------------------------------------------

    def train_step(
        self, images: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor
    ) -> float:
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device)
        positions = positions.to(self.device)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.amp):
            descriptors = self.net(images)
        loss = self.loss_fn(descriptors.float(), labels, positions)
        if not torch.isfinite(loss):
            raise EdgeVPRError(
                f"the loss became {loss.item()} at step {self.progress.step} "
                "(lower --lr, or check the data)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return float(loss.item())

    def loader(self, epoch: int) -> DataLoader:
        generator = torch.Generator().manual_seed(
            derived_seed(self.cfg.seed, 3, epoch, self.world.rank)
        )
        return DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            num_workers=self.cfg.workers,
            pin_memory=self.device.type == "cuda",
            generator=generator,
        )

    def run_epoch(self, deadline: float | None, reserve: float) -> tuple[list[float], bool]:
        """Train until the epoch ends or the time budget would be overrun. Returns the
        batch losses and whether the budget stopped it."""
        p, cfg = self.progress, self.cfg
        self.sampler.set_epoch(p.epoch, p.batch_in_epoch)
        self.net.train()
        losses: list[float] = []
        bar = tqdm(
            total=len(self.sampler),
            initial=p.batch_in_epoch,
            desc=f"epoch {p.epoch + 1}/{cfg.epochs}",
            disable=not self.show_progress,
            dynamic_ncols=True,
            leave=False,
        )
        stopped = False
        try:
            for images, labels, positions in self.loader(p.epoch):
                out_of_time = deadline is not None and time.monotonic() + reserve >= deadline
                if any_rank(self.world, out_of_time, self.device):
                    stopped = True
                    break
                lr = self.schedule.apply(self.optimizer, p.step, p.epoch)
                losses.append(self.train_step(images, labels, positions))
                p.step += 1
                p.batch_in_epoch += 1
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", lr=f"{lr:.2e}")
        finally:
            bar.close()
        if p.batch_in_epoch >= len(self.sampler):
            p.epoch += 1
            p.batch_in_epoch = 0
        return losses, stopped

    # --- validation and checkpoints ---------------------------------------------------------

    def validate(self) -> dict[int, float] | None:
        if self.val is None:
            return None
        embedder = TorchEmbedder(self.model, self.cfg.val_batch, self.device)
        return evaluate(embedder, self.val, self.cfg.radius, VAL_NS).recalls.values

    def end_of_epoch(
        self, losses: list[float], session_start: float, seconds_before: float
    ) -> None:
        """Validate (rank 0), record, and write last.pt (+ best.pt when it improved)."""
        p = self.progress
        # Ranks run the same number of batches, so all have losses or none has.
        mean_loss = None
        if losses:
            mean_loss = mean_over_ranks(self.world, float(np.mean(losses)), self.device)
        if self.world.is_main:
            started = time.monotonic()
            recalls = self.validate()
            p.seconds = seconds_before + (time.monotonic() - session_start)
            epoch_label = p.epoch + p.batch_in_epoch / len(self.sampler)
            record = {
                "epoch": round(epoch_label, 3),
                "step": p.step,
                "loss": mean_loss,
                "lr": self.schedule.lr(max(p.step - 1, 0), p.epoch),
                "recall": {str(n): v for n, v in recalls.items()} if recalls else None,
                "val_seconds": round(time.monotonic() - started, 2),
                "seconds": round(p.seconds, 1),
            }
            p.history.append(record)
            improved = recalls is not None and (
                p.best is None
                or (recalls[1], recalls[5]) > (p.best["recall"]["1"], p.best["recall"]["5"])
            )
            if improved:
                p.best = {"epoch": record["epoch"], "step": p.step, "recall": record["recall"]}
            provenance = {
                "trained_by": "edgevpr train",
                "data": self.places.name or self.cfg.data,
                "loss": self.cfg.loss,
                "epoch": record["epoch"],
                "step": p.step,
                "val": self.val.name if self.val else None,
                "val_recall": record["recall"],
                "seed": self.cfg.seed,
            }
            save_checkpoint(self.out / LAST, self.model, provenance, self.training_state())
            if improved or self.val is None:
                save_checkpoint(self.out / BEST, self.model, provenance)
            write_text_atomic(self.out / HISTORY, json.dumps(p.history, indent=2) + "\n")
            shown = f"{mean_loss:.4f}" if mean_loss is not None else "-"
            line = f"epoch {epoch_label:.2f}/{self.cfg.epochs}  steps {p.step}  loss {shown}"
            if recalls:
                line += f"  val {format_recalls(recalls)}" + ("  (best)" if improved else "")
            self.log(line + f"  [{p.seconds / 60:.1f} min]")
        barrier(self.world)

    # --- the run ---------------------------------------------------------------------------

    def run(self, budget_start: float) -> dict[str, Any]:
        cfg, p = self.cfg, self.progress
        if self.world.is_main:  # OUT appears with the first checkpoint, not before
            val = f"{self.val.name} ({len(self.val.queries)} queries)" if self.val else "none"
            self.log(
                f"training {describe_config(cfg, self.model)}\n"
                f"data {self.places.name}: {self.places.num_places} places, {len(self.places)} "
                f"images; validation {val}\n"
                f"loss {cfg.loss}; {cfg.batch_places} places x {cfg.images_per_place} images a "
                f"batch{f' per process x {self.world.size}' if self.world.distributed else ''}; "
                f"{len(self.sampler)} batches an epoch; device {self.device}"
                f"{' (mixed precision)' if self.amp else ''}"
            )
        deadline = budget_start + cfg.minutes * 60 if cfg.minutes else None
        session_start, seconds_before = time.monotonic(), p.seconds
        if p.epoch >= cfg.epochs and p.history:
            self.log(f"the run already has {p.epoch} epochs: raise --epochs to continue it")
        elif p.epoch >= cfg.epochs:  # --epochs 0: record the untrained model as it is
            self.end_of_epoch([], session_start, seconds_before)
        reserve = 0.0
        stopped = False
        while p.epoch < cfg.epochs and not stopped:
            losses, stopped = self.run_epoch(deadline, reserve)
            before = time.monotonic()
            self.end_of_epoch(losses, session_start, seconds_before)
            reserve = 1.2 * (time.monotonic() - before)  # validation + saving, next time
        if self.world.is_main:
            why = "time budget reached" if stopped else "done"
            best = p.best
            epochs = p.epoch + p.batch_in_epoch / len(self.sampler)
            summary = f"{why}: {epochs:.2f} epochs, {p.step} steps, {p.seconds / 60:.1f} min"
            if best:
                summary += f"; best val R@1 {best['recall']['1']:.1f} at epoch {best['epoch']}"
            self.log(f"{summary}; checkpoints in {self.out}")
        return {
            "epoch": p.epoch,
            "step": p.step,
            "seconds": p.seconds,
            "best": p.best,
            "history": p.history,
            "stopped_by_budget": stopped,
        }


def resumed_config(path: Path, overrides: dict[str, Any]) -> TrainConfig:
    """The run's own options from its checkpoint, with the few a resume may change."""
    from edgevpr.model.checkpoint import read_safely

    data = read_safely(path)
    state = data.get("training_state") if isinstance(data, dict) else None
    if not state or "config" not in state:
        raise EdgeVPRError(f"{path} has no training state to resume from")
    saved = TrainConfig.from_dict(state["config"])
    changed = {k: v for k, v in overrides.items() if getattr(saved, k) != v}
    refused = sorted(set(changed) - RESUMABLE)
    if refused:
        raise EdgeVPRError(
            f"cannot change {', '.join('--' + k.replace('_', '-') for k in refused)} when "
            f"resuming {path} (only {', '.join(sorted(RESUMABLE))} may change)"
        )
    return TrainConfig.from_dict({**saved.to_dict(), **{k: v for k, v in changed.items()}})


def train(
    cfg: TrainConfig,
    resume: Path | None = None,
    log: Callable[[str], None] = print,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run (or continue) a training run; returns its summary on every rank."""
    budget_start = time.monotonic()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    world = init_world(device.type)
    try:
        if device.type == "cuda" and world.distributed:
            device = torch.device("cuda", world.local_rank)
            torch.cuda.set_device(device)
        out = Path(cfg.out)
        if resume is None and world.is_main and (out / LAST).exists():
            raise EdgeVPRError(
                f"{out} already holds a run ({LAST}): resume it with --resume {out / LAST} "
                "or choose another --out"
            )
        trainer = Trainer(cfg, world, device, log, show_progress)
        if resume is not None:
            trainer.restore(resume)
        return trainer.run(budget_start)
    finally:
        close_world(world)
