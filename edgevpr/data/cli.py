"""``edgevpr synth``: write the procedural dataset; also the HxW size option shared by the
data, training and evaluation commands."""

from __future__ import annotations

import time
from pathlib import Path

import click

from edgevpr.core.defaults import defaults_of
from edgevpr.data.synth import SynthConfig, generate


class SizeParam(click.ParamType):
    """``HxW`` (e.g. 64x128) or a single number for a square."""

    name = "HxW"

    def convert(self, value, param, ctx) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        text = str(value).lower().replace(" ", "")
        parts = text.split("x") if "x" in text else [text, text]
        try:
            height, width = (int(p) for p in parts)
        except ValueError:
            self.fail(f"'{value}' is not a size like 64x128 (height x width)", param, ctx)
        if height <= 0 or width <= 0:
            self.fail(f"size '{value}' must be positive", param, ctx)
        return height, width


SIZE = SizeParam()
SYNTH = defaults_of(SynthConfig)


@click.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--seed", default=SYNTH["seed"], show_default=True, help="Same seed, same images.")
@click.option("--places", default=SYNTH["places"], show_default=True, help="Test split places.")
@click.option("--val-places", default=SYNTH["val_places"], show_default=True, help="Val places.")
@click.option(
    "--train-places", default=SYNTH["train_places"], show_default=True, help="Train places."
)
@click.option(
    "--train-views", default=SYNTH["train_views"], show_default=True, help="Views a train place."
)
@click.option(
    "--size",
    type=SIZE,
    default=f"{SYNTH['height']}x{SYNTH['width']}",
    show_default=True,
    help="Image HxW.",
)
@click.option(
    "--spacing", default=SYNTH["spacing_m"], show_default=True, help="Metres between places."
)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it holds files.")
def synth(
    out: Path,
    seed: int,
    places: int,
    val_places: int,
    train_places: int,
    train_views: int,
    size: tuple[int, int],
    spacing: float,
    overwrite: bool,
) -> None:
    """Generate a synthetic VPR set in the evaluation layout.

    Places seen under changed viewpoint, light and occlusion, with UTM positions in the
    file names: OUT/images/{train,val,test}/{database,queries}. Deterministic by --seed.
    """
    config = SynthConfig(
        seed=seed,
        places=places,
        val_places=val_places,
        train_places=train_places,
        train_views=train_views,
        height=size[0],
        width=size[1],
        spacing_m=spacing,
    )
    start = time.perf_counter()
    summary = generate(out, config, overwrite=overwrite)
    parts = [f"{split} {c['database']}+{c['queries']}" for split, c in summary["splits"].items()]
    click.echo(
        f"wrote {out} ({', '.join(parts)} database+query images, {size[0]}x{size[1]}) "
        f"in {time.perf_counter() - start:.1f} s"
    )
