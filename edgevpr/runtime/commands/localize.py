"""``edgevpr localize MAP --model MODEL SOURCE --out track.jsonl``: a track from a folder of
frames, a video or a ROS bag, one JSON line per frame (torch-free)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.files import atomic_open
from edgevpr.runtime.commands.query import VERIFY_HELP, PathArg, model_options, open_embedder
from edgevpr.runtime.localize.fix import Fix
from edgevpr.runtime.localize.localizer import AUTO, MODES, Localizer
from edgevpr.runtime.localize.sources import open_source
from edgevpr.runtime.placemap import PlaceMap
from edgevpr.runtime.placemap.place_record import record_for

DEFAULT_RADIUS_M = 25.0


@click.command()
@click.argument("map_path", metavar="MAP", type=PathArg)
@click.argument("source", type=PathArg)
@click.option(
    "--model", "-m", "model", type=PathArg, required=True, help="The model that built MAP."
)
@click.option(
    "--out", "-o", "out", type=PathArg, required=True, help="Track to write (JSON lines)."
)
@click.option("--plot", type=PathArg, help="Also draw the track over the map's places (PNG).")
@click.option("--topic", help="Bags: the image topic (sensor_msgs/Image or CompressedImage).")
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=AUTO,
    show_default=True,
    help="route: sequence matching along the map's travel order; area: a filter "
    "over 2-D places; auto: route when consecutive places are neighbours.",
)
@click.option(
    "--length",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Frames of evidence (L).",
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Accept fixes with at least this margin (default: MAP's calibration, "
    "else the mode's default).",
)
@click.option(
    "--calibration",
    type=PathArg,
    default=None,
    help="A calibration file (default: MAP.localizer.json where it exists).",
)
@click.option(
    "--max-speed",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Area maps with timestamps: metres per second the robot can move.",
)
@click.option(
    "-k",
    "--k",
    "k",
    type=click.IntRange(1, 1000),
    default=5,
    show_default=True,
    help="Nearest places written with each fix.",
)
@click.option(
    "--radius",
    type=click.FloatRange(0, min_open=True),
    default=DEFAULT_RADIUS_M,
    show_default=True,
    help="Metres within which a fix counts as right (where frame names carry their true position).",
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N frames.")
@click.option("--skip-unreadable", is_flag=True, help="Warn about and skip unreadable frames.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--verify", is_flag=True, help=VERIFY_HELP)
@model_options
def localize(
    map_path: Path,
    source: Path,
    model: Path,
    out: Path,
    plot: Path | None,
    topic: str | None,
    mode: str,
    length: int,
    threshold: float | None,
    calibration: Path | None,
    max_speed: float | None,
    k: int,
    radius: float,
    limit: int | None,
    skip_unreadable: bool,
    quiet: bool,
    verify: bool,
    batch: int | None,
    threads: int | None,
    providers: tuple[str, ...],
) -> None:
    """Localise every frame of SOURCE (a folder of images, a video, or a ROS 1/2 bag) in
    MAP, writing one JSON line per frame to OUT (atomically: a failed run leaves OUT as it
    was). Prints how many fixes were accepted and, where frame names carry coordinates
    (@east@north@... names), their error."""
    placemap = PlaceMap.load(map_path, verify=verify)
    frames = open_source(source, topic)
    localizer = Localizer(
        open_embedder(model, batch, threads, providers),
        placemap,
        mode=mode,
        length=length,
        calibration=calibration if calibration is not None else AUTO,
        threshold=threshold,
        max_speed=max_speed,
        k=k,
    )

    def report(frame: Any, exc: EdgeVPRError) -> None:
        click.echo(f"warning: skipped {exc}", err=True)

    stream = itertools.islice(frames.frames, limit)
    fixes = localizer.run(
        stream, progress=not quiet, on_unreadable=report if skip_unreadable else None
    )
    kept: list[Fix] = []
    with atomic_open(out) as fh:
        for fix in fixes:
            fh.write((json.dumps(fix.to_dict()) + "\n").encode())
            kept.append(_light(fix))
    truth = _truth(kept)
    click.echo(_summary(kept, truth, radius, localizer, frames.description, out))
    if plot is not None:
        from edgevpr.runtime.localize.trackplot import draw_track

        fixes_xy = np.array([_xy(f) for f in kept]).reshape(-1, 2)
        accepted = np.array([f.accepted for f in kept], bool)
        title = f"{len(kept)} frames, {accepted.sum()} accepted ({localizer.mode} matching)"
        draw_track(localizer.layout.xy, fixes_xy, accepted, truth, plot, title)
        click.echo(f"wrote {plot}")


def _light(fix: Fix) -> Fix:
    """The fix without its matches' records (a long stream keeps only what the summary and
    the plot need)."""
    return Fix(frame=fix.frame, state=fix.state, accepted=fix.accepted,
               confidence=fix.confidence, margin=fix.margin, position=fix.position,
               name=fix.name, reason=fix.reason)  # fmt: skip


def _xy(fix: Fix) -> tuple[float, float]:
    if fix.position is None:
        return (np.nan, np.nan)
    return (fix.position.first, fix.position.second)


def _truth(fixes: list[Fix]) -> np.ndarray | None:
    """True east/north of each frame from its name, where every frame's name carries one."""
    points = []
    for fix in fixes:
        record = record_for(fix.name) if fix.name else None
        if record is None or record.east is None:
            return None
        points.append((record.east, record.north))
    return np.array(points, np.float64).reshape(-1, 2) if points else None


def _summary(
    fixes: list[Fix], truth: np.ndarray | None, radius: float, localizer: Localizer,
    source: str, out: Path,
) -> str:  # fmt: skip
    accepted = np.array([f.accepted for f in fixes], bool)
    line = (
        f"wrote {out}: {len(fixes)} frames from {source}, {int(accepted.sum())} fixes "
        f"accepted ({localizer.mode} matching over {localizer.length} frames, threshold "
        f"{localizer.threshold:.3f}{', calibrated' if localizer.calibration else ''})"
    )
    if truth is None or not len(fixes) or localizer.layout.kind != "east/north":
        return line
    error = np.linalg.norm(np.array([_xy(f) for f in fixes]) - truth, axis=1)
    right = np.nan_to_num(error, nan=np.inf) <= radius
    line += f"; {100 * right.mean():.1f} % of all fixes within {radius:g} m"
    if accepted.any():
        line += (
            f"; accepted: {100 * right[accepted].mean():.1f} % within {radius:g} m, "
            f"median error {np.nanmedian(error[accepted]):.1f} m"
        )
    return line
