"""Confidence that can be calibrated.

A localizer's raw confidence is a margin in z-units. ``edgevpr eval --pr`` measures, on a
labelled set, how precise the fixes at or above each margin are: the precision-recall curve,
its area (average precision) and R@100P, the recall at which no accepted fix is wrong (the
loop-closure standard). ``--threshold-at-precision P`` stores the margin that reaches
precision P, and the measured curve, in a small JSON file beside the map
(``<map>.localizer.json``); a :class:`~edgevpr.runtime.localize.Localizer` then accepts
fixes at that margin and reports as confidence the precision measured there.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.core.checks import real, whole
from edgevpr.core.errors import EdgeVPRError, first_line
from edgevpr.core.files import write_text_atomic
from edgevpr.core.provenance import utc_now

FORMAT = "edgevpr.localizer-calibration"
FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".localizer.json"
# Without a calibration, accept at these margins (z-units) at L = 10 frames. Route matching:
# on nordland64 and corridor at a steady speed no wrong fix had a margin above 0.51 (an
# untrained head's worst); with the speed switching between 0.5x and 2x, up to 0.77. Area
# filter: up to 0.41 on the same sets taken as 2-D. Calibrate for your data (eval --pr).
DEFAULT_THRESHOLDS = {"route": 0.5, "area": 0.45}
THRESHOLD_LENGTH = 10
UNCALIBRATED_SPREAD = 0.1  # margin over which the uncalibrated confidence rises 0.27 -> 0.73
MODES = ("route", "area", "single")
# A margin is a difference of z-values (best path minus its best rival, never below 0): a
# few units at most on real data; the caps only refuse what no fit can write.
MAX_MARGIN = 1000.0
MAX_CURVE_POINTS = 10_000
MAX_LENGTH = 100_000


@dataclass(frozen=True)
class PRCurve:
    """Precision and recall of the fixes accepted at each threshold, highest first."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    positives: int  # frames that have a right answer in the map

    @property
    def average_precision(self) -> float:
        """Area under the curve, as average precision (precision at each recall step)."""
        steps = np.diff(np.concatenate([[0.0], self.recall]))
        return float(np.sum(steps * self.precision))

    @property
    def recall_at_full_precision(self) -> float:
        """R@100P: the largest recall at which precision is exactly 1."""
        perfect = self.precision >= 1.0
        return float(self.recall[perfect].max()) if perfect.any() else 0.0

    def threshold_at(self, precision: float) -> float | None:
        """The lowest threshold whose accepted fixes reach ``precision`` (the most recall),
        or None when none does."""
        reached = np.flatnonzero(self.precision >= precision)
        if not len(reached):
            return None
        return float(self.thresholds[reached[np.argmax(self.recall[reached])]])

    def summary(self) -> dict[str, Any]:
        return {
            "average_precision": round(self.average_precision, 4),
            "recall_at_100_precision": round(self.recall_at_full_precision, 4),
            "positives": self.positives,
            "frames": int(len(self.thresholds)),
        }


def precision_recall(
    confidence: np.ndarray, correct: np.ndarray, has_answer: np.ndarray | None = None
) -> PRCurve:
    """The PR curve of fixes with raw ``confidence``, ``correct`` where the fix lies within
    the positive radius of the truth; recall over the frames that ``has_answer``."""
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, bool)
    if confidence.shape != correct.shape or confidence.ndim != 1 or not len(confidence):
        raise EdgeVPRError("precision-recall needs one confidence and one verdict per frame")
    has_answer = np.ones(len(correct), bool) if has_answer is None else np.asarray(has_answer)
    order = np.argsort(-np.nan_to_num(confidence, nan=-np.inf), kind="stable")
    right = np.cumsum(correct[order])
    accepted = np.arange(1, len(order) + 1)
    positives = int(has_answer.sum())
    return PRCurve(
        thresholds=confidence[order],
        precision=right / accepted,
        recall=right / max(positives, 1),
        positives=positives,
    )


@dataclass(frozen=True)
class Calibration:
    """A threshold and the measured precision curve for one model and one way of matching
    (``mode`` "route" or "area" with ``length`` frames, or "single" frames)."""

    fingerprint: str
    mode: str
    length: int
    threshold: float
    precision: float  # the precision the threshold was chosen for
    curve: list[tuple[float, float]]  # (margin, share of fixes at that margin that were right)
    source: dict[str, Any] = field(default_factory=dict)

    def confidence(self, margin: float) -> float:
        """The share of fixes at ``margin`` that were right on the calibration set."""
        if not self.curve or not math.isfinite(margin):
            return 0.0
        margins, precisions = zip(*self.curve, strict=True)
        return float(np.interp(margin, margins, precisions, left=0.0, right=precisions[-1]))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}

    def save(self, path: str | os.PathLike[str]) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EdgeVPRError(f"cannot read calibration {path}: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise EdgeVPRError(f"{path} is not an edgevpr localizer calibration")
        if data.get("format_version") != FORMAT_VERSION:
            raise EdgeVPRError(f"{path} has calibration version {data.get('format_version')}")
        try:
            return cls.checked(data)
        except (KeyError, TypeError, ValueError, EdgeVPRError) as exc:
            raise EdgeVPRError(f"calibration {path} is broken ({first_line(exc)})") from None

    @classmethod
    def checked(cls, data: dict[str, Any]) -> Calibration:
        """From a calibration file's fields, each in its range: a threshold a margin can
        take, a curve of finite margins rising with precisions in [0, 1] that never fall
        (what :meth:`fit` writes). Anything else would accept every frame or give
        confidences outside [0, 1]."""
        fingerprint, mode, source = data["fingerprint"], data["mode"], data.get("source") or {}
        if not isinstance(fingerprint, str) or not fingerprint or not isinstance(source, dict):
            raise ValueError("fingerprint must be a string and source an object")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        curve = data["curve"]
        if not isinstance(curve, list) or not 1 <= len(curve) <= MAX_CURVE_POINTS:
            raise ValueError(f"the curve must be a list of 1 to {MAX_CURVE_POINTS} points")
        points = np.array([[real(m, "a curve margin"), real(p, "a curve precision")]
                           for m, p in curve], np.float64)  # fmt: skip
        if (np.abs(points[:, 0]) > MAX_MARGIN).any() or (np.diff(points[:, 0]) < 0).any():
            raise ValueError("the curve's margins are not rising within the margin range")
        precisions = points[:, 1]
        if (precisions < 0).any() or (precisions > 1).any() or (np.diff(precisions) < 0).any():
            raise ValueError("the curve's precisions are not rising within [0, 1]")
        threshold = real(data["threshold"], "threshold")
        if not 0.0 <= threshold <= MAX_MARGIN:
            raise ValueError(f"threshold {threshold:g} is outside [0, {MAX_MARGIN:g}]")
        precision = real(data["precision"], "precision")
        if not 0.0 < precision <= 1.0:
            raise ValueError(f"precision {precision:g} is outside (0, 1]")
        return cls(fingerprint=fingerprint, mode=mode,
                   length=whole(data["length"], "length", 1, MAX_LENGTH), threshold=threshold,
                   precision=precision, curve=[(float(m), float(p)) for m, p in points],
                   source=dict(source))  # fmt: skip

    @classmethod
    def fit(
        cls, margins: np.ndarray, correct: np.ndarray, precision: float, fingerprint: str,
        mode: str, length: int, source: dict[str, Any] | None = None,
    ) -> Calibration:  # fmt: skip
        """From fixes measured on a labelled set: the threshold whose accepted fixes reach
        ``precision``, and the chance that a fix at a given margin is right (isotonic: it
        never falls as the margin grows)."""
        margins = np.asarray(margins, np.float64)
        correct = np.asarray(correct, bool)
        threshold = precision_recall(margins, correct).threshold_at(precision)
        if threshold is None:
            raise EdgeVPRError(
                f"no threshold reaches precision {precision:g} on this set; choose a lower one"
            )
        finite = np.isfinite(margins)
        points = isotonic(margins[finite], correct[finite].astype(np.float64))
        return cls(
            fingerprint=fingerprint,
            mode=mode,
            length=length,
            threshold=threshold,
            precision=precision,
            curve=points,
            source={"created": utc_now(), **(source or {})},
        )


def isotonic(x: np.ndarray, y: np.ndarray, points: int = 200) -> list[tuple[float, float]]:
    """The non-decreasing fit of y against x (pool adjacent violators), as at most
    ``points`` (x, fitted y) pairs in rising x."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    means: list[float] = []
    weights: list[float] = []
    ends: list[int] = []
    for i, value in enumerate(ys):
        means.append(float(value))
        weights.append(1.0)
        ends.append(i)
        while len(means) > 1 and means[-2] > means[-1]:
            w = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / w
            weights[-2] = w
            ends[-2] = ends[-1]
            del means[-1], weights[-1], ends[-1]
    fitted = np.repeat(means, np.asarray(weights, np.int64))
    keep = np.unique(np.linspace(0, len(xs) - 1, min(points, len(xs))).round().astype(int))
    return [(float(xs[i]), float(fitted[i])) for i in keep]


def sidecar(map_path: str | os.PathLike[str]) -> Path:
    """Where a map's calibration lies: ``route.vprmap`` -> ``route.vprmap.localizer.json``."""
    path = Path(map_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def default_threshold(mode: str, length: int) -> float:
    """The margin to accept at without a calibration, for L = ``length`` frames.

    A margin is a difference of means of L z-values, so its spread from chance shrinks like
    1/sqrt(L): off-map frames (nordland64's train stretch run against its test map,
    MS-trained Lite0) reached margins of 0.78, 0.44 and 0.25 (99th percentiles) at L = 5,
    10 and 20, so the threshold for L = 10 is scaled by sqrt(10 / L).
    """
    return DEFAULT_THRESHOLDS[mode] * math.sqrt(THRESHOLD_LENGTH / length)


def uncalibrated_confidence(margin: float, threshold: float) -> float:
    """Without a calibration, a logistic of the margin: 0.5 at the threshold."""
    if not math.isfinite(margin):
        return 0.0
    return float(1.0 / (1.0 + math.exp(-(margin - threshold) / UNCALIBRATED_SPREAD)))
