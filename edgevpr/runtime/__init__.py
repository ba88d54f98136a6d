"""The torch-free runtime that ships on the robot: preprocess, embed, look up.

Nothing in this package may import torch (a test enforces it).

    from edgevpr.runtime import Embedder, GeoPrior, PlaceMap, Recognizer

    embedder = Embedder("model.onnx")                 # or a TensorRT .engine
    recognizer = Recognizer(embedder, PlaceMap.load("route.vprmap"))
    result = recognizer.recognize("frame.jpg", k=5, prior=GeoPrior(east, north, 50.0))

The names are imported lazily, so that ``edgevpr.runtime.preprocess`` (used by training)
does not pull in ONNX Runtime or hnswlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Embedder": "edgevpr.runtime.embedder",
    "GeoPrior": "edgevpr.runtime.geo",
    "PlaceMap": "edgevpr.runtime.placemap",
    "PlaceRecord": "edgevpr.runtime.placemap",
    "Recognizer": "edgevpr.runtime.recognizer",
    "Recognition": "edgevpr.runtime.recognizer",
    "describe_artifact": "edgevpr.runtime.describe",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgevpr.runtime' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
