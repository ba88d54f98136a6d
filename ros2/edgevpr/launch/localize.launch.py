"""``ros2 launch edgevpr localize.launch.py map:=route.vprmap model:=best.onnx
image_topic:=/camera/image_raw``: the localizer node with its main parameters as launch
arguments (every other parameter of the node keeps its default; see
``edgevpr.runtime.localize.ros_node.PARAMETERS``)."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

REQUIRED = {
    "map": "the place map (.vprmap)",
    "model": "the exported model that built it (.onnx or TensorRT engine)",
}
ARGUMENTS = {
    "image_topic": ("/camera/image_raw", "sensor_msgs/Image (or CompressedImage) topic"),
    "output_topic": ("/vpr/fix", "pose or NavSatFix topic"),
    "frame_id": ("map", "frame of the published pose"),
    "compressed": ("false", "subscribe to sensor_msgs/CompressedImage"),
    "reliable": ("false", "reliable QoS (default: sensor data, best effort)"),
    "publish_tf": ("false", "broadcast frame_id -> child_frame_id"),
    "length": ("10", "frames of evidence (L)"),
}


def generate_launch_description() -> LaunchDescription:
    declared = [DeclareLaunchArgument(name, description=text) for name, text in REQUIRED.items()]
    declared += [DeclareLaunchArgument(name, default_value=default, description=text)
                 for name, (default, text) in ARGUMENTS.items()]
    node = Node(
        package="edgevpr",
        executable="localize",
        name="edgevpr_localizer",
        output="screen",
        parameters=[{name: LaunchConfiguration(name) for name in [*REQUIRED, *ARGUMENTS]}],
    )
    return LaunchDescription([*declared, node])
