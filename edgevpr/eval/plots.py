"""Pictures of an evaluation: the Recall@N curve, and a grid of queries with their top-k
matches (correct ones framed green, wrong ones red)."""

from __future__ import annotations

import io
import os
from typing import Any

import cv2
import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.files import write_bytes_atomic
from edgevpr.core.images import read_image
from edgevpr.eval.evaluate import Evaluation

GREEN = (40, 180, 40)
RED = (220, 40, 40)
GREY = (120, 120, 120)
BACKGROUND = (255, 255, 255)


def plot_recall_curve(
    evaluations: dict[str, Evaluation],
    path: str | os.PathLike[str],
    max_n: int = 20,
    pr_curves: dict[str, Any] | None = None,
) -> None:
    """Recall@1..max_n for one or more labelled evaluations, as a PNG; with ``pr_curves``
    (label -> PRCurve) a second panel shows precision against recall."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        raise EdgeVPRError("--plot needs matplotlib: pip install 'edgevpr[train]'") from None
    n = np.arange(1, max_n + 1)
    panels = 2 if pr_curves else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), dpi=120, squeeze=False)
    ax = axes[0, 0]
    try:
        for label, evaluation in evaluations.items():
            ax.plot(n, evaluation.recalls.curve(max_n), marker="o", markersize=3, label=label)
        first = next(iter(evaluations.values()))
        ax.set_xlabel("N (database images retrieved)")
        ax.set_ylabel("Recall@N (%)")
        ax.set_title(f"{first.split.name}: {len(first.split.queries)} queries, {first.radius:g} m")
        ax.set_xlim(1, max_n)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        if pr_curves:
            pr_panel(axes[0, 1], pr_curves)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def pr_panel(ax: Any, curves: dict[str, Any]) -> None:
    """Precision against recall of accepted matches, one line per PRCurve."""
    for label, curve in curves.items():
        ax.plot(
            100 * curve.recall,
            100 * curve.precision,
            label=f"{label}: AP {curve.average_precision:.2f}, "
            f"R@100P {100 * curve.recall_at_full_precision:.1f}",
        )
    ax.set_xlabel("recall (%)")
    ax.set_ylabel("precision (%)")
    ax.set_title("accepted matches as the threshold falls")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)


def tile(
    image: np.ndarray, height: int, width: int, frame: tuple[int, int, int], label: str
) -> np.ndarray:
    """An image resized into a framed tile with a small caption."""
    border = 3
    inner = cv2.resize(
        image, (width - 2 * border, height - 2 * border), interpolation=cv2.INTER_AREA
    )
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[:] = frame
    out[border:-border, border:-border] = inner
    # white text on a black outline: readable on any image
    for colour, thickness in (((0, 0, 0), 2), ((255, 255, 255), 1)):
        origin = (border + 2, height - border - 3)
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(out, label, origin, font, 0.35, colour, thickness, cv2.LINE_AA)
    return out


def visualize_matches(
    evaluation: Evaluation,
    path: str | os.PathLike[str],
    num_queries: int = 8,
    k: int = 5,
    tile_height: int = 96,
) -> None:
    """A PNG grid: one row per query (evenly spaced through the set), the query then its
    top-k database matches; green frame = within the radius, red = not."""
    split = evaluation.split
    k = min(k, evaluation.predictions.shape[1])
    count = min(num_queries, len(split.queries))
    chosen = np.unique(np.linspace(0, len(split.queries) - 1, count).round().astype(int))
    sample = read_image(split.queries.paths[int(chosen[0])])
    tile_width = int(round(tile_height * sample.shape[1] / sample.shape[0]))
    tile_width = min(max(tile_width, 48), 4 * tile_height)
    gap = 6
    rows = []
    for q in chosen:
        positives = set(evaluation.positives[q].tolist())
        tiles = [
            tile(read_image(split.queries.paths[q]), tile_height, tile_width, GREY, f"query {q}")
        ]
        for rank, db in enumerate(evaluation.predictions[q, :k], start=1):
            frame = GREEN if int(db) in positives else RED
            tiles.append(
                tile(
                    read_image(split.database.paths[db]),
                    tile_height,
                    tile_width,
                    frame,
                    f"#{rank} db {db}",
                )
            )
        spacer = np.full((tile_height, gap, 3), BACKGROUND, dtype=np.uint8)
        row = [tiles[0], np.full((tile_height, 3 * gap, 3), BACKGROUND, dtype=np.uint8)]
        for t in tiles[1:]:
            row += [t, spacer]
        rows.append(np.hstack(row[:-1]))
        rows.append(np.full((gap, rows[-1].shape[1], 3), BACKGROUND, dtype=np.uint8))
    grid = np.vstack(rows[:-1])
    ok, data = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise EdgeVPRError(f"cannot encode {path}")
    write_bytes_atomic(path, data.tobytes())
