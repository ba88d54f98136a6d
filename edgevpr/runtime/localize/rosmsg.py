"""ROS messages in and out, shared by the bag reader and the ROS 2 node: a
``sensor_msgs/Image`` or ``CompressedImage`` to a frame, a :class:`Fix` to the fields of a
``geometry_msgs/PoseWithCovarianceStamped`` (maps in metres) or a ``sensor_msgs/NavSatFix``
(maps in latitude/longitude). Messages are read by attribute, so the classes of rclpy,
rospy and the rosbags package all work; outputs are plain dicts a node copies into its own
message types.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.pixels import ENCODINGS
from edgevpr.runtime.localize.fix import EAST_NORTH, LAT_LON, Fix

IMAGE, COMPRESSED = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED, "sensor_msgs/Image", "sensor_msgs/CompressedImage")
# Variance for what a fix does not know (height, roll, pitch; yaw without a heading): so
# large that any fusion filter ignores it (robot_localization's convention).
UNKNOWN_VARIANCE = 1e6
NAVSAT_COVARIANCE_APPROXIMATED = 1
NAVSAT_STATUS_FIX, NAVSAT_STATUS_NO_FIX = 0, -1


def stamp_seconds(message: Any) -> float | None:
    """The header stamp in seconds (ROS 2 ``sec``/``nanosec``, ROS 1 ``secs``/``nsecs``)."""
    header = getattr(message, "header", None)
    stamp = getattr(header, "stamp", None)
    if stamp is None:
        return None
    seconds = getattr(stamp, "sec", getattr(stamp, "secs", None))
    nanos = getattr(stamp, "nanosec", getattr(stamp, "nsecs", 0))
    return None if seconds is None else float(seconds) + float(nanos) * 1e-9


def data_bytes(data: Any) -> np.ndarray:
    """A message's ``uint8[]`` field as bytes: rclpy gives ``array('B')`` or ``bytes``,
    rosbags a numpy array, rospy ``bytes`` or a list."""
    try:
        return np.frombuffer(memoryview(data).cast("B"), np.uint8)
    except TypeError:  # no buffer: a list of numbers
        return np.asarray(data, np.uint8).reshape(-1)


def image_of(message: Any, msgtype: str) -> tuple[Any, str]:
    """(pixels or encoded bytes, encoding) of an image message."""
    if msgtype.endswith("CompressedImage"):
        return data_bytes(message.data).tobytes(), "rgb8"  # decoded as a file is
    return pixels_of(message)


def pixels_of(message: Any) -> tuple[np.ndarray, str]:
    """A ``sensor_msgs/Image``'s pixels as an array in its own encoding (rows of ``step``
    bytes, big-endian 16-bit samples swapped)."""
    encoding = str(message.encoding)
    if encoding not in ENCODINGS:
        raise EdgeVPRError(
            f"image encoding '{encoding}' is not supported (supported: {', '.join(ENCODINGS)})"
        )
    spec = ENCODINGS[encoding]
    height, width, step = int(message.height), int(message.width), int(message.step)
    sample = np.dtype(spec.dtype).itemsize
    row_bytes = width * spec.channels * sample
    data = data_bytes(message.data)
    if height < 1 or width < 1 or step < row_bytes or len(data) < step * height:
        raise EdgeVPRError(
            f"image message of {width}x{height} {encoding} holds {len(data)} bytes, step {step}"
        )
    rows = data[: step * height].reshape(height, step)[:, :row_bytes]
    order: Literal[">", "<"] = ">" if getattr(message, "is_bigendian", 0) else "<"
    pixels = np.ascontiguousarray(rows).view(np.dtype(spec.dtype).newbyteorder(order))
    shape = (height, width) if spec.channels == 1 else (height, width, spec.channels)
    return pixels.reshape(shape).astype(spec.dtype), encoding


def pose_fields(fix: Fix) -> dict[str, Any]:
    """A fix on a metric map as ``PoseWithCovarianceStamped`` fields: position, yaw from the
    heading (ROS: counter-clockwise from east; a heading: clockwise from north), and a 6 x 6
    row-major covariance with the uncertainty radius as the x and y standard deviation."""
    if fix.position is None or fix.position.kind != EAST_NORTH:
        raise EdgeVPRError("a pose needs a fix with an east/north position")
    sigma = fix.uncertainty_m if fix.uncertainty_m is not None else math.sqrt(UNKNOWN_VARIANCE)
    covariance = [0.0] * 36
    covariance[0] = covariance[7] = sigma**2
    covariance[14] = covariance[21] = covariance[28] = UNKNOWN_VARIANCE
    if fix.heading is None:
        yaw, covariance[35] = 0.0, UNKNOWN_VARIANCE
    else:
        yaw, covariance[35] = math.radians(90.0 - fix.heading), math.radians(10.0) ** 2
    return {
        "stamp": fix.timestamp,
        "position": (fix.position.east, fix.position.north, 0.0),
        "orientation": (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)),  # x, y, z, w
        "covariance": covariance,
    }


def navsat_fields(fix: Fix) -> dict[str, Any]:
    """A fix on a latitude/longitude map as ``NavSatFix`` fields (status NO_FIX when the
    fix was not accepted)."""
    if fix.position is None or fix.position.kind != LAT_LON:
        raise EdgeVPRError("a NavSatFix needs a fix with a latitude/longitude position")
    sigma = fix.uncertainty_m if fix.uncertainty_m is not None else math.sqrt(UNKNOWN_VARIANCE)
    return {
        "stamp": fix.timestamp,
        "latitude": fix.position.lat,
        "longitude": fix.position.lon,
        "altitude": float("nan"),
        "position_covariance": [
            sigma**2,
            0.0,
            0.0,
            0.0,
            sigma**2,
            0.0,
            0.0,
            0.0,
            UNKNOWN_VARIANCE,
        ],  # fmt: skip
        "position_covariance_type": NAVSAT_COVARIANCE_APPROXIMATED,
        "status": NAVSAT_STATUS_FIX if fix.accepted else NAVSAT_STATUS_NO_FIX,
    }
