"""A stand-in for rclpy, tf2_ros and ROS 2 message classes, for testing the node where ROS 2
cannot be installed. It keeps the real signatures and refusals the node depends on (from
rclpy's node.py, qos.py and rcutils_logger.py, Humble to Jazzy):

- ``Node.__init__(node_name, *, context=None, cli_args=None, namespace=None, ...)``;
- ``declare_parameter(name, value=None, descriptor=None, ignore_override=False)``: declaring
  twice raises, an override of another type than the default raises, ``get_parameter`` of
  an undeclared name raises;
- ``create_publisher(msg_type, topic, qos_profile, *, callback_group=None, ...)`` and
  ``create_subscription(msg_type, topic, callback, qos_profile, *, ...)``: the QoS is a
  ``QoSProfile`` or a depth (int), nothing else;
- ``QoSProfile(**kwargs)`` needs ``history`` or ``depth``;
- the logger's ``warning(message, **kwargs)`` takes only rcutils' keywords;
- message classes take only their own fields (rosidl's constructors assert on others) and
  refuse unknown attributes (they have ``__slots__``).
"""

from __future__ import annotations

import enum
import sys
import types
from collections.abc import Callable
from typing import Any


class ParameterAlreadyDeclaredException(Exception):
    pass


class ParameterNotDeclaredException(Exception):
    pass


class InvalidParameterTypeException(Exception):
    pass


class ReliabilityPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    RELIABLE = 1
    BEST_EFFORT = 2


class HistoryPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    KEEP_LAST = 1
    KEEP_ALL = 2


class QoSProfile:
    def __init__(self, **kwargs: Any) -> None:
        if "history" not in kwargs and "depth" not in kwargs:
            raise TypeError("QoSProfile requires either history or depth to be set")
        allowed = {"history", "depth", "reliability", "durability", "lifespan", "deadline",
                   "liveliness", "liveliness_lease_duration",
                   "avoid_ros_namespace_conventions"}  # fmt: skip
        unknown = set(kwargs) - allowed
        if unknown:
            raise TypeError(f"Invalid arguments passed to QoSProfile: {sorted(unknown)}")
        self.depth = kwargs.get("depth", 0)
        if not isinstance(self.depth, int):
            raise TypeError("depth must be an int")
        self.history = kwargs.get("history", HistoryPolicy.KEEP_LAST)
        self.reliability = kwargs.get("reliability", ReliabilityPolicy.RELIABLE)


# rclpy's own: best effort, keep last 5 (not what the node is asked to use)
qos_profile_sensor_data = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
LOGGER_KEYWORDS = {"throttle_duration_sec", "throttle_time_source_type", "skip_first", "once"}


class Logger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict]] = []

    def _log(self, level: str, message: str, **kwargs: Any) -> bool:
        unknown = set(kwargs) - LOGGER_KEYWORDS
        if unknown:
            raise TypeError(f"unsupported logging features: {sorted(unknown)}")
        self.lines.append((level, message, kwargs))
        return True

    def info(self, message: str, **kwargs: Any) -> bool:
        return self._log("info", message, **kwargs)

    def warning(self, message: str, **kwargs: Any) -> bool:
        return self._log("warning", message, **kwargs)

    def error(self, message: str, **kwargs: Any) -> bool:
        return self._log("error", message, **kwargs)


class Parameter:
    def __init__(self, name: str, value: Any) -> None:
        self.name, self.value = name, value


class Publisher:
    def __init__(self, msg_type: type, topic: str, qos: QoSProfile | int) -> None:
        self.msg_type, self.topic, self.qos = msg_type, topic, qos
        self.sent: list[Any] = []

    def publish(self, message: Any) -> None:
        if not isinstance(message, self.msg_type):
            raise TypeError(f"publish() of {type(message).__name__} on a "
                            f"{self.msg_type.__name__} publisher")  # fmt: skip
        self.sent.append(message)


def _qos(qos_profile: Any) -> QoSProfile | int:
    if isinstance(qos_profile, bool) or not isinstance(qos_profile, (QoSProfile, int)):
        raise TypeError("Expected QoSProfile or int, but received " + type(qos_profile).__name__)
    return qos_profile


class Node:
    overrides: dict[str, Any] = {}  # the --ros-args -p values a test gives
    created: list[Node] = []

    def __init__(self, node_name: str, *, context: Any = None, cli_args: Any = None,
                 namespace: Any = None, use_global_arguments: bool = True,
                 enable_rosout: bool = True, start_parameter_services: bool = True,
                 parameter_overrides: Any = None, allow_undeclared_parameters: bool = False,
                 automatically_declare_parameters_from_overrides: bool = False,
                 ) -> None:  # fmt: skip
        self.name = node_name
        self.parameters: dict[str, Parameter] = {}
        self.publishers: dict[str, Publisher] = {}
        self.subscriptions: list[tuple[type, str, Callable, QoSProfile | int]] = []
        self.logger = Logger()
        Node.created.append(self)

    def declare_parameter(self, name: str, value: Any = None, descriptor: Any = None,
                          ignore_override: bool = False) -> Parameter:  # fmt: skip
        if name in self.parameters:
            raise ParameterAlreadyDeclaredException(name)
        given = self.overrides.get(name, value)
        if value is not None and type(given) is not type(value):
            raise InvalidParameterTypeException(
                f"parameter {name}: {type(given).__name__} given, {type(value).__name__} "
                "declared")  # fmt: skip
        self.parameters[name] = Parameter(name, given)
        return self.parameters[name]

    def get_parameter(self, name: str) -> Parameter:
        if name not in self.parameters:
            raise ParameterNotDeclaredException(name)
        return self.parameters[name]

    def create_publisher(self, msg_type: type, topic: str, qos_profile: Any, *,
                         callback_group: Any = None, event_callbacks: Any = None,
                         qos_overriding_options: Any = None,
                         publisher_class: Any = None) -> Publisher:  # fmt: skip
        if not isinstance(msg_type, type):
            raise TypeError("msg_type must be a message class")
        self.publishers[topic] = Publisher(msg_type, topic, _qos(qos_profile))
        return self.publishers[topic]

    def create_subscription(self, msg_type: type, topic: str, callback: Callable,
                            qos_profile: Any, *, callback_group: Any = None,
                            event_callbacks: Any = None, qos_overriding_options: Any = None,
                            raw: bool = False) -> object:  # fmt: skip
        if not isinstance(msg_type, type) or not callable(callback):
            raise TypeError("msg_type must be a message class and callback callable")
        self.subscriptions.append((msg_type, topic, callback, _qos(qos_profile)))
        return object()

    def get_logger(self) -> Logger:
        return self.logger


class TransformBroadcaster:
    def __init__(self, node: Node, qos: Any = None) -> None:
        if not isinstance(node, Node):
            raise TypeError("TransformBroadcaster needs the node")
        self.sent: list[Any] = []

    def sendTransform(self, transform: Any) -> None:
        self.sent.append(transform)


def message_class(name: str, fields: dict[str, Callable[[], Any]]) -> type:
    """A message class with only ``fields`` (each made by its factory), like rosidl's."""

    def __init__(self: Any, **kwargs: Any) -> None:
        unknown = set(kwargs) - set(fields)
        assert not unknown, f"Invalid arguments passed to constructor: {sorted(unknown)}"
        for field, make in fields.items():
            setattr(self, field, kwargs[field] if field in kwargs else make())

    return type(name, (), {"__slots__": tuple(fields), "__init__": __init__})


def messages() -> dict[str, type]:
    """The node's message classes, with the fields it touches."""
    time = message_class("Time", {"sec": int, "nanosec": int})
    header = message_class("Header", {"stamp": time, "frame_id": str})
    point = message_class("Point", {"x": float, "y": float, "z": float})
    quaternion = message_class("Quaternion", {"x": float, "y": float, "z": float, "w": float})
    pose = message_class("Pose", {"position": point, "orientation": quaternion})
    with_cov = message_class("PoseWithCovariance", {"pose": pose, "covariance": list})
    status = message_class("NavSatStatus", {"status": int, "service": int})
    vector = message_class("Vector3", {"x": float, "y": float, "z": float})
    transform = message_class("Transform", {"translation": vector, "rotation": quaternion})
    key_value = message_class("KeyValue", {"key": str, "value": str})
    return {
        "Image": message_class("Image", {"header": header, "height": int, "width": int,
                                         "encoding": str, "is_bigendian": int, "step": int,
                                         "data": bytes}),
        "CompressedImage": message_class("CompressedImage", {"header": header, "format": str,
                                                             "data": bytes}),
        "PoseWithCovarianceStamped": message_class("PoseWithCovarianceStamped",
                                                   {"header": header, "pose": with_cov}),
        "NavSatFix": message_class("NavSatFix", {
            "header": header, "status": status, "latitude": float, "longitude": float,
            "altitude": float, "position_covariance": list, "position_covariance_type": int}),
        "Float32": message_class("Float32", {"data": float}),
        "DiagnosticStatus": message_class("DiagnosticStatus", {
            "level": bytes, "name": str, "message": str, "hardware_id": str, "values": list}),
        "KeyValue": key_value,
        "DiagnosticArray": message_class("DiagnosticArray", {"header": header, "status": list}),
        "TransformStamped": message_class("TransformStamped", {
            "header": header, "child_frame_id": str, "transform": transform}),
    }  # fmt: skip


def install(monkeypatch: Any) -> None:
    """Make ``rclpy``, ``rclpy.node``, ``rclpy.qos`` and ``tf2_ros`` importable."""
    rclpy = types.ModuleType("rclpy")
    node = types.ModuleType("rclpy.node")
    node.Node = Node  # type: ignore[attr-defined]
    qos = types.ModuleType("rclpy.qos")
    for name in ("QoSProfile", "ReliabilityPolicy", "HistoryPolicy", "qos_profile_sensor_data"):
        setattr(qos, name, globals()[name])
    tf2 = types.ModuleType("tf2_ros")
    tf2.TransformBroadcaster = TransformBroadcaster  # type: ignore[attr-defined]
    for name, module in (("rclpy", rclpy), ("rclpy.node", node), ("rclpy.qos", qos),
                         ("tf2_ros", tf2)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
    Node.created = []
