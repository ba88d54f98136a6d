"""Live frames: a camera (``0``, ``/dev/video0``), a network stream (RTSP, HTTP MJPEG, ...)
or a GStreamer pipeline, read by OpenCV on a thread of its own that keeps only the newest
frame: when the model is slower than the camera, the localizer always gets the latest
image (latency stays one frame), and the frames it never saw are counted as dropped.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.runtime.localize.stream import StreamFrame

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
OPEN_TIMEOUT_S = 10.0  # a URL or camera that does not answer in this long is refused
READ_TIMEOUT_S = 10.0  # a stream that sends nothing for this long has stopped


def live_kind(spec: str) -> str | None:
    """"camera", "url" or "gstreamer" for a live source, None for anything else (a path)."""
    if spec.isdigit() or re.fullmatch(r"/dev/video\d+", spec):
        return "camera"
    if re.match(rf"({'|'.join(URL_SCHEMES)})://", spec, re.IGNORECASE):
        return "url"
    if "!" in spec:
        return "gstreamer"
    return None


def has_gstreamer() -> bool:
    """Whether this OpenCV was built with GStreamer (Jetson's is; the PyPI wheels are not)."""
    return bool(re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()))


def open_capture(spec: str, kind: str) -> Any:
    """An opened ``cv2.VideoCapture``, or one line saying why not (within OPEN_TIMEOUT_S)."""
    timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(OPEN_TIMEOUT_S * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(READ_TIMEOUT_S * 1000)]  # fmt: skip
    if kind == "gstreamer":
        if not has_gstreamer():
            raise EdgeVPRError("this OpenCV is built without GStreamer (the opencv-python "
                               "wheels are): use the system's OpenCV, as on a Jetson")
        capture = cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)
        what = "the GStreamer pipeline"
    elif kind == "camera":
        index = int(spec) if spec.isdigit() else int(spec.removeprefix("/dev/video"))
        capture = cv2.VideoCapture(index, cv2.CAP_ANY, timeouts)
        what = f"camera {spec}"
    else:
        capture = cv2.VideoCapture(spec, cv2.CAP_FFMPEG, timeouts)
        what = f"stream {spec}"
    if not capture.isOpened():
        capture.release()
        raise EdgeVPRError(f"cannot open {what} (nothing answered within {OPEN_TIMEOUT_S:g} s, "
                           "or it is not a video source)")  # fmt: skip
    return capture


@dataclass
class LiveStats:
    """What a live source delivered: frames read from the device, handed on, dropped (a
    newer one came first), and why it ended."""

    read: int = 0
    delivered: int = 0
    dropped: int = 0
    ended: str | None = None
    errors: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"{self.read} frames read, {self.delivered} localised, {self.dropped} dropped"
        return text + (f"; {self.ended}" if self.ended else "")


class NewestFrame:
    """Reads ``capture`` on its own thread, keeping only the newest frame."""

    def __init__(self, capture: Any, name: str) -> None:
        self.capture, self.name = capture, name
        self.stats = LiveStats()
        self._frame: tuple[np.ndarray, float] | None = None
        self._fresh = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"read {name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while not self._stop.is_set():
                ok, image = self.capture.read()
                if not ok or image is None:
                    self._end("the stream ended or stopped sending")
                    return
                with self._fresh:
                    self.stats.read += 1
                    if self._frame is not None:
                        self.stats.dropped += 1
                    self._frame = (image, time.time())
                    self._fresh.notify()
        except cv2.error as exc:
            self._end(f"the stream failed: {str(exc).strip().splitlines()[-1]}")

    def _end(self, why: str) -> None:
        with self._fresh:
            self.stats.ended = self.stats.ended or why
            self._fresh.notify()

    def frames(self, max_frames: int | None, duration: float | None) -> Iterator[StreamFrame]:
        """The newest frame each time one is asked for, until the stream ends, ``max_frames``
        were handed on or ``duration`` seconds passed."""
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while max_frames is None or self.stats.delivered < max_frames:
                taken = self._take(deadline)
                if taken is None:
                    return
                image, stamp = taken
                yield StreamFrame(image, stamp, f"{self.name}#{self.stats.read}",
                                  encoding="bgr8")  # fmt: skip
                self.stats.delivered += 1
        finally:
            self.close()

    def _take(self, deadline: float | None) -> tuple[np.ndarray, float] | None:
        with self._fresh:
            while self._frame is None and self.stats.ended is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._fresh.wait(timeout=left if left is not None else 0.5)
            if deadline is not None and time.monotonic() >= deadline:
                self.stats.ended = self.stats.ended or "the --duration was reached"
                return None
            taken, self._frame = self._frame, None
            return taken

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=READ_TIMEOUT_S)
        self.capture.release()
