"""The torch-free runtime that ships on the robot: preprocess, embed, look up, localise.

Nothing in this package imports torch (a test enforces it). Its rooms: ``backends`` (what
runs a model: ONNX Runtime, native TensorRT), ``embedder`` and ``recognizer``, ``placemap``
(index kinds, file format, builds), ``localize`` (the localizer and its ROS 2 node) and
``commands`` (``edgevpr query``, ``index``, ``localize``).

    from edgevpr.runtime import Embedder, GeoPrior, PlaceMap, Recognizer

    embedder = Embedder("model.onnx")                 # or a TensorRT .engine
    recognizer = Recognizer(embedder, PlaceMap.load("route.vprmap"))
    result = recognizer.recognize("frame.jpg", k=5, prior=GeoPrior(east, north, 50.0))
"""

from edgevpr.core.geo import GeoPrior
from edgevpr.runtime.describe import describe_artifact
from edgevpr.runtime.embedder import Embedder
from edgevpr.runtime.placemap import PlaceMap, PlaceRecord
from edgevpr.runtime.recognizer import Recognition, Recognizer

__all__ = ["Embedder", "GeoPrior", "PlaceMap", "PlaceRecord", "Recognition", "Recognizer",
           "describe_artifact"]  # fmt: skip
