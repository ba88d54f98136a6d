"""``edgevpr synth``: write the procedural dataset; also the HxW size option shared by the
data, training and evaluation commands."""

from __future__ import annotations

import time
from pathlib import Path

import click

from edgevpr.data.synth import SynthConfig, generate


class SizeParam(click.ParamType):
    """``HxW`` (e.g. 64x128) or a single number for a square."""

    name = "HxW"

    def convert(self, value, param, ctx) -> tuple[int, int]:  # noqa: ANN001 - click's API
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


@click.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Same seed, same images.")
@click.option("--places", default=40, show_default=True, help="Places in the test split.")
@click.option("--val-places", default=20, show_default=True, help="Places in the val split.")
@click.option("--train-places", default=80, show_default=True, help="Places in the train split.")
@click.option("--train-views", default=4, show_default=True, help="Images per training place.")
@click.option("--size", type=SIZE, default="96x128", show_default=True, help="Image HxW.")
@click.option("--spacing", default=40.0, show_default=True, help="Metres between places.")
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
