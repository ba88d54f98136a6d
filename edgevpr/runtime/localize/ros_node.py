"""A ROS 2 node that localises a camera's images against a place map.

It subscribes to an image topic (``sensor_msgs/Image`` or, with ``compressed:=true``,
``sensor_msgs/CompressedImage``) with the sensor-data QoS by default (best effort, depth 1:
what camera drivers publish; ``reliable:=true`` for a reliable publisher) and publishes:

- each accepted fix as ``geometry_msgs/PoseWithCovarianceStamped`` (maps in metres) or
  ``sensor_msgs/NavSatFix`` (maps in latitude/longitude) on ``output_topic``, the
  uncertainty radius as the covariance (``publish_rejected:=true``: every fix);
- the confidence as ``std_msgs/Float32`` on ``<output_topic>/confidence``, every frame;
- the localizer's state as ``diagnostic_msgs/DiagnosticArray`` on ``/diagnostics`` (OK while
  tracking, WARN initialising or lost; the reason, the margin and the frame's time);
- optionally (``publish_tf:=true``) the TF ``frame_id -> child_frame_id`` of each accepted
  fix on a metric map.

Parameters cover every Localizer option (map, model, mode, length, threshold, calibration,
speeds, pace, k, max_speed, providers). An image the node cannot read (an unsupported encoding, a
damaged JPEG) is a warning, throttled, never an exception in the callback.

In a ROS 2 workspace, the package in ``ros2/edgevpr`` gives ``ros2 run edgevpr localize``
and ``ros2 launch edgevpr localize.launch.py map:=... model:=...``. The node is a thin
adapter around :class:`LocalizationBridge` (and :mod:`edgevpr.runtime.localize.rosmsg`,
which the bag reader shares): rclpy cannot be installed where this package is developed, so
it is tested against a stand-in that enforces rclpy's signatures.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

from edgevpr.core.errors import EdgeVPRError
from edgevpr.runtime.localize.fix import EAST_NORTH, TRACKING, Fix
from edgevpr.runtime.localize.localizer import AUTO, Localizer
from edgevpr.runtime.localize.rosmsg import (
    COMPRESSED,
    IMAGE,
    image_of,
    navsat_fields,
    pose_fields,
    stamp_seconds,
)
from edgevpr.runtime.localize.route import DEFAULT_SPEEDS, RouteConfig

POSE, NAVSAT = "pose", "navsat"
UNSET = -1.0  # threshold, max_speed and pace: ROS parameters have no None
WARN_EVERY_S = 5.0  # a repeated warning (unreadable images) at most this often
# name -> default (its type is the parameter's type)
PARAMETERS: dict[str, Any] = {
    "map": "",
    "model": "",
    "image_topic": "/camera/image_raw",
    "output_topic": "/vpr/fix",
    "frame_id": "map",
    "child_frame_id": "base_link",
    "compressed": False,
    "reliable": False,
    "depth": 1,
    "publish_rejected": False,
    "publish_tf": False,
    "mode": AUTO,
    "length": 10,
    "threshold": UNSET,
    "calibration": "",  # "": the one beside the map where it fits; "none": none
    "speeds": list(DEFAULT_SPEEDS),
    "pace": UNSET,  # route places a frame at speed 1; unset: the map's own
    "k": 5,
    "max_speed": UNSET,
    "providers": "",  # comma-separated; "": the best available
}
DIAGNOSTIC_NAME = "edgevpr: localizer"
OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


@dataclass(frozen=True)
class Outputs:
    """What one image gives the node to publish (None where it publishes nothing)."""

    fix: Fix
    position: dict[str, Any] | None  # pose or NavSatFix fields
    level: int  # diagnostic level
    status: str  # diagnostic message
    values: dict[str, str]  # diagnostic key/values
    transform: tuple[float, float, float, float] | None  # x, y, qz, qw for the TF


class LocalizationBridge:
    """Messages in, outputs out: what the node does, without ROS."""

    def __init__(self, localizer: Localizer, publish_rejected: bool = False) -> None:
        self.localizer = localizer
        self.publish_rejected = publish_rejected
        self.output = POSE if localizer.layout.kind == EAST_NORTH else NAVSAT

    def handle(self, message: Any, msgtype: str) -> Outputs:
        """Localise one image message (EdgeVPRError where the image cannot be read)."""
        image, encoding = image_of(message, msgtype)
        fix = self.localizer.update(image, encoding=encoding, timestamp=stamp_seconds(message))
        position = None
        if fix.position is not None and (fix.accepted or self.publish_rejected):
            position = pose_fields(fix) if self.output == POSE else navsat_fields(fix)
        level = OK if fix.state == TRACKING else WARN
        status = fix.state if fix.accepted else f"{fix.state}: {fix.reason or 'not accepted'}"
        values = {"state": fix.state, "accepted": str(fix.accepted).lower(),
                  "confidence": f"{fix.confidence:.4f}",
                  "margin": f"{fix.margin:.4f}" if math.isfinite(fix.margin) else "none",
                  "frame": str(fix.frame)}  # fmt: skip
        transform = None
        if fix.accepted and self.output == POSE and position is not None:
            x, y, _ = position["position"]
            _, _, qz, qw = position["orientation"]
            transform = (x, y, qz, qw)
        return Outputs(fix, position, level, status, values, transform)


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


def localizer_from(values: dict[str, Any]) -> Localizer:
    """The Localizer the node's parameters describe."""
    from edgevpr.runtime import Embedder, PlaceMap

    if not values["map"] or not values["model"]:
        raise EdgeVPRError("give the parameters map:=MAP.vprmap and model:=MODEL.onnx")
    providers: list[Any] | None = [
        p.strip() for p in str(values["providers"]).split(",") if p.strip()] or None
    calibration = values["calibration"]
    return Localizer(
        Embedder(values["model"], providers=providers),
        PlaceMap.load(values["map"]),
        mode=values["mode"],
        length=int(values["length"]),
        calibration=AUTO if calibration == "" else None if calibration == "none" else calibration,
        threshold=None if values["threshold"] == UNSET else float(values["threshold"]),
        max_speed=None if values["max_speed"] == UNSET else float(values["max_speed"]),
        k=int(values["k"]),
        route=RouteConfig(speeds=tuple(float(v) for v in values["speeds"]),
                          pace=None if values["pace"] == UNSET else float(values["pace"])),
    )


def build_node(messages: dict[str, type]) -> Any:
    """The node, on rclpy and the given message classes (``Image``, ``CompressedImage``,
    ``PoseWithCovarianceStamped``, ``NavSatFix``, ``Float32``, ``DiagnosticArray``,
    ``DiagnosticStatus``, ``KeyValue``, ``TransformStamped``)."""
    from rclpy.node import Node  # the caller made rclpy importable
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    class LocalizerNode(Node):
        def __init__(self) -> None:
            super().__init__("edgevpr_localizer")
            values = {name: self._parameter(name, default) for name, default in PARAMETERS.items()}
            self.bridge = LocalizationBridge(localizer_from(values),
                                             bool(values["publish_rejected"]))  # fmt: skip
            self.frame_id, self.child = values["frame_id"], values["child_frame_id"]
            self.msgtype = COMPRESSED if values["compressed"] else IMAGE
            incoming = messages["CompressedImage" if values["compressed"] else "Image"]
            outgoing = "PoseWithCovarianceStamped" if self.bridge.output == POSE else "NavSatFix"
            self.outgoing = messages[outgoing]
            self.publisher = self.create_publisher(self.outgoing, values["output_topic"], 10)
            self.confidence = self.create_publisher(
                messages["Float32"], f"{values['output_topic']}/confidence", 10)  # fmt: skip
            self.diagnostics = self.create_publisher(messages["DiagnosticArray"],
                                                     "/diagnostics", 10)  # fmt: skip
            self.tf = None
            if values["publish_tf"]:
                from tf2_ros import TransformBroadcaster

                self.tf = TransformBroadcaster(self)
            # sensor data: best effort, only the newest image (rclpy's qos_profile_sensor_data
            # keeps 5, which a slow model would work through with growing latency)
            reliability = (ReliabilityPolicy.RELIABLE if values["reliable"]
                           else ReliabilityPolicy.BEST_EFFORT)  # fmt: skip
            qos = QoSProfile(depth=int(values["depth"]), history=HistoryPolicy.KEEP_LAST,
                             reliability=reliability)  # fmt: skip
            self.create_subscription(incoming, values["image_topic"], self.on_image, qos)

        def _parameter(self, name: str, default: Any) -> Any:
            self.declare_parameter(name, default)
            return self.get_parameter(name).value

        def on_image(self, message: Any) -> None:
            try:
                out = self.bridge.handle(message, self.msgtype)
            except EdgeVPRError as exc:  # never raise in a callback: the executor would stop
                self.get_logger().warning(f"skipped an image: {exc}",
                                          throttle_duration_sec=WARN_EVERY_S)  # fmt: skip
                return
            if out.position is not None:
                fill = fill_pose if self.bridge.output == POSE else fill_navsat
                self.publisher.publish(fill(self.outgoing(), out.position, self.frame_id))
            self.confidence.publish(messages["Float32"](data=float(out.fix.confidence)))
            self.diagnostics.publish(self._diagnostics(message, out))
            if self.tf is not None and out.transform is not None:
                self.tf.sendTransform(self._transform(message, out.transform))

        def _diagnostics(self, image: Any, out: Outputs) -> Any:
            status = messages["DiagnosticStatus"](
                level=bytes([out.level]), name=DIAGNOSTIC_NAME, message=out.status,
                hardware_id="", values=[messages["KeyValue"](key=k, value=v)
                                        for k, v in out.values.items()])  # fmt: skip
            array = messages["DiagnosticArray"](status=[status])
            array.header.stamp = image.header.stamp
            return array

        def _transform(self, image: Any, transform: tuple[float, float, float, float]) -> Any:
            x, y, qz, qw = transform
            stamped = messages["TransformStamped"]()
            stamped.header.stamp = image.header.stamp
            stamped.header.frame_id, stamped.child_frame_id = self.frame_id, self.child
            stamped.transform.translation.x, stamped.transform.translation.y = x, y
            stamped.transform.rotation.z, stamped.transform.rotation.w = qz, qw
            return stamped

    return LocalizerNode()


def ros_messages() -> dict[str, type]:
    """The message classes the node uses, from the sourced ROS 2 installation."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
    from sensor_msgs.msg import CompressedImage, Image, NavSatFix
    from std_msgs.msg import Float32

    return {"Image": Image, "CompressedImage": CompressedImage,
            "PoseWithCovarianceStamped": PoseWithCovarianceStamped, "NavSatFix": NavSatFix,
            "Float32": Float32, "DiagnosticArray": DiagnosticArray,
            "DiagnosticStatus": DiagnosticStatus, "KeyValue": KeyValue,
            "TransformStamped": TransformStamped}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """``ros2 run edgevpr localize --ros-args -p map:=... -p model:=...`` (or
    ``python -m edgevpr.runtime.localize.ros_node --ros-args ...``)."""
    try:
        import rclpy

        messages = ros_messages()
    except ImportError as exc:
        print(f"error: the ROS 2 node needs rclpy and its messages (source a ROS 2 setup; "
              f"{exc})", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    rclpy.init(args=argv if argv is not None else sys.argv)
    try:
        node = build_node(messages)
    except EdgeVPRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        rclpy.shutdown()
        sys.exit(exc.exit_code)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass  # Ctrl-C: the normal way to stop a node
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
