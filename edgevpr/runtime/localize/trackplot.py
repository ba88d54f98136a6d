"""A figure of a localised track for a report (``edgevpr localize --plot``), drawn with
matplotlib (the ``plot`` extra; the runtime needs it only here).

Three panels:

- from above, in metres with a scale bar: the map's places (grey), the truth (a wide pale
  green band drawn first, so it stays visible under the track), accepted fixes (blue) and
  the others (orange, small), and each accepted fix's error as a red segment to its truth;
- against time: each fix's error (where there is a truth, log scale, the --radius as a
  line) and its confidence;
- the frames x places similarity (the SeqSLAM view): each frame's nearest places coloured
  by cosine, with the path the localizer chose over them.

The legend lists only what was drawn.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.extras import install_hint
from edgevpr.core.files import write_bytes_atomic
from edgevpr.runtime.localize.fix import Fix

TRUTH_COLOUR, FIX_COLOUR, OTHER_COLOUR, ERROR_COLOUR = "#7fcf7f", "#1f5fbf", "#f0a040", "#d62728"


@dataclass(frozen=True)
class TrackFigure:
    """What the figure shows, as arrays: ``places`` N x 2 metres; per frame ``fixes`` F x 2,
    ``accepted``, ``confidence``, ``truth`` F x 2 (or None), ``chosen`` (the fix's place as
    a route/layout index) and ``similar``: (frame, place index, cosine) rows of each
    frame's nearest places."""

    places: np.ndarray
    fixes: np.ndarray
    accepted: np.ndarray
    confidence: np.ndarray
    truth: np.ndarray | None
    chosen: np.ndarray
    similar: np.ndarray
    title: str
    radius_m: float

    @classmethod
    def of(cls, fixes: list[Fix], similar: np.ndarray, truth: np.ndarray | None,
           localizer: Any, radius_m: float) -> TrackFigure:  # fmt: skip
        """From a run's fixes and ``similar`` rows (frame, place index, cosine)."""
        layout = localizer.layout
        xy = np.array([(np.nan, np.nan) if f.position is None else
                       (f.position.first, f.position.second) for f in fixes],
                      np.float64).reshape(-1, 2)  # fmt: skip
        ids = np.array([-1 if f.place_id is None else f.place_id for f in fixes], np.int64)
        chosen = np.full(len(fixes), -1, np.int64)
        chosen[ids >= 0] = layout.index_of(ids[ids >= 0])
        accepted = np.array([f.accepted for f in fixes], bool)
        title = (f"{len(fixes)} frames, {int(accepted.sum())} accepted ({localizer.mode} "
                 f"matching over {localizer.length} frames)")  # fmt: skip
        return cls(places=layout.xy, fixes=xy, accepted=accepted,
                   confidence=np.array([f.confidence for f in fixes], np.float64),
                   truth=truth, chosen=chosen, similar=similar.reshape(-1, 3), title=title,
                   radius_m=radius_m)  # fmt: skip

    @property
    def errors(self) -> np.ndarray | None:
        if self.truth is None:
            return None
        return np.linalg.norm(self.fixes - self.truth, axis=1)


def draw_track(figure: TrackFigure, path: str | os.PathLike[str]) -> None:
    """Draw ``figure`` as a PNG at ``path`` (written atomically)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EdgeVPRError(f"--plot needs matplotlib: {install_hint('matplotlib')}") from None
    fig, axes = plt.subplots(1, 3, figsize=(18, 6), gridspec_kw={"width_ratios": [1.2, 1, 1]})
    try:
        _top_view(axes[0], figure)
        _against_time(axes[1], figure)
        _similarity(axes[2], figure)
        fig.suptitle(figure.title)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def _top_view(ax: Any, figure: TrackFigure) -> None:
    places = figure.places[np.isfinite(figure.places).all(axis=1)]
    if len(places):
        ax.scatter(places[:, 0], places[:, 1], s=4, c="#b0b0b0", label="map places", zorder=1)
    if figure.truth is not None and np.isfinite(figure.truth).any():
        ax.plot(figure.truth[:, 0], figure.truth[:, 1], color=TRUTH_COLOUR, lw=6, alpha=0.8,
                solid_capstyle="round", label="truth", zorder=2)  # fmt: skip
    errors = figure.errors
    if errors is not None:
        wrong = figure.accepted & (errors > figure.radius_m) & np.isfinite(errors)
        for (x0, y0), (x1, y1) in zip(figure.fixes[wrong], figure.truth[wrong], strict=True):  # type: ignore[index]
            ax.plot([x0, x1], [y0, y1], color=ERROR_COLOUR, lw=1, zorder=3)
        if wrong.any():
            ax.plot([], [], color=ERROR_COLOUR, lw=1,
                    label=f"error of an accepted fix > {figure.radius_m:g} m")  # fmt: skip
    others = ~figure.accepted & np.isfinite(figure.fixes).all(axis=1)
    if others.any():
        ax.scatter(*figure.fixes[others].T, s=5, c=OTHER_COLOUR, label="not accepted", zorder=4)
    if figure.accepted.any():
        ax.scatter(*figure.fixes[figure.accepted].T, s=9, c=FIX_COLOUR, label="accepted fix",
                   zorder=5)  # fmt: skip
    drawn = [figure.places, figure.fixes] + ([figure.truth] if figure.truth is not None else [])
    _scale_bar(ax, np.concatenate([a.reshape(-1, 2) for a in drawn]))
    ax.set_aspect("equal", adjustable="datalim")
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.set_title("from above")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)


def _scale_bar(ax: Any, points: np.ndarray) -> None:
    """A bar of a round number of metres, about a fifth of the drawn extent."""
    points = points[np.isfinite(points).all(axis=1)]
    if len(points) < 2:
        return
    low, high = points.min(axis=0), points.max(axis=0)
    span = float((high - low).max()) / 5
    if span <= 0:
        return
    length = 10 ** np.floor(np.log10(span))
    length *= 5 if span / length >= 5 else 2 if span / length >= 2 else 1
    x, y = low[0], low[1] - 0.04 * span * 5
    ax.plot([x, x + length], [y, y], color="black", lw=3)
    ax.text(x + length / 2, y, f"{length:g} m\n", ha="center", va="bottom", fontsize=8)


def _against_time(ax: Any, figure: TrackFigure) -> None:
    frames = np.arange(len(figure.accepted))
    errors = figure.errors
    if errors is not None and np.isfinite(errors).any():
        shown = np.maximum(errors, 0.1)
        ax.scatter(frames[figure.accepted], shown[figure.accepted], s=6, c=FIX_COLOUR,
                   label="error, accepted")  # fmt: skip
        if (~figure.accepted).any():
            ax.scatter(frames[~figure.accepted], shown[~figure.accepted], s=4, c=OTHER_COLOUR,
                       label="error, not accepted")  # fmt: skip
        ax.axhline(figure.radius_m, color=ERROR_COLOUR, lw=1, ls="--",
                   label=f"{figure.radius_m:g} m")  # fmt: skip
        ax.set_yscale("log")
        ax.set_ylabel("error (m)")
    confidence_ax = ax.twinx() if errors is not None else ax
    confidence_ax.plot(frames, figure.confidence, color="#555555", lw=0.8, label="confidence")
    confidence_ax.set_ylim(-0.02, 1.02)
    confidence_ax.set_ylabel("confidence")
    ax.set_xlabel("frame")
    ax.set_title("error and confidence against time")
    handles, labels = ax.get_legend_handles_labels()
    if confidence_ax is not ax:
        more = confidence_ax.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels, loc="upper right", fontsize=8)


def _similarity(ax: Any, figure: TrackFigure) -> None:
    if len(figure.similar):
        frame, place, cosine = figure.similar.T
        dots = ax.scatter(frame, place, c=cosine, s=5, cmap="viridis", label="nearest places")
        ax.figure.colorbar(dots, ax=ax, label="cosine")
    chosen = figure.chosen >= 0
    if chosen.any():
        frames = np.arange(len(figure.chosen))
        ax.plot(frames[chosen], figure.chosen[chosen], color=ERROR_COLOUR, lw=1,
                label="chosen path")  # fmt: skip
    ax.set_xlabel("frame")
    ax.set_ylabel("place (map's travel order)")
    ax.set_title("frames x places similarity")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8)
