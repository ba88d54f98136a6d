"""``edgevpr synth``: write the procedural dataset; ``edgevpr record``: a folder of it (or
any evaluation-layout folder) recorded as a robot records a drive; also the HxW size option
shared by the data, training and evaluation commands."""

from __future__ import annotations

import time
from pathlib import Path

import click

from edgevpr.core.defaults import defaults_of
from edgevpr.core.geo import is_utm_zone
from edgevpr.data.recordings import RECORDINGS, record_drive
from edgevpr.data.synth import SynthConfig, generate
from edgevpr.runtime.tracks.positions import parse_start_time


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


@click.command()
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--as", "kind", type=click.Choice(RECORDINGS), default="bag", show_default=True,
              help="bag: a ROS 2 bag folder (Image + NavSatFix); mcap: the same in MCAP; "
              "rosbag1: the same as a ROS 1 .bag; video: an AVI with OUT.gpx beside it; "
              "photos: JPEGs with EXIF GPS.")
@click.option("--zone", default="32T", show_default=True,
              help="The UTM zone of the names' east/north (for latitude/longitude).")
@click.option("--start", default="2026-06-01T10:00:00Z", show_default=True,
              help="When the first frame was taken (ISO 8601 or seconds since 1970).")
@click.option("--period", type=click.FloatRange(0.001, 3600), default=1.0, show_default=True,
              help="Seconds between frames.")
def record(folder: Path, out: Path, kind: str, zone: str, start: str, period: float) -> None:
    """Record FOLDER's images (named @east@north@..., taken in the order of their names) as
    a robot records a drive: the input `index build` teaches maps from and `localize
    --truth` scores against."""
    if not is_utm_zone(zone):
        raise click.BadParameter(f"{zone!r} is not a UTM zone like 32T", param_hint="--zone")
    began = parse_start_time(start)
    assert began is not None
    written = record_drive(folder, out, kind, zone, began, period)
    shown = ", ".join(str(p) for p in written[:2]) + (" ..." if len(written) > 2 else "")
    click.echo(f"recorded {folder} as {kind}: {shown}")
