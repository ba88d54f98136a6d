"""``edgevpr localize MAP SOURCE --model MODEL --out track.EXT``: a track from a folder of
frames, a video or a ROS bag, in any of the track formats (JSON lines, CSV, TUM, GPX,
GeoJSON, KML, a ROS 2 bag), scored against a truth where one is given (torch-free)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.runtime.commands.query import VERIFY_HELP, PathArg, model_options, open_embedder
from edgevpr.runtime.localize.fix import Fix
from edgevpr.runtime.localize.localizer import AUTO, MODES, Localizer
from edgevpr.runtime.localize.sources import FrameSource, open_source
from edgevpr.runtime.localize.stream import StreamFrame
from edgevpr.runtime.localize.truth import TrackScore, TruthScorer, truth_positions
from edgevpr.runtime.placemap import PlaceMap
from edgevpr.runtime.tracks.positions import PositionOptions, Positions, parse_start_time
from edgevpr.runtime.tracks.track import DEFAULT_MAX_GAP_S, EAST_NORTH
from edgevpr.runtime.tracks.writers import TRACK_FORMATS, TrackFrame, track_format, track_writer

DEFAULT_RADIUS_M = 25.0
PEEK_FRAMES = 8  # frames looked at first, to tell whether their names carry the truth
FORMAT_HELP = "; ".join(f"{f.name} ({'/'.join(f.suffixes) or 'a folder'}): {f.about}"
                        for f in TRACK_FORMATS.values())  # fmt: skip


@click.command()
@click.argument("map_path", metavar="MAP", type=PathArg)
@click.argument("source", type=PathArg)
@click.option(
    "--model", "-m", "model", type=PathArg, required=True, help="The model that built MAP."
)
@click.option("--out", "-o", "out", type=PathArg, required=True,
              help="Track to write, its format chosen by the suffix.")
@click.option("--format", "track_format_name", type=click.Choice(list(TRACK_FORMATS)),
              default=None, help=f"The track format, whatever the suffix: {FORMAT_HELP}.")
@click.option("--truth", default=None,
              help="True positions: a position topic of the bag SOURCE (/gps/fix), or a GPX, "
              "CSV, TUM or SRT file (default: the frames' names, where they carry "
              "coordinates).")
@click.option("--max-gap", type=click.FloatRange(0, min_open=True), default=DEFAULT_MAX_GAP_S,
              show_default=True, help="--truth: seconds a frame may be from a true position.")
@click.option("--time-offset", type=float, default=0.0, show_default=True,
              help="--truth: seconds added to the truth's times.")
@click.option("--start-time", default=None,
              help="--truth with absolute times over a video: when its first frame was taken "
              "(default: the video's creation time).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary as one JSON object (with the score where there is a "
              "truth).")
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
    help="Metres within which a fix counts as right (where there is a truth).",
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
    track_format_name: str | None,
    truth: str | None,
    max_gap: float,
    time_offset: float,
    start_time: str | None,
    as_json: bool,
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
    MAP, writing the track to OUT (atomically: a failed run leaves OUT as it was). Prints
    how many fixes were accepted and, where there is a truth (--truth, or frame names with
    coordinates), how right they were: the accepted fixes within --radius, their error
    median and p95, and the share of all fixes within it."""
    fmt = track_format(out, track_format_name)
    placemap = PlaceMap.load(map_path, verify=verify)
    frames = open_source(source, topic)
    first = _peek(frames)
    options = PositionOptions(max_gap=max_gap, time_offset=time_offset,
                              start_time=parse_start_time(start_time))  # fmt: skip
    scorer = _scorer(truth_positions(truth, source, frames.kind, first, options), radius)
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
    layout = localizer.layout
    frame = TrackFrame(layout.kind, bool(layout.coordinates.utm_zones))

    def report(frame: Any, exc: EdgeVPRError) -> None:
        click.echo(f"warning: skipped {exc}", err=True)

    stream = itertools.islice(frames.frames, limit)
    fixes = localizer.run(
        stream, progress=not quiet, on_unreadable=report if skip_unreadable else None
    )
    kept: list[Fix] = []
    with track_writer(out, fmt, frame) as writer:
        for fix in fixes:
            writer.add(fix)
            kept.append(_light(fix))
            if scorer is not None:
                scorer.add(fix, StreamFrame(None, fix.timestamp, fix.name))
    score = None if scorer is None else scorer.score()
    _print_summary(kept, score, localizer, frames.description, out, fmt.name, as_json)
    if plot is not None:
        from edgevpr.runtime.localize.trackplot import draw_track

        fixes_xy = np.array([_xy(f) for f in kept]).reshape(-1, 2)
        accepted = np.array([f.accepted for f in kept], bool)
        title = f"{len(kept)} frames, {accepted.sum()} accepted ({localizer.mode} matching)"
        truth_xy = scorer.truth_xy() if scorer is not None and layout.kind == EAST_NORTH else None
        draw_track(layout.xy, fixes_xy, accepted, truth_xy, plot, title)
        click.echo(f"wrote {plot}", err=as_json)


def _peek(frames: FrameSource) -> list[StreamFrame]:
    first = list(itertools.islice(frames.frames, PEEK_FRAMES))
    frames.frames = itertools.chain(first, frames.frames)
    return first


def _scorer(positions: Positions | None, radius: float) -> TruthScorer | None:
    return None if positions is None else TruthScorer(positions, radius)


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


def _print_summary(
    fixes: list[Fix], score: TrackScore | None, localizer: Localizer, source: str, out: Path,
    fmt: str, as_json: bool,
) -> None:  # fmt: skip
    accepted = sum(f.accepted for f in fixes)
    if as_json:
        click.echo(json.dumps({
            "out": str(out), "format": fmt, "source": source, "frames": len(fixes),
            "accepted": accepted, "mode": localizer.mode, "length": localizer.length,
            "threshold": localizer.threshold, "calibrated": bool(localizer.calibration),
            "score": None if score is None else score.to_dict(),
        }))  # fmt: skip
        return
    line = (
        f"wrote {out} ({fmt}): {len(fixes)} frames from {source}, {accepted} fixes "
        f"accepted ({localizer.mode} matching over {localizer.length} frames, threshold "
        f"{localizer.threshold:.3f}{', calibrated' if localizer.calibration else ''})"
    )
    click.echo(line if score is None else f"{line}; {score.describe()}")
