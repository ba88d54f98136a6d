"""What ``index build`` and ``index add`` take to teach a map from a recorded drive (a
video, a bag, a folder of frames or of geotagged photos): where positions come from, which
frames become places, and the drive's name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import click

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.images import IMAGE_SUFFIXES
from edgevpr.runtime.commands.query import PathArg, with_options
from edgevpr.runtime.embedder import Embedder
from edgevpr.runtime.placemap.build.drive import (
    DriveCheckpoint,
    DriveReport,
    KeyframeOptions,
    embed_drive,
    is_photo_folder,
    open_drive,
)
from edgevpr.runtime.placemap.build.resumable import remove_partial
from edgevpr.runtime.tracks.positions import PositionOptions, parse_start_time
from edgevpr.runtime.tracks.track import DEFAULT_MAX_GAP_S


def drive_options(command: Callable) -> Callable:
    """The options of teaching from a recorded drive."""
    options = [
        click.option("--track", type=PathArg, default=None,
                     help="Positions beside a video or folder: GPX, CSV (time,lat,lon or "
                     "time,east,north[,zone]), TUM or DJI .SRT."),
        click.option("--position-topic", default=None,
                     help="Bags: the NavSatFix, Odometry, pose or /tf topic (automatic where "
                     "the bag has one)."),
        click.option("--topic", default=None, help="Bags: the image topic."),
        click.option("--frames", default=None, help="/tf: PARENT:CHILD frames (map:base_link)."),
        click.option("--max-gap", type=click.FloatRange(0, min_open=True),
                     default=DEFAULT_MAX_GAP_S, show_default=True,
                     help="Seconds a frame may be from the nearest position (else skipped)."),
        click.option("--time-offset", type=float, default=0.0, show_default=True,
                     help="Seconds added to the track's times (unsynchronised clocks)."),
        click.option("--start-time", default=None,
                     help="When the video's first frame was taken (ISO 8601 or seconds since "
                     "1970), for tracks with absolute times; default: the video's creation "
                     "time."),
        click.option("--spacing", type=click.FloatRange(0, min_open=True), default=None,
                     help="No positions: metres between frames (a route map in metres "
                     "travelled)."),
        click.option("--every", type=click.FloatRange(0), default=0.0, show_default=True,
                     help="Keep a frame every this many metres travelled (0: every frame)."),
        click.option("--min-novelty", type=click.FloatRange(0, 2), default=0.0,
                     show_default=True,
                     help="Skip frames within this of the last kept (1 - cosine)."),
        click.option("--max-blur", type=click.FloatRange(0), default=0.0, show_default=True,
                     help="Skip frames blurrier than this: variance of the Laplacian below it."),
        click.option("--drive", "drive", default=None,
                     help="The drive's name in the map (default: the source's name)."),
    ]  # fmt: skip
    return with_options(command, options)


@dataclass(frozen=True)
class DriveArgs:
    """The drive options as given on the command line."""

    track: Path | None = None
    position_topic: str | None = None
    topic: str | None = None
    frames: str | None = None
    max_gap: float = DEFAULT_MAX_GAP_S
    time_offset: float = 0.0
    start_time: str | None = None
    spacing: float | None = None
    every: float = 0.0
    min_novelty: float = 0.0
    max_blur: float = 0.0
    drive: str | None = None

    @classmethod
    def of(cls, given: dict[str, Any]) -> DriveArgs:
        """The drive options taken out of a command's ``given`` keyword arguments."""
        return cls(**{field.name: given.pop(field.name) for field in fields(cls)})

    def given(self) -> bool:
        """Whether any option of teaching from a drive was given."""
        return self != DriveArgs()

    @property
    def positions(self) -> PositionOptions:
        return PositionOptions(self.track, self.position_topic, self.frames, self.max_gap,
                               self.time_offset, parse_start_time(self.start_time),
                               self.spacing)  # fmt: skip

    @property
    def keyframes(self) -> KeyframeOptions:
        return KeyframeOptions(self.every, self.min_novelty, self.max_blur)


def is_drive(source: Path, args: DriveArgs) -> bool:
    """Whether SOURCE is taught as a recorded drive (a video, a bag, any drive option, or
    geotagged photos) rather than listed as images named with their coordinates."""
    if args.given() or (source / "metadata.yaml").is_file():
        return True
    if not source.is_dir():
        return source.suffix.lower() not in IMAGE_SUFFIXES  # a video or a bag file
    return is_photo_folder(source)


def teach(
    embedder: Embedder, source: Path, args: DriveArgs, folder: Path, fresh: bool,
    quiet: bool, on_unreadable: Any, taken: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[DriveCheckpoint, DriveReport]:  # fmt: skip
    """Embed a drive's keyframes into the work folder ``folder`` (resuming what it holds);
    ``taken``: drive names the map already has."""
    frames, positions = open_drive(source, args.topic, args.positions)
    unplaced = positions.unplaced()
    if unplaced and on_unreadable is None:  # refused before anything is embedded
        shown = ", ".join(Path(name).name for name in unplaced[:3])
        raise EdgeVPRError(f"{len(unplaced)} of {frames.total} frames have {positions.reason()} "
                           f"({shown}{', ...' if len(unplaced) > 3 else ''}): "
                           "--skip-unreadable lists and skips them")  # fmt: skip
    name = args.drive or source.stem or source.name
    if name in taken:
        raise EdgeVPRError(f"the map already holds a drive named {name!r}: name this one "
                           "with --drive")  # fmt: skip
    if fresh and folder.exists():
        remove_partial(folder)
    stat = source.stat()
    identity = {"fingerprint": embedder.fingerprint, "source": str(source.resolve()),
                "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "drive": name,
                "positions": positions.description, "kind": positions.kind,
                "zone": positions.zone, "keyframes": asdict(args.keyframes),
                "max_gap": args.max_gap, "time_offset": args.time_offset,
                "base": positions.base}  # fmt: skip
    checkpoint = DriveCheckpoint(folder, identity, embedder.descriptor_dim)
    if checkpoint.embedded:
        click.echo(f"resuming: {checkpoint.embedded} places of drive {name} already embedded "
                   f"(in {folder})", err=True)  # fmt: skip
    try:
        report = embed_drive(embedder, frames, positions, checkpoint, args.keyframes,
                             not quiet, on_unreadable)  # fmt: skip
    except BaseException:
        if not checkpoint.embedded:  # nothing to resume from
            checkpoint.remove()
        raise
    if not checkpoint.embedded:
        checkpoint.remove()
        raise EdgeVPRError(f"no frame of {frames.description} became a place "
                           f"({report.describe()}; positions from {positions.description}"
                           f"{positions.coverage()})")  # fmt: skip
    return checkpoint, report
