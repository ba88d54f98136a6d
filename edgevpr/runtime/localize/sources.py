"""Where frames come from: a folder of images, a video file, a ROS 1 / ROS 2 bag, or a live
source (a camera, a network stream or a GStreamer pipeline: ``live``).

Each source yields :class:`StreamFrame` items lazily (a bag or a video is never read whole)
with a name, and a timestamp where the source has one: a bag's header stamps, a video's
position, or the timestamp field of evaluation-layout file names.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.images import IMAGE_SUFFIXES, list_images
from edgevpr.runtime.localize.layout import name_key, timestamp_value
from edgevpr.runtime.localize.live import LiveStats, NewestFrame, live_kind, open_capture
from edgevpr.runtime.localize.localizer import StreamFrame
from edgevpr.runtime.localize.rosmsg import IMAGE_TYPES, image_of, stamp_seconds
from edgevpr.runtime.placemap.place_record import record_for

BAG_SUFFIXES = (".bag", ".mcap", ".db3")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass
class FrameSource:
    """Frames to localise, lazily, with how many there are where known; ``notes``: what
    the source found wrong while it was read (a truncated video), for the user."""

    description: str
    frames: Iterator[StreamFrame]
    total: int | None = None
    kind: str = "folder"  # "folder", "video", "bag", "photos" or "live"
    path: Path | None = None
    notes: list[str] = field(default_factory=list)
    live: LiveStats | None = None  # live sources: frames read, localised and dropped


def open_source(
    source: str | os.PathLike[str], topic: str | None = None, max_frames: int | None = None,
    duration: float | None = None,
) -> FrameSource:  # fmt: skip
    """A folder of images, a video file, a bag (a ROS 1 ``.bag``, or a ROS 2 bag folder or
    its ``.mcap``/``.db3`` file; ``topic`` names the image topic where there are several),
    or a live source: a camera (``0``, ``/dev/video0``), a stream URL or a GStreamer
    pipeline, read until it ends, ``max_frames`` were localised or ``duration`` seconds."""
    spec = str(source)
    kind = None if Path(spec).exists() else live_kind(spec)
    if kind is not None:
        if topic is not None:
            raise EdgeVPRError("--topic applies to bags only")
        reader = NewestFrame(open_capture(spec, kind), spec if kind != "gstreamer" else kind)
        return FrameSource(f"{kind} {spec}", reader.frames(max_frames, duration), None,
                           "live", None, live=reader.stats)  # fmt: skip
    found = _recorded(Path(spec), topic)
    if max_frames is not None:
        found.frames = itertools.islice(found.frames, max_frames)
        found.total = max_frames if found.total is None else min(found.total, max_frames)
    return found


def _recorded(path: Path, topic: str | None) -> FrameSource:
    if not path.exists():
        raise EdgeVPRError(f"frame source {path} does not exist (nor is it a camera, a stream "
                           "URL or a GStreamer pipeline)")  # fmt: skip
    if (path / "metadata.yaml").is_file() or path.suffix.lower() in BAG_SUFFIXES:
        return bag_source(path, topic)
    if topic is not None:
        raise EdgeVPRError("--topic applies to bags only")
    if path.is_dir():
        return folder_source(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise EdgeVPRError(f"{path} is one image: give a folder of frames, a video or a bag")
    return video_source(path)


def folder_source(folder: Path) -> FrameSource:
    """The images directly inside ``folder``, in natural name order."""
    paths = sorted(list_images(folder), key=lambda p: name_key(p.name))
    if not paths:
        raise EdgeVPRError(f"no images in {folder}")

    def frames() -> Iterator[StreamFrame]:
        for path in paths:
            stamp = timestamp_value(record_for(path).timestamp)
            yield StreamFrame(path, timestamp=stamp, name=str(path))

    return FrameSource(f"{len(paths)} images in {folder}", frames(), len(paths), "folder", folder)


def video_source(path: Path) -> FrameSource:
    """A video file, frame by frame (BGR from OpenCV), timestamps from its position; a file
    that ends before the frame count its header gives is noted (truncated or damaged)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise EdgeVPRError(f"cannot open {path} as a video (OpenCV could not read it)")
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    source = FrameSource(f"video {path}", iter(()), total, "video", path)

    def frames() -> Iterator[StreamFrame]:
        index = 0
        try:
            while True:
                ok, image = capture.read()
                if not ok:
                    break
                seconds = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                yield StreamFrame(image, seconds, f"{path.name}#{index}", encoding="bgr8")
                index += 1
        finally:
            capture.release()
        if total is not None and index < total:
            source.notes.append(f"read {index} of the {total} frames {path.name}'s header "
                                "gives: the video is truncated or damaged")  # fmt: skip

    source.frames = frames()
    return source


def bag_source(path: Path, topic: str | None) -> FrameSource:
    """The image messages of one topic of a ROS 1 or ROS 2 bag (read with ``rosbags``)."""
    from edgevpr.runtime.tracks.bags import open_bag_reader

    reader = open_bag_reader(path)
    from rosbags.highlevel import AnyReaderError
    images = [c for c in reader.connections if c.msgtype in IMAGE_TYPES]
    found = sorted({c.topic for c in images})
    if topic is None and len(found) == 1:
        topic = found[0]
    chosen = [c for c in images if c.topic == topic]
    if not chosen:
        reader.close()
        listed = ", ".join(found) or "none"
        raise EdgeVPRError(
            f"bag {path}: give --topic with one of its image topics ({listed})"
            if topic is None
            else f"bag {path} has no image topic {topic} (image topics: {listed})"
        )
    total = sum(c.msgcount for c in chosen)

    def frames() -> Iterator[StreamFrame]:
        try:
            for index, (connection, stamp_ns, raw) in enumerate(reader.messages(chosen)):
                message = reader.deserialize(raw, connection.msgtype)
                image, encoding = image_of(message, connection.msgtype)
                seconds = stamp_seconds(message)
                yield StreamFrame(
                    image,
                    seconds if seconds is not None else stamp_ns * 1e-9,
                    f"{topic}#{index}",
                    encoding=encoding,
                )
        except AnyReaderError as exc:
            raise EdgeVPRError(f"bag {path} is damaged: {exc}") from None
        finally:
            reader.close()

    return FrameSource(f"{total} messages on {topic} in {path}", frames(), total, "bag", path)
