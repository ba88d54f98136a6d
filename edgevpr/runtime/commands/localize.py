"""``edgevpr localize MAP SOURCE --model MODEL --out track.EXT``: a track from a folder of
frames, a video, a ROS bag or a live source (camera, stream URL, GStreamer pipeline), in any
of the track formats (JSON lines, CSV, TUM, GPX, GeoJSON, KML, a ROS 2 bag; ``-`` streams
JSON lines to standard output), scored against a truth where one is given, optionally
served to Foxglove as it runs (torch-free).

SIGINT and SIGTERM end a run cleanly: the fixes so far are written whole, nothing temporary
is left behind.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from edgevpr.core.errors import EdgeVPRError, Interrupted
from edgevpr.runtime.commands.query import (
    VERIFY_HELP,
    PathArg,
    model_options,
    open_embedder,
    with_options,
)
from edgevpr.runtime.localize.fix import Fix
from edgevpr.runtime.localize.localizer import AUTO, MODES, Localizer
from edgevpr.runtime.localize.route import DEFAULT_SPEEDS, MAX_PACE, MIN_PACE, RouteConfig
from edgevpr.runtime.localize.sources import FrameSource, open_source
from edgevpr.runtime.localize.stream import StreamFrame
from edgevpr.runtime.localize.truth import TrackScore, TruthScorer, truth_positions
from edgevpr.runtime.placemap import PlaceMap
from edgevpr.runtime.tracks.positions import PositionOptions, parse_start_time
from edgevpr.runtime.tracks.track import DEFAULT_MAX_GAP_S, EAST_NORTH
from edgevpr.runtime.tracks.writers import (
    STDOUT,
    TRACK_FORMATS,
    TrackFrame,
    TrackWriter,
    track_format,
    track_writer,
)

DEFAULT_RADIUS_M = 25.0
PEEK_FRAMES = 8  # frames looked at first, to tell whether their names carry the truth
FORMAT_HELP = "; ".join(f"{f.name} ({'/'.join(f.suffixes) or 'a folder'}): {f.about}"
                        for f in TRACK_FORMATS.values())  # fmt: skip
NO_CALIBRATION = "none"


def speeds_list(text: str | None) -> tuple[float, ...] | None:
    """``--speeds 0.5,1,2``: relative speeds (places a frame) the route search tries."""
    if text is None:
        return None
    try:
        speeds = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise EdgeVPRError(f"--speeds {text!r}: give numbers separated by commas") from None
    if not speeds:
        raise EdgeVPRError("--speeds needs at least one speed")
    return speeds


def localize_options(command: Callable) -> Callable:
    """Every option of ``edgevpr localize`` (collected into :class:`LocalizeArgs`)."""
    options = [
        click.option("--model", "-m", "model", type=PathArg, required=True,
                     help="The model that built MAP."),
        click.option("--out", "-o", "out", type=PathArg, required=True,
                     help="Track to write, its format chosen by the suffix; - streams JSON "
                     "lines to standard output as the fixes come."),
        click.option("--format", "track_format_name", type=click.Choice(list(TRACK_FORMATS)),
                     default=None, help=f"The track format, whatever the suffix: {FORMAT_HELP}."),
        click.option("--truth", default=None,
                     help="True positions: a position topic of the bag SOURCE (/gps/fix), or a "
                     "GPX, CSV, TUM or SRT file (default: the frames' names, where they carry "
                     "coordinates)."),
        click.option("--max-gap", type=click.FloatRange(0, min_open=True),
                     default=DEFAULT_MAX_GAP_S, show_default=True,
                     help="--truth: seconds a frame may be from a true position."),
        click.option("--time-offset", type=float, default=0.0, show_default=True,
                     help="--truth: seconds added to the truth's times."),
        click.option("--start-time", default=None,
                     help="--truth with absolute times over a video: when its first frame was "
                     "taken (default: the video's creation time)."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print the summary as one JSON object (with the score where there is "
                     "a truth)."),
        click.option("--plot", type=PathArg,
                     help="Also draw the track: top view, error and confidence against time, "
                     "and the frames x places similarity (PNG)."),
        click.option("--foxglove", "foxglove_port", type=click.IntRange(0, 65535), default=None,
                     help="Serve the run live to Foxglove on this port (0: any free port)."),
        click.option("--foxglove-mcap", type=PathArg, default=None,
                     help="Write the live view's channels to this .mcap for later viewing."),
        click.option("--topic", help="Bags: the image topic (sensor_msgs/Image or "
                     "CompressedImage)."),
        click.option("--mode", type=click.Choice(MODES), default=AUTO, show_default=True,
                     help="route: sequence matching along the map's travel order; area: a "
                     "filter over 2-D places; auto: route when consecutive places are "
                     "neighbours."),
        click.option("--length", type=click.IntRange(1, 1000), default=10, show_default=True,
                     help="Frames of evidence (L)."),
        click.option("--speeds", default=None,
                     help="Route matching: relative speeds searched, multiples of the pace "
                     f"(default {','.join(f'{v:g}' for v in DEFAULT_SPEEDS)})."),
        click.option("--pace", type=click.FloatRange(MIN_PACE, MAX_PACE), default=None,
                     help="Route matching: places a frame at speed 1 (default: the map's "
                     "own, 1 over the recorded frames between its places: 0.25 for a drive "
                     "keyframed every fourth frame; else 1)."),
        click.option("--threshold", type=float, default=None,
                     help="Accept fixes with at least this margin; overrides the "
                     "calibration's threshold (default: MAP's calibration, else the mode's "
                     "default)."),
        click.option("--calibration", default=None,
                     help="A calibration file, or 'none' to ignore the one beside the map "
                     "(default: MAP.localizer.json where it fits this model and matching)."),
        click.option("--max-speed", type=click.FloatRange(0, min_open=True), default=None,
                     help="Area maps with timestamps: metres per second the robot can move."),
        click.option("-k", "--k", "k", type=click.IntRange(1, 1000), default=5,
                     show_default=True, help="Nearest places written with each fix."),
        click.option("--radius", type=click.FloatRange(0, min_open=True),
                     default=DEFAULT_RADIUS_M, show_default=True,
                     help="Metres within which a fix counts as right (where there is a "
                     "truth)."),
        click.option("--max-frames", "--limit", "max_frames", type=click.IntRange(1),
                     default=None, help="Stop after this many frames."),
        click.option("--duration", type=click.FloatRange(0, min_open=True), default=None,
                     help="Live sources: stop after this many seconds."),
        click.option("--skip-unreadable", is_flag=True,
                     help="Warn about and skip unreadable frames."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
        click.option("--verify", is_flag=True, help=VERIFY_HELP),
    ]  # fmt: skip
    return with_options(command, options)


@dataclass(frozen=True)
class LocalizeArgs:
    """The command line of ``edgevpr localize``, as given."""

    map_path: Path
    source: str
    model: Path
    out: Path
    track_format_name: str | None
    truth: str | None
    max_gap: float
    time_offset: float
    start_time: str | None
    as_json: bool
    plot: Path | None
    foxglove_port: int | None
    foxglove_mcap: Path | None
    topic: str | None
    mode: str
    length: int
    speeds: str | None
    pace: float | None
    threshold: float | None
    calibration: str | None
    max_speed: float | None
    k: int
    radius: float
    max_frames: int | None
    duration: float | None
    skip_unreadable: bool
    quiet: bool
    verify: bool
    batch: int | None
    threads: int | None
    providers: tuple[str, ...]

    @property
    def calibration_choice(self) -> Any:
        """What the Localizer is given: the file, None ('none'), or AUTO (the map's own)."""
        if self.calibration is None:
            return AUTO
        return None if self.calibration.lower() == NO_CALIBRATION else Path(self.calibration)


@click.command()
@click.argument("map_path", metavar="MAP", type=PathArg)
@click.argument("source")
@localize_options
@model_options
def localize(**given: Any) -> None:
    """Localise every frame of SOURCE in MAP: a folder of images, a video, a ROS 1/2 bag, a
    camera (0, /dev/video0), a stream URL (rtsp://, http://) or a GStreamer pipeline (where
    OpenCV has GStreamer). Writes the track to OUT (atomically: a failed run leaves OUT as
    it was; SIGINT or SIGTERM keep the fixes so far). Prints how many fixes were accepted
    and, where there is a truth (--truth, or frame names with coordinates), how right they
    were: the accepted fixes within --radius, their error median and p95, and the share of
    all fixes within it."""
    args = LocalizeArgs(**given)
    fmt = track_format(args.out, args.track_format_name)
    placemap = PlaceMap.load(args.map_path, verify=args.verify)
    embedder = open_embedder(args.model, args.batch, args.threads, args.providers)
    frames = open_source(args.source, args.topic, args.max_frames, args.duration)
    first = _peek(frames)
    options = PositionOptions(max_gap=args.max_gap, time_offset=args.time_offset,
                              start_time=parse_start_time(args.start_time))  # fmt: skip
    positions = truth_positions(args.truth, Path(args.source), frames.kind, first, options)
    scorer = None if positions is None else TruthScorer(positions, args.radius)
    speeds = speeds_list(args.speeds)
    route = RouteConfig(speeds=speeds or DEFAULT_SPEEDS, pace=args.pace)
    localizer = Localizer(
        embedder, placemap, mode=args.mode, length=args.length,
        calibration=args.calibration_choice, threshold=args.threshold,
        max_speed=args.max_speed, k=args.k,
        route=route,
    )  # fmt: skip
    if localizer.calibration_note:
        click.echo(f"warning: {localizer.calibration_note}", err=True)
    run = Run(args, localizer, frames, scorer)
    run.track(fmt.name)
    for note in frames.notes:
        click.echo(f"warning: {note}", err=True)
    _print_summary(run, fmt.name, args)
    if args.plot is not None:
        run.draw(args.plot)
        click.echo(f"wrote {args.plot}", err=args.as_json or str(args.out) == STDOUT)


@dataclass
class Run:
    """One localisation run: the frames through the localizer, each fix to the track, the
    truth and the live view; what the summary and the plot need is kept (light fixes)."""

    args: LocalizeArgs
    localizer: Localizer
    frames: FrameSource
    scorer: TruthScorer | None
    kept: list[Fix] = field(default_factory=list)
    stopped: str | None = None  # the signal that ended the run, if one did
    similar: list[tuple[int, int, float]] = field(default_factory=list)  # --plot only

    def track(self, format_name: str) -> None:
        args, layout = self.args, self.localizer.layout
        frame = TrackFrame(layout.kind, bool(layout.coordinates.utm_zones))
        viewer = _viewer(args, self.localizer)
        seen: deque[StreamFrame] = deque()  # the frames awaiting their fix, for the viewer
        frames = self.frames.frames if viewer is None else _remembered(self.frames.frames, seen)
        fixes = self.localizer.run(frames, progress=not args.quiet,
                                   on_unreadable=_report if args.skip_unreadable else None)
        with track_writer(args.out, TRACK_FORMATS[format_name], frame) as writer:
            try:
                self._follow(fixes, seen, writer, viewer)
            except Interrupted as signal:
                self.stopped = signal.name
            finally:
                if viewer is not None:
                    viewer.close()

    def _follow(self, fixes: Iterator[Fix], seen: deque[StreamFrame], writer: TrackWriter,
                viewer: Any) -> None:  # fmt: skip
        for fix in fixes:
            writer.add(fix)
            self.kept.append(_light(fix))
            if self.args.plot is not None:
                places = self.localizer.layout.index_of(np.array([m.id for m in fix.matches]))
                self.similar += [(fix.frame, int(p), m.score)
                                 for p, m in zip(places, fix.matches, strict=True)]  # fmt: skip
            if self.scorer is not None:
                self.scorer.add(fix, StreamFrame(None, fix.timestamp, fix.name))
            if viewer is not None:
                viewer.show(fix, _frame_of(fix, seen))

    def draw(self, path: Path) -> None:
        from edgevpr.runtime.localize.trackplot import TrackFigure, draw_track

        truth = None
        if self.scorer is not None and self.localizer.layout.kind == EAST_NORTH:
            truth = self.scorer.truth_xy()
        similar = np.array(self.similar, np.float64)
        draw_track(TrackFigure.of(self.kept, similar, truth, self.localizer, self.args.radius),
                   path)  # fmt: skip


def _remembered(frames: Iterator[StreamFrame], seen: deque[StreamFrame]) -> Iterator[StreamFrame]:
    """The frames, each kept in ``seen`` until its fix comes out (for the live view)."""
    for frame in frames:
        seen.append(frame)
        yield frame


def _frame_of(fix: Fix, seen: deque[StreamFrame]) -> StreamFrame | None:
    """The frame a fix is for (frames skipped as unreadable are dropped on the way)."""
    while seen:
        frame = seen.popleft()
        if fix.name is None or frame.name == fix.name or str(frame.image) == fix.name:
            return frame
    return None


def _viewer(args: LocalizeArgs, localizer: Localizer) -> Any:
    if args.foxglove_port is None and args.foxglove_mcap is None:
        return None
    from edgevpr.runtime.localize.liveview import LiveView

    view = LiveView(localizer, args.foxglove_port, args.foxglove_mcap)
    if view.port is not None:
        click.echo(f"foxglove: ws://127.0.0.1:{view.port} (open it in Foxglove)", err=True)
    return view


def _report(frame: Any, exc: EdgeVPRError) -> None:
    click.echo(f"warning: skipped {exc}", err=True)


def _peek(frames: FrameSource) -> list[StreamFrame]:
    if frames.kind == "live":
        return []  # a live frame is for now, not for looking ahead
    first = list(itertools.islice(frames.frames, PEEK_FRAMES))
    frames.frames = itertools.chain(first, frames.frames)
    return first


def _light(fix: Fix) -> Fix:
    """The fix without its matches' records (a long stream keeps only what the summary and
    the plot need)."""
    return Fix(frame=fix.frame, state=fix.state, accepted=fix.accepted,
               confidence=fix.confidence, margin=fix.margin, position=fix.position,
               name=fix.name, reason=fix.reason, place_id=fix.place_id,
               route_position=fix.route_position, timestamp=fix.timestamp)  # fmt: skip


def _print_summary(run: Run, fmt: str, args: LocalizeArgs) -> None:
    fixes, localizer, frames = run.kept, run.localizer, run.frames
    score: TrackScore | None = None if run.scorer is None else run.scorer.score()
    accepted = sum(f.accepted for f in fixes)
    to_stderr = str(args.out) == STDOUT  # standard output carries the track itself
    if args.as_json:
        click.echo(json.dumps({
            "out": str(args.out), "format": fmt, "source": frames.description,
            "frames": len(fixes), "accepted": accepted, "mode": localizer.mode,
            "length": localizer.length, "pace": localizer.pace, "threshold": localizer.threshold,
            "calibrated": bool(localizer.calibration), "stopped_by": run.stopped,
            "live": None if frames.live is None else vars(frames.live),
            "score": None if score is None else score.to_dict(),
        }), err=to_stderr)  # fmt: skip
        return
    line = (
        f"wrote {args.out} ({fmt}): {len(fixes)} frames from {frames.description}, {accepted} "
        f"fixes accepted ({localizer.mode} matching over {localizer.length} frames"
        f"{'' if localizer.pace in (None, 1.0) else f' at {localizer.pace:g} places a frame'}"
        f", threshold {localizer.threshold:.3f}{', calibrated' if localizer.calibration else ''})"
    )
    if frames.live is not None:
        line += f"; live: {frames.live.describe()}"
    if run.stopped:
        line += f"; stopped by {run.stopped}, the fixes so far kept"
    click.echo(line if score is None else f"{line}; {score.describe()}", err=to_stderr)
