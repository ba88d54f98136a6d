"""From a stream of frames to a trustworthy position: sequence matching on route maps, a
temporal filter on area maps, calibrated confidence, and frame sources (torch-free).

    from edgevpr.runtime import Embedder, PlaceMap
    from edgevpr.runtime.localize import Localizer

    localizer = Localizer(Embedder("best.onnx"), PlaceMap.load("route.vprmap"))
    for fix in localizer.run(frames):
        if fix.accepted:
            act_on(fix.position, fix.uncertainty_m)
"""

from edgevpr.runtime.localize.calibration import Calibration, precision_recall
from edgevpr.runtime.localize.fix import INITIALISING, LOST, TRACKING, Fix, Position
from edgevpr.runtime.localize.localizer import (
    AREA,
    AUTO,
    ROUTE,
    FixIntegrity,
    Localizer,
    StreamFrame,
)

__all__ = [
    "AREA",
    "AUTO",
    "INITIALISING",
    "LOST",
    "ROUTE",
    "TRACKING",
    "Calibration",
    "Fix",
    "FixIntegrity",
    "Localizer",
    "Position",
    "StreamFrame",
    "precision_recall",
]
