"""A picture of a localised track, drawn with OpenCV (the runtime needs no plotting library).

Left, the map seen from above: its places in grey, the ground truth in green where frames
carry it, accepted fixes in blue and the others in pink. Right, the same against time: the
position along the map's main axis, frame by frame, which shows a track on a straight route
as clearly as on a winding one.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import cv2
import numpy as np

from edgevpr.core.files import write_bytes_atomic

PANEL = 640
MARGIN = 40
GREY, GREEN, BLUE = (170, 170, 170), (40, 160, 40), (200, 90, 20)
PINK, BLACK = (150, 150, 235), (0, 0, 0)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def draw_track(
    places: np.ndarray,
    fixes: np.ndarray,
    accepted: np.ndarray,
    truth: np.ndarray | None,
    path: str | os.PathLike[str],
    title: str,
) -> None:
    """``places``, ``fixes`` and ``truth``: N x 2 metres (NaN rows skipped); writes a PNG."""
    axis = main_axis(places)
    left = _panel(places, fixes, accepted, truth, "from above (metres)")
    frames = np.arange(len(fixes), dtype=np.float64)
    along = np.stack([frames, fixes @ axis], axis=1)
    truth_along = None if truth is None else np.stack([frames, truth @ axis], axis=1)
    right = _panel(np.zeros((0, 2)), along, accepted, truth_along, "frame -> along the map",
                   equal=False)  # fmt: skip
    canvas = np.concatenate([left, right], axis=1)
    header = np.full((36, canvas.shape[1], 3), 255, np.uint8)
    cv2.putText(header, title, (MARGIN, 24), FONT, 0.6, BLACK, 1, cv2.LINE_AA)
    footer = np.full((28, canvas.shape[1], 3), 255, np.uint8)
    legend = "grey: map places   green: ground truth   blue: accepted fix   pink: not accepted"
    cv2.putText(footer, legend, (MARGIN, 18), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
    _, png = cv2.imencode(".png", np.concatenate([header, canvas, footer], axis=0))
    write_bytes_atomic(path, png.tobytes())


def main_axis(points: np.ndarray) -> np.ndarray:
    """The unit direction along which ``points`` spread most (east where unknown)."""
    known = points[np.isfinite(points).all(axis=1)]
    if len(known) < 2:
        return np.array([1.0, 0.0])
    _, _, vt = np.linalg.svd(known - known.mean(axis=0), full_matrices=False)
    return vt[0]


def _panel(
    places: np.ndarray,
    fixes: np.ndarray,
    accepted: np.ndarray,
    truth: np.ndarray | None,
    label: str,
    equal: bool = True,
) -> np.ndarray:
    canvas = np.full((PANEL, PANEL, 3), 255, np.uint8)
    cv2.putText(canvas, label, (MARGIN, 16), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
    pixel = _scaler([places, fixes] + ([truth] if truth is not None else []), equal)
    if pixel is None:
        return canvas
    _dots(canvas, pixel, places, GREY, 2)
    if truth is not None:
        line = pixel(truth[np.isfinite(truth).all(axis=1)])
        cv2.polylines(canvas, [line.reshape(-1, 1, 2)], False, GREEN, 2, cv2.LINE_AA)
    _dots(canvas, pixel, fixes[~accepted], PINK, 2)
    _dots(canvas, pixel, fixes[accepted], BLUE, 3)
    return canvas


def _scaler(
    arrays: list[np.ndarray], equal: bool
) -> Callable[[np.ndarray], np.ndarray] | None:
    """Points -> pixels of a panel, all ``arrays`` in view (one scale for both axes when
    ``equal``, centred)."""
    known = [a[np.isfinite(a).all(axis=1)] for a in arrays if len(a)]
    known = [a for a in known if len(a)]
    if not known:
        return None
    every = np.concatenate(known)
    low, high = every.min(axis=0), every.max(axis=0)
    span = np.maximum(high - low, 1e-9)
    inside = PANEL - 2 * MARGIN
    scale = np.full(2, inside / span.max()) if equal else inside / span
    offset = MARGIN + (inside - span * scale) / 2

    def pixel(points: np.ndarray) -> np.ndarray:
        xy = (points - low) * scale + offset
        return np.stack([xy[:, 0], PANEL - xy[:, 1]], axis=1).round().astype(np.int32)

    return pixel


def _dots(canvas: np.ndarray, pixel, points: np.ndarray, colour, radius: int) -> None:
    points = points[np.isfinite(points).all(axis=1)]
    if len(points):
        for x, y in pixel(points):
            cv2.circle(canvas, (int(x), int(y)), radius, colour, -1, cv2.LINE_AA)
