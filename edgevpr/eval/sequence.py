"""Recall and confidence of sequence matching on an evaluation split, through the runtime's
own route tracker (what a ``Localizer`` runs), on exact search.

Frames are taken in travel order: by the layout's timestamp field where every image has
one, else by the natural order of the file names; the database likewise is the route.
Single frames are scored the usual way and their confidence is the gap between the best
and second-best cosine; a sequence fix's confidence is its margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.eval.evaluate import Evaluation
from edgevpr.eval.recall import Recalls, nearest, recall_at_n
from edgevpr.runtime.localize.calibration import PRCurve, precision_recall
from edgevpr.runtime.localize.layout import traversal_order
from edgevpr.runtime.localize.route import RouteConfig, RouteTracker, RowStats, z_scorer
from edgevpr.runtime.placemap.place_record import record_for

STATS_SAMPLE = 512


@dataclass(frozen=True)
class SequenceResult:
    """Sequence matching over an evaluation split (per query, in the split's own order)."""

    length: int
    recalls: Recalls
    margins: np.ndarray  # the fix's confidence; -inf while the window fills
    correct: np.ndarray  # the fix lies within the radius of the truth
    curve: PRCurve

    def to_dict(self) -> dict[str, Any]:
        return {
            "length": self.length,
            "recall": {str(n): round(v, 4) for n, v in sorted(self.recalls.values.items())},
            "pr": self.curve.summary(),
        }


def single_frame_pr(evaluation: Evaluation) -> tuple[PRCurve, np.ndarray, np.ndarray]:
    """(curve, confidence, correct) of single-frame matches: confidence is the best cosine
    less the second best."""
    squared = evaluation.distances  # unit vectors: squared distance = 2 - 2 cosine
    second = squared[:, 1] if squared.shape[1] > 1 else np.full(len(squared), 4.0)
    confidence = (second - squared[:, 0]) / 2
    correct = _top1_right(evaluation.predictions[:, 0], evaluation.positives)
    return precision_recall(confidence, correct, _has_answer(evaluation)), confidence, correct


def sequence_evaluation(
    evaluation: Evaluation, length: int, ns: tuple[int, ...], config: RouteConfig | None = None
) -> SequenceResult:
    """Run the route tracker over the queries in travel order against the database route."""
    database, queries = evaluation.database_descriptors, evaluation.query_descriptors
    if database is None or queries is None:
        raise EdgeVPRError("sequence evaluation needs the evaluation's descriptors")
    config = RouteConfig(length=length) if config is None else config
    route = np.asarray(_order(evaluation.split.database.paths), np.int64)
    on_route = _normalised(database[route])
    queries = _normalised(queries)
    picks = np.random.default_rng(0).permutation(len(route))[:STATS_SAMPLE]
    stats = RowStats(on_route[np.sort(picks)])
    position_of = np.empty(len(route), np.int64)
    position_of[route] = np.arange(len(route))
    seeds, _ = nearest(database, queries, config.seeds)
    depth = max(ns)
    tracker = RouteTracker(len(route), config)
    rankings = np.empty((len(queries), min(depth, len(route))), np.int64)
    margins = np.full(len(queries), -np.inf)
    for query in _order(evaluation.split.queries.paths):
        frame = queries[query]
        score = z_scorer(lambda p, q=frame: on_route[p] @ q, frame, stats, len(route))
        estimate = tracker.update(position_of[seeds[query]], score)
        ranked = route[estimate.ranking()]
        rankings[query] = _padded(ranked, evaluation.predictions[query], rankings.shape[1])
        if estimate.frames >= length:
            margins[query] = estimate.margin
    recalls = recall_at_n(rankings, evaluation.positives, ns, database_size=len(database))
    correct = _top1_right(rankings[:, 0], evaluation.positives)
    curve = precision_recall(margins, correct, _has_answer(evaluation))
    return SequenceResult(length, recalls, margins, correct, curve)


def _order(paths: tuple[Path, ...]) -> list[int]:
    order, _ = traversal_order([record_for(Path(p)) for p in paths])
    return order


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _padded(ranked: np.ndarray, fallback: np.ndarray, depth: int) -> np.ndarray:
    """The sequence's ranking, topped up from the single frame's (never repeating one)."""
    extra = fallback[~np.isin(fallback, ranked)]
    return np.concatenate([ranked, extra])[:depth]


def _top1_right(top: np.ndarray, positives: list[np.ndarray]) -> np.ndarray:
    return np.array([t in p for t, p in zip(top.tolist(), positives, strict=True)], bool)


def _has_answer(evaluation: Evaluation) -> np.ndarray:
    return np.array([len(p) > 0 for p in evaluation.positives], bool)
