"""Which optional extra of edgevpr provides a package, for the one-line error a user gets
where it is missing (torch-free)."""

from __future__ import annotations

EXTRA_FOR_MODULE = {
    "torch": "train",
    "torchvision": "train",
    "pytorch_metric_learning": "train",
    "matplotlib": "plot",
    "foxglove": "live",
    "openvino": "openvino",
    "onnx": "engine",
    "onnxscript": "export",
    "tensorrt": "trt",
    "rosbags": "ros",
    "gpxpy": "teach",
    "exifread": "teach",
    "usearch": "maps",
    "ray": "cluster",
}

# Core dependencies whose import name differs from the package pip installs.
PACKAGE_FOR_MODULE = {"faiss": "faiss-cpu", "cv2": "opencv-python-headless"}


def install_hint(module: str) -> str:
    """'pip install 'edgevpr[train]'' for torch; a plain pip install for others."""
    extra = EXTRA_FOR_MODULE.get(module)
    if extra == "trt":
        return "pip install 'edgevpr[trt]', from NVIDIA's index"
    if extra:
        return f"pip install 'edgevpr[{extra}]'"
    return f"pip install {PACKAGE_FOR_MODULE.get(module, module)}"
