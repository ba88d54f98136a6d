"""``edgevpr train``: train a VPR model (the MixVPR recipe by default).

Several GPUs or machines: start the same command under torchrun, e.g.
``torchrun --nproc_per_node 4 -m edgevpr.cli train --data ... --out ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from edgevpr.core.defaults import defaults_of, listed
from edgevpr.core.errors import EdgeVPRError
from edgevpr.data.cli import SIZE
from edgevpr.train.augment import AUGMENTS
from edgevpr.train.config import TrainConfig
from edgevpr.train.losses import LOSSES, MINERS
from edgevpr.train.trainer import LAST, resumed_config
from edgevpr.train.trainer import train as run_training


def parse_milestones(text: str) -> tuple[int, ...]:
    try:
        return tuple(sorted(int(t) for t in text.split(",") if t.strip()))
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a list of epochs like 5,10,15") from None


def parse_params(items: tuple[str, ...]) -> dict[str, float]:
    params: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or number is None:
            raise click.BadParameter(f"'{item}' is not KEY=NUMBER (e.g. out_channels=256)")
        params[key.strip()] = int(number) if number.is_integer() else number
    return params


TRAIN = defaults_of(TrainConfig)
# CLI option name -> TrainConfig field, where they differ.
FIELD_FOR_OPTION = {"aggregator_param": "aggregator_params", "city": "cities"}


@click.command()
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Training set: evaluation layout (images/train) or GSV-Cities.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Run folder for best.pt, last.pt and history.json.",
)
@click.option(
    "--model",
    default=TRAIN["model"],
    show_default=True,
    help="Preset (see edgevpr.model.PRESETS), e.g. mixvpr_lite0_512.",
)
@click.option("--backbone", help="Replace the preset's backbone (e.g. efficientnet_lite0).")
@click.option("--aggregator", help="Replace the preset's aggregator (mixvpr, gem, ...).")
@click.option(
    "--aggregator-param",
    multiple=True,
    metavar="KEY=VALUE",
    help="Aggregator parameter, repeatable (e.g. out_channels=256).",
)
@click.option("--size", type=SIZE, help="Input HxW, multiples of 16 (default: the preset's).")
@click.option(
    "--pretrained/--no-pretrained",
    default=TRAIN["pretrained"],
    show_default=True,
    help="Start the backbone from ImageNet weights.",
)
@click.option("--frozen-stages", type=int, help="Backbone stages kept frozen (stem = 0).")
@click.option(
    "--loss",
    type=click.Choice(LOSSES),
    default=TRAIN["loss"],
    show_default=True,
    help="ms: Multi-Similarity; triplet; wt: weighted triplet; ce; dwt: DW-T-Loss.",
)
@click.option(
    "--margin", default=TRAIN["margin"], show_default=True, help="Triplet margin (triplet, wt)."
)
@click.option(
    "--eps", default=TRAIN["eps"], show_default=True, help="Distance weight epsilon (wt, dwt)."
)
@click.option(
    "--sigma",
    default=TRAIN["sigma"],
    show_default=True,
    help="Distance weight scale in metres (wt, dwt).",
)
@click.option(
    "--miner",
    type=click.Choice(MINERS),
    default=TRAIN["miner"],
    show_default=True,
    help="Triplets for the triplet family: hardest negative per pair, or all.",
)
@click.option(
    "--batch-places", default=TRAIN["batch_places"], show_default=True, help="Places a batch (P)."
)
@click.option(
    "--images-per-place",
    default=TRAIN["images_per_place"],
    show_default=True,
    help="Images a place (K).",
)
@click.option("--augment", type=click.Choice(AUGMENTS), default=TRAIN["augment"], show_default=True)
@click.option(
    "--place-radius",
    default=TRAIN["place_radius"],
    show_default=True,
    help="Metres: images this close to a place's first image join the place.",
)
@click.option(
    "--radius",
    default=TRAIN["radius"],
    show_default=True,
    help="Metres: validation positives; closer images are never negatives.",
)
@click.option(
    "--val-fraction",
    default=TRAIN["val_fraction"],
    show_default=True,
    help="Share of the route held out for validation when there is no val split.",
)
@click.option(
    "--val-data",
    type=click.Path(path_type=Path),
    help="Validate on this evaluation-layout set instead.",
)
@click.option("--val-split", help="Split of the validation set (default val, else test).")
@click.option("--city", multiple=True, help="GSV-Cities: train on these cities only.")
@click.option(
    "--epochs", default=TRAIN["epochs"], show_default=True, help="0 saves the untrained model."
)
@click.option("--minutes", type=float, help="Wall-clock budget; stops cleanly, then saves.")
@click.option("--lr", default=TRAIN["lr"], show_default=True)
@click.option("--momentum", default=TRAIN["momentum"], show_default=True)
@click.option("--weight-decay", default=TRAIN["weight_decay"], show_default=True)
@click.option("--warmup-steps", default=TRAIN["warmup_steps"], show_default=True)
@click.option(
    "--milestones",
    default=listed(TRAIN["milestones"]),
    show_default=True,
    help="Epochs at which the learning rate is multiplied by --gamma.",
)
@click.option("--gamma", default=TRAIN["gamma"], show_default=True)
@click.option("--amp/--no-amp", default=None, help="Mixed precision (default: on with CUDA).")
@click.option("--device", help="cpu, cuda or cuda:N (default: CUDA if available).")
@click.option(
    "--workers", default=TRAIN["workers"], show_default=True, help="Data-loading processes."
)
@click.option(
    "--threads",
    type=int,
    help="CPU threads for the network (default: all cores; 1 is often faster on a busy machine).",
)
@click.option(
    "--val-batch", default=TRAIN["val_batch"], show_default=True, help="Validation batch size."
)
@click.option("--seed", default=TRAIN["seed"], show_default=True, help="Same seed, same run.")
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    help="Continue from a run's last.pt (or its folder).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (epoch lines only).")
@click.pass_context
def train(ctx: click.Context, **options: Any) -> None:
    """Train a VPR model with place-balanced batches and the MixVPR recipe.

    Writes OUT/best.pt (best validation Recall@1), OUT/last.pt (with optimizer, schedule
    and RNG state for --resume) and OUT/history.json. Example on CPU:

      edgevpr train --data nordland64 --model mixvpr_lite0_512 --size 64x128
      --loss dwt --batch-places 16 --minutes 10 --out runs/lite0-dwt
    """
    resume: Path | None = options.pop("resume")
    show_progress = not options.pop("no_progress")
    values = to_config_values(options)
    if resume is not None:
        resume = resume / LAST if resume.is_dir() else resume
        given = {
            FIELD_FOR_OPTION.get(name, name): values[FIELD_FOR_OPTION.get(name, name)]
            for name in options
            if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
        }
        if "out" not in given:
            given["out"] = str(resume.parent)
        cfg = resumed_config(resume, given)
    else:
        if values["data"] is None or values["out"] is None:
            raise EdgeVPRError("--data and --out are required (or --resume a run)")
        cfg = TrainConfig(**values)
    run_training(cfg, resume=resume, log=click.echo, show_progress=show_progress)


def to_config_values(options: dict[str, Any]) -> dict[str, Any]:
    """Click's option values -> TrainConfig fields."""
    values = dict(options)
    values["aggregator_params"] = parse_params(values.pop("aggregator_param"))
    cities = values.pop("city")
    values["cities"] = tuple(cities) if cities else None
    values["milestones"] = parse_milestones(values["milestones"])
    for key in ("data", "out", "val_data"):
        if values[key] is not None:
            values[key] = str(values[key])
    return values
