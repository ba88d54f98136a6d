"""The ROS 2 (ament_python) package of the edgevpr localizer node: an executable and a
launch file around ``edgevpr.runtime.localize.ros_node``, which pip installs with edgevpr
itself (this package holds no Python code of its own)."""

from setuptools import setup

PACKAGE = "edgevpr"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", ["launch/localize.launch.py"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    entry_points={
        "console_scripts": ["localize = edgevpr.runtime.localize.ros_node:main"],
    },
)
