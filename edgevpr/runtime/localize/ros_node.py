"""A ROS 2 node that localises a camera's images against a place map.

It subscribes to an image topic (``sensor_msgs/Image`` or, with ``compressed:=true``,
``sensor_msgs/CompressedImage``) and publishes each accepted fix as a
``geometry_msgs/PoseWithCovarianceStamped`` (maps in metres: UTM east/north) or a
``sensor_msgs/NavSatFix`` (maps in latitude/longitude), the uncertainty radius as the
covariance. Run it where ROS 2 (``rclpy``) is installed::

    python -m edgevpr.runtime.localize.ros_node --ros-args -p map:=route.vprmap \\
        -p model:=best.onnx -p image_topic:=/camera/image_raw -p output_topic:=/vpr/pose \\
        -p frame_id:=map

The node is a thin adapter: what it does with a message lives in :class:`LocalizationBridge`
(and in :mod:`edgevpr.runtime.localize.rosmsg`, which the bag reader shares), tested
without ROS; rclpy cannot be installed on the machines this package is developed on.
"""

from __future__ import annotations

import sys
from typing import Any

from edgevpr.core.errors import EdgeVPRError
from edgevpr.runtime.localize.fix import EAST_NORTH, Fix
from edgevpr.runtime.localize.localizer import Localizer
from edgevpr.runtime.localize.rosmsg import (
    COMPRESSED,
    IMAGE,
    image_of,
    navsat_fields,
    pose_fields,
    stamp_seconds,
)

POSE, NAVSAT = "pose", "navsat"
PARAMETERS = {
    "map": "",
    "model": "",
    "image_topic": "/camera/image_raw",
    "output_topic": "/vpr/fix",
    "frame_id": "map",
    "compressed": False,
    "publish_rejected": False,
    "length": 10,
}


class LocalizationBridge:
    """Messages in, output fields out: what the node does, without ROS."""

    def __init__(self, localizer: Localizer, publish_rejected: bool = False) -> None:
        self.localizer = localizer
        self.publish_rejected = publish_rejected
        self.output = POSE if localizer.layout.kind == EAST_NORTH else NAVSAT

    def handle(self, message: Any, msgtype: str) -> tuple[Fix, dict[str, Any] | None]:
        """Localise one image message: its fix, and the fields to publish (None when the
        fix is not to be published)."""
        image, encoding = image_of(message, msgtype)
        fix = self.localizer.update(image, encoding=encoding, timestamp=stamp_seconds(message))
        if fix.position is None or not (fix.accepted or self.publish_rejected):
            return fix, None
        return fix, pose_fields(fix) if self.output == POSE else navsat_fields(fix)


def fill_pose(message: Any, fields: dict[str, Any], frame_id: str) -> Any:
    """Copy pose fields into a ``PoseWithCovarianceStamped``."""
    _stamp(message, fields["stamp"], frame_id)
    pose = message.pose.pose
    pose.position.x, pose.position.y, pose.position.z = fields["position"]
    o = pose.orientation
    o.x, o.y, o.z, o.w = fields["orientation"]
    message.pose.covariance = list(fields["covariance"])
    return message


def fill_navsat(message: Any, fields: dict[str, Any], frame_id: str) -> Any:
    """Copy NavSatFix fields into a ``sensor_msgs/NavSatFix``."""
    _stamp(message, fields["stamp"], frame_id)
    message.latitude, message.longitude = fields["latitude"], fields["longitude"]
    message.altitude = fields["altitude"]
    message.position_covariance = list(fields["position_covariance"])
    message.position_covariance_type = fields["position_covariance_type"]
    message.status.status = fields["status"]
    return message


def _stamp(message: Any, seconds: float | None, frame_id: str) -> None:
    message.header.frame_id = frame_id
    if seconds is not None:
        message.header.stamp.sec = int(seconds)
        message.header.stamp.nanosec = int(round((seconds - int(seconds)) * 1e9))


def build_node(messages: dict[str, type]) -> Any:
    """The node, on rclpy and the given message classes (``Image``, ``CompressedImage``,
    ``PoseWithCovarianceStamped``, ``NavSatFix``)."""
    from rclpy.node import Node  # the caller made rclpy importable

    from edgevpr.runtime import Embedder, PlaceMap

    class LocalizerNode(Node):
        def __init__(self) -> None:
            super().__init__("edgevpr_localizer")
            values = {name: self._parameter(name, default) for name, default in PARAMETERS.items()}
            localizer = Localizer(
                Embedder(values["model"]),
                PlaceMap.load(values["map"]),
                length=int(values["length"]),
            )
            self.bridge = LocalizationBridge(localizer, bool(values["publish_rejected"]))
            self.frame_id = values["frame_id"]
            self.msgtype = COMPRESSED if values["compressed"] else IMAGE
            incoming = messages["CompressedImage" if values["compressed"] else "Image"]
            outgoing = "PoseWithCovarianceStamped" if self.bridge.output == POSE else "NavSatFix"
            self.outgoing = messages[outgoing]
            self.publisher = self.create_publisher(self.outgoing, values["output_topic"], 10)
            self.create_subscription(incoming, values["image_topic"], self.on_image, 10)

        def _parameter(self, name: str, default: Any) -> Any:
            self.declare_parameter(name, default)
            return self.get_parameter(name).value

        def on_image(self, message: Any) -> None:
            fix, fields = self.bridge.handle(message, self.msgtype)
            if fields is None:
                return
            fill = fill_pose if self.bridge.output == POSE else fill_navsat
            self.publisher.publish(fill(self.outgoing(), fields, self.frame_id))

    return LocalizerNode()


def main(argv: list[str] | None = None) -> None:
    """``python -m edgevpr.runtime.localize.ros_node --ros-args -p map:=... -p model:=...``"""
    try:
        import rclpy
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from sensor_msgs.msg import CompressedImage, Image, NavSatFix
    except ImportError:
        print("error: the ROS 2 node needs rclpy and its messages (source a ROS 2 setup)",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)
    rclpy.init(args=argv if argv is not None else sys.argv)
    messages = {
        "Image": Image,
        "CompressedImage": CompressedImage,
        "PoseWithCovarianceStamped": PoseWithCovarianceStamped,
        "NavSatFix": NavSatFix,
    }
    try:
        node = build_node(messages)
    except EdgeVPRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        rclpy.shutdown()
        sys.exit(exc.exit_code)
    try:
        rclpy.spin(node)
    finally:
        node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    main()
