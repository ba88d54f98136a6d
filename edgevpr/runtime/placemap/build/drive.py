"""Teaching a map from a recorded drive: a video, a bag, a folder of frames or geotagged
photos, each frame placed by ``tracks.positions``, keyframes kept by distance travelled,
sharpness and novelty, embedded into a resumable work folder (``<out>.partial``), then
built into a map like any other build (``resumable.build_from_checkpoint``).

Each place records its drive (``drive``), its frame's order in it (``order``) and the
metres travelled along it (``route_m``), so a map can hold several drives of one road and a
localizer can follow each in its own order.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.files import remove_tree
from edgevpr.core.images import list_images
from edgevpr.runtime.embedder import Embedder
from edgevpr.runtime.localize.sources import FrameSource, open_source
from edgevpr.runtime.localize.stream import StreamFrame, prepared_frame
from edgevpr.runtime.placemap.build.resumable import (
    CHUNK_GLOB,
    claim_work_folder,
    progress_bar,
    read_chunk,
    write_chunk,
)
from edgevpr.runtime.placemap.place_record import PlaceRecord
from edgevpr.runtime.tracks.photos import photo_position
from edgevpr.runtime.tracks.positions import (
    FramePosition,
    PhotoPositions,
    PositionOptions,
    Positions,
    open_positions,
)
from edgevpr.runtime.tracks.track import ROUTE_M

CHUNK_PLACES = 512
Unreadable = Callable[[StreamFrame, EdgeVPRError], None]
PEEK_FRAMES = 8  # frames looked at first, to tell names with coordinates from photos
POSITION_COLUMNS = ("first", "second", "heading", "route_m", "time")


@dataclass(frozen=True)
class KeyframeOptions:
    """Which frames become places: one every ``every`` metres travelled (0: every frame
    placed), none sharper-than-nothing (``max_blur``: variance of the Laplacian below it
    counts as blurred), none within ``min_novelty`` (1 - cosine) of the last kept."""

    every: float = 0.0
    min_novelty: float = 0.0
    max_blur: float = 0.0


@dataclass
class DriveReport:
    """What became of a drive's frames."""

    frames: int = 0
    kept: int = 0
    resumed: int = 0
    skipped: Counter = field(default_factory=Counter)

    def describe(self) -> str:
        reasons = ", ".join(f"{n} {why}" for why, n in self.skipped.most_common())
        resumed = f" ({self.resumed} from an interrupted build)" if self.resumed else ""
        return f"{self.kept} of {self.frames} frames kept{resumed}" + (
            f"; skipped: {reasons}" if reasons else "")  # fmt: skip


def open_drive(source: Path, topic: str | None, options: PositionOptions
               ) -> tuple[FrameSource, Positions]:  # fmt: skip
    """The frames of a recorded drive and where each was taken."""
    if options.track is None and is_photo_folder(source):
        if options.position_topic is not None or topic is not None:
            raise EdgeVPRError("--topic and --position-topic apply to bags only")
        return _photos(source)
    frames = open_source(source, topic)
    first = list(itertools.islice(frames.frames, PEEK_FRAMES))
    frames.frames = itertools.chain(first, frames.frames)
    positions = open_positions(source, frames.kind, first, options)
    return frames, positions


def is_photo_folder(source: Path) -> bool:
    """Whether ``source`` is a folder of photos carrying their own GPS position."""
    if not source.is_dir() or (source / "metadata.yaml").is_file():
        return False
    images = list_images(source)
    return bool(images) and photo_position(images[0]) is not None


def _photos(folder: Path) -> tuple[FrameSource, PhotoPositions]:
    """Geotagged photos in the order they were taken (EXIF time; those without one after
    them, by name), each photo's position read once."""
    paths = list_images(folder)
    found = {str(p): photo_position(p) for p in paths}
    times = {p: (f.time if (f := found[str(p)]) is not None else None) for p in paths}
    ordered = sorted(paths, key=lambda p: (times[p] is None, times[p] or 0.0, p.name))
    frames = (StreamFrame(p, timestamp=times[p], name=str(p)) for p in ordered)
    source = FrameSource(f"{len(paths)} photos in {folder}", frames, len(paths), "photos", folder)
    return source, PhotoPositions(found)


class KeyframeFilter:
    """The keyframe rules over a stream, remembering the last frame kept."""

    def __init__(self, options: KeyframeOptions) -> None:
        self.options = options
        self.last_xy: np.ndarray | None = None
        self.last_descriptor: np.ndarray | None = None
        self.travelled = 0.0  # metres along the drive to the last candidate

    def moved_enough(self, position: FramePosition) -> bool:
        xy = np.array([position.first, position.second])
        step = 0.0 if self.last_xy is None else float(np.linalg.norm(xy - self.last_xy))
        if self.last_xy is not None and step < self.options.every:
            return False
        self.travelled += step
        self.last_xy = xy
        return True

    def sharp(self, rgb: np.ndarray) -> bool:
        if not self.options.max_blur:
            return True
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        return float(cv2.Laplacian(grey, cv2.CV_64F).var()) >= self.options.max_blur

    def novel(self, descriptor: np.ndarray) -> bool:
        if self.options.min_novelty and self.last_descriptor is not None:
            if 1.0 - float(descriptor @ self.last_descriptor) < self.options.min_novelty:
                return False
        self.last_descriptor = descriptor
        return True


class DriveCheckpoint:
    """A drive's work folder: chunks of kept frames (their order, descriptor, position and
    time), named by sha256 and checked when read; resuming skips the frames they cover."""

    def __init__(self, folder: Path, identity: dict[str, Any], dim: int) -> None:
        self.folder, self.dim = folder, dim
        claim_work_folder(folder, identity, "another drive or model")
        self.identity = identity
        self.last_frame, self.embedded = -1, 0
        self.last: tuple[np.ndarray, np.ndarray, float] | None = None  # xy, descriptor, metres
        for chunk in self.chunks():
            arrays = self._read(chunk)
            self.last_frame = int(arrays["order"][-1])
            self.embedded += len(arrays["order"])
            row = arrays["position"][-1]
            self.last = (row[:2], arrays["descriptors"][-1], float(row[3]))

    def chunks(self) -> list[Path]:
        return sorted(self.folder.glob(CHUNK_GLOB))

    def write(self, order: np.ndarray, descriptors: np.ndarray, position: np.ndarray,
              names: list[str]) -> None:  # fmt: skip
        write_chunk(self.folder, int(order[0]), {
            "order": order.astype(np.int64), "descriptors": descriptors.astype(np.float32),
            "position": position.astype(np.float64),
            "names": np.frombuffer(json.dumps(names).encode(), np.uint8)})  # fmt: skip
        self.embedded += len(order)
        self.last_frame = int(order[-1])

    def _read(self, chunk: Path, after: int = -1) -> dict[str, np.ndarray]:
        arrays = read_chunk(chunk, {"order": np.int64, "descriptors": np.float32,
                                    "position": np.float64, "names": np.uint8})  # fmt: skip
        order, count = arrays["order"], len(arrays["order"])
        refuse = f"{chunk} is not a chunk of this build"
        if (arrays["descriptors"].shape != (count, self.dim)
                or arrays["position"].shape != (count, len(POSITION_COLUMNS))):  # fmt: skip
            raise EdgeVPRError(f"{refuse} (its arrays have other shapes)")
        if not count or order[0] <= after or (np.diff(order) <= 0).any():
            raise EdgeVPRError(f"{refuse} (its frames repeat another chunk's); build with --fresh")
        if not np.isfinite(arrays["descriptors"]).all():
            raise EdgeVPRError(f"{chunk} holds NaN or infinite descriptors; build with --fresh")
        return arrays

    def remove(self) -> None:
        remove_tree(self.folder)

    def places(self) -> Iterator[tuple[np.ndarray, list[PlaceRecord]]]:
        """(descriptors, records) chunk by chunk, in drive order."""
        after = -1
        for chunk in self.chunks():
            arrays = self._read(chunk, after)
            after = int(arrays["order"][-1])
            try:
                names = json.loads(arrays["names"].tobytes())
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise EdgeVPRError(f"{chunk} has unreadable names; build with --fresh") from None
            if not isinstance(names, list) or len(names) != len(arrays["order"]):
                raise EdgeVPRError(f"{chunk} names other frames; build with --fresh")
            yield arrays["descriptors"], self._records(arrays, names)

    def _records(self, arrays: dict[str, np.ndarray], names: list) -> list[PlaceRecord]:
        kind, zone, drive = self.identity["kind"], self.identity["zone"], self.identity["drive"]
        records = []
        for order, row, name in zip(arrays["order"].tolist(), arrays["position"], names,
                                    strict=True):  # fmt: skip
            first, second, heading, metres, time = (float(v) for v in row)
            fields: dict[str, Any] = {"path": str(name), "drive": drive, "order": order,
                                      "route_m": metres}  # fmt: skip
            if kind != ROUTE_M:
                fields.update(east=first, north=second, utm_zone=zone,
                              heading=None if np.isnan(heading) else heading % 360.0)  # fmt: skip
            if not np.isnan(time):
                fields["timestamp"] = time
            records.append(PlaceRecord(**fields))
        return records


def embed_drive(
    embedder: Embedder, frames: FrameSource, positions: Positions, checkpoint: DriveCheckpoint,
    keyframes: KeyframeOptions, progress: bool,
    on_unreadable: Unreadable | None,
) -> DriveReport:  # fmt: skip
    """Embed the drive's keyframes into ``checkpoint`` (frames it already holds skipped)."""
    selection = _Selection(embedder, positions, checkpoint, keyframes, on_unreadable)
    kept: list[tuple[int, StreamFrame, FramePosition, float, np.ndarray]] = []
    with progress_bar(frames.total or 0, 0, progress) as bar:
        for _, descriptors in embedder.stream(selection.candidates(frames), progress=False):
            for descriptor in descriptors:
                index, frame, position, metres = selection.pending.popleft()
                bar.update(1)
                if not selection.rules.novel(descriptor):
                    selection.skip(f"within novelty {keyframes.min_novelty:g} of the last")
                    continue
                kept.append((index, frame, position, metres, descriptor))
                if len(kept) >= CHUNK_PLACES:
                    _flush(checkpoint, kept, positions)
    _flush(checkpoint, kept, positions)
    selection.report.kept = checkpoint.embedded
    return selection.report


class _Selection:
    """Which frames of a drive are embedded: placed, moved enough, readable and sharp."""

    def __init__(
        self, embedder: Embedder, positions: Positions, checkpoint: DriveCheckpoint,
        keyframes: KeyframeOptions, on_unreadable: Unreadable | None,
    ) -> None:  # fmt: skip
        self.embedder, self.positions, self.checkpoint = embedder, positions, checkpoint
        self.keyframes, self.on_unreadable = keyframes, on_unreadable
        self.rules = KeyframeFilter(keyframes)
        if checkpoint.last is not None:
            self.rules.last_xy, self.rules.last_descriptor, self.rules.travelled = checkpoint.last
        self.report = DriveReport(resumed=checkpoint.embedded)
        # what the decoding side passed on, in order: frame index, frame, position, metres
        self.pending: deque[tuple[int, StreamFrame, FramePosition, float]] = deque()

    def skip(self, reason: str) -> None:
        self.report.skipped[reason] += 1

    def candidates(self, frames: FrameSource) -> Iterator[np.ndarray]:
        for index, frame in enumerate(frames.frames):
            self.report.frames += 1
            if index > self.checkpoint.last_frame:
                rgb = self._candidate(index, frame)
                if rgb is not None:
                    yield rgb

    def _candidate(self, index: int, frame: StreamFrame) -> np.ndarray | None:
        position = self.positions.of(frame, index)
        if position is None:
            self._unplaced(frame)
            return None
        if not self.rules.moved_enough(position):
            self.skip(f"within {self.keyframes.every:g} m of the last")
            return None
        try:
            rgb, _ = prepared_frame(frame.image, frame.encoding, self.embedder.spec)
        except EdgeVPRError as exc:
            if self.on_unreadable is None:
                raise
            self.on_unreadable(frame, exc)
            self.skip("unreadable")
            return None
        if not self.rules.sharp(rgb):
            self.skip("blurred")
            return None
        self.pending.append((index, frame, position, self.rules.travelled))
        return rgb

    def _unplaced(self, frame: StreamFrame) -> None:
        """A frame without a position: passed by, or bad input where positions are required."""
        reason = self.positions.reason()
        # where positions are required, teach() refused them all up front unless they are
        # to be listed and skipped
        if self.positions.required and self.on_unreadable is not None:
            self.on_unreadable(frame, EdgeVPRError(f"{frame.name or frame.image}: {reason}"))
        self.skip(reason)


def _flush(checkpoint: DriveCheckpoint, kept: list, positions: Positions) -> None:
    if not kept:
        return
    order = np.array([k[0] for k in kept], np.int64)
    descriptors = np.stack([k[4] for k in kept])
    rows = np.array([[p.first, p.second, np.nan if p.heading is None else p.heading, metres,
                      np.nan if frame.timestamp is None else frame.timestamp + positions.base]
                     for _, frame, p, metres, _ in kept], np.float64)  # fmt: skip
    names = [str(frame.name or frame.image) for _, frame, *_ in kept]
    checkpoint.write(order, descriptors, rows, names)
    kept.clear()
