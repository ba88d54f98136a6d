"""A live view of a localisation run for Foxglove (``edgevpr localize --foxglove [PORT]``),
with the foxglove-sdk (the ``live`` extra): a WebSocket server on loopback that Foxglove
connects to, and/or an ``.mcap`` of the same channels for later viewing.

Channels: ``/camera/image`` (the frame, JPEG), ``/map/image`` (the reference image of the
fix's place, where its file is at hand), ``/fix/location`` (``LocationFix``: where the map
gives latitude/longitude or UTM with its zone), ``/fix/pose`` (``PoseInFrame`` in the map's
metres: frame ``utm`` where the map is in UTM, else ``map``), ``/fix/track`` (the accepted
poses so far, the latest TRACK_POSES) and ``/fix/status`` (JSON: accepted, confidence,
margin, state, reason).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.extras import install_hint
from edgevpr.core.geo import utm_to_latlon
from edgevpr.core.images import read_image
from edgevpr.core.pixels import to_rgb8
from edgevpr.runtime.localize.fix import EAST_NORTH, LAT_LON, Fix
from edgevpr.runtime.localize.stream import StreamFrame

TRACK_POSES = 2000
REFERENCE_JPEGS = 64  # a tracked fix stays among a few places: their JPEGs are kept
JPEG_QUALITY = 80
STATUS_SCHEMA = {
    "type": "object",
    "properties": {
        "frame": {"type": "integer"}, "accepted": {"type": "boolean"},
        "confidence": {"type": "number"}, "margin": {"type": "number"},
        "state": {"type": "string"}, "reason": {"type": "string"},
    },
}  # fmt: skip


class LiveView:
    """Publishes each fix (and its frame) to Foxglove; ``port`` the server's (None: none)."""

    def __init__(self, localizer: Any, port: int | None, mcap: Path | None) -> None:
        try:
            import foxglove
            import foxglove.channels as channels
            import foxglove.messages as messages
        except ImportError:
            raise EdgeVPRError(f"--foxglove needs foxglove-sdk: {install_hint('foxglove')}"
                               ) from None
        self.messages, self.layout = messages, localizer.layout
        self.context = foxglove.Context()
        self.server = None if port is None else foxglove.start_server(
            name="edgevpr localize", host="127.0.0.1", port=port, context=self.context)  # fmt: skip
        self.port = None if self.server is None else self.server.port
        self.recording = None
        if mcap is not None:
            self.recording = foxglove.open_mcap(mcap, allow_overwrite=True, context=self.context)
        c = self.context
        self.camera = channels.CompressedImageChannel("/camera/image", context=c)
        self.reference = channels.CompressedImageChannel("/map/image", context=c)
        self.location = channels.LocationFixChannel("/fix/location", context=c)
        self.pose = channels.PoseInFrameChannel("/fix/pose", context=c)
        self.track = channels.PosesInFrameChannel("/fix/track", context=c)
        self.status = foxglove.Channel("/fix/status", schema=STATUS_SCHEMA, context=c)
        self.frame_id = "utm" if self.layout.coordinates.utm_zones else "map"
        self.poses: deque[Any] = deque(maxlen=TRACK_POSES)
        self.references: OrderedDict[int, bytes | None] = OrderedDict()

    def show(self, fix: Fix, frame: StreamFrame | None) -> None:
        """Publish one fix, its frame and its place's reference image."""
        m = self.messages
        stamp = fix.timestamp if fix.timestamp is not None else time.time()
        when = m.Timestamp(int(stamp), int((stamp % 1) * 1e9))
        if frame is not None:
            self._log_jpeg(self.camera, _jpeg(frame.image, frame.encoding), when)
        if fix.place_id is not None:
            self._log_jpeg(self.reference, self._reference_jpeg(fix.place_id), when)
        self.status.log({"frame": fix.frame, "accepted": fix.accepted,
                         "confidence": fix.confidence,
                         "margin": fix.margin if math.isfinite(fix.margin) else -1.0,
                         "state": fix.state, "reason": fix.reason or ""})  # fmt: skip
        if fix.position is None:
            return
        self._location(fix, when)
        if fix.position.kind == EAST_NORTH:
            pose = m.Pose(position=m.Vector3(x=fix.position.east, y=fix.position.north, z=0.0),
                          orientation=m.Quaternion(x=0.0, y=0.0, z=0.0, w=1.0))  # fmt: skip
            self.pose.log(m.PoseInFrame(timestamp=when, frame_id=self.frame_id, pose=pose))
            if fix.accepted:
                self.poses.append(pose)
                self.track.log(m.PosesInFrame(timestamp=when, frame_id=self.frame_id,
                                              poses=list(self.poses)))  # fmt: skip

    def _location(self, fix: Fix, when: Any) -> None:
        position = fix.position
        assert position is not None
        if position.kind == LAT_LON:
            lat, lon = position.lat, position.lon
        elif position.kind == EAST_NORTH and position.utm_zone:
            lat, lon = utm_to_latlon(position.east, position.north, position.utm_zone)
        else:
            return
        sigma = fix.uncertainty_m if fix.uncertainty_m is not None else 1e3
        kind = self.messages.LocationFixPositionCovarianceType
        self.location.log(self.messages.LocationFix(
            timestamp=when, frame_id=self.frame_id, latitude=lat, longitude=lon,
            position_covariance=[sigma**2, 0, 0, 0, sigma**2, 0, 0, 0, 1e6],
            position_covariance_type=kind.Approximated))  # fmt: skip

    def _reference_jpeg(self, place_id: int) -> bytes | None:
        """A place's reference image as a JPEG (None: its file is not at hand), read and
        encoded once while the place stays among the REFERENCE_JPEGS latest shown."""
        if place_id in self.references:
            self.references.move_to_end(place_id)
            return self.references[place_id]
        record = self.layout.records[int(self.layout.index_of(np.array([place_id]))[0])]
        path = Path(record.path) if record.path else None
        jpeg = _jpeg(path, "bgr8") if path is not None and path.is_file() else None
        self.references[place_id] = jpeg
        if len(self.references) > REFERENCE_JPEGS:
            self.references.popitem(last=False)
        return jpeg

    def _log_jpeg(self, channel: Any, jpeg: bytes | None, when: Any) -> None:
        if jpeg is not None:
            channel.log(self.messages.CompressedImage(timestamp=when, frame_id="camera",
                                                      data=jpeg, format="jpeg"))  # fmt: skip

    def close(self) -> None:
        if self.recording is not None:
            self.recording.close()
        if self.server is not None:
            self.server.stop()


def _jpeg(image: Any, encoding: str) -> bytes | None:
    """A frame (pixels, a file, encoded bytes) as JPEG bytes (None: it cannot be read)."""
    bgr: np.ndarray | None
    try:
        if isinstance(image, np.ndarray):
            bgr = cv2.cvtColor(to_rgb8(image, encoding, "frame"), cv2.COLOR_RGB2BGR)
        elif isinstance(image, (bytes, bytearray, memoryview)):
            bgr = cv2.imdecode(np.frombuffer(bytes(image), np.uint8), cv2.IMREAD_COLOR)
        else:
            bgr = cv2.cvtColor(read_image(Path(image)), cv2.COLOR_RGB2BGR)
    except EdgeVPRError:
        return None  # a frame the localizer skipped as unreadable: nothing to show
    if bgr is None:
        return None
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return jpeg.tobytes() if ok else None
