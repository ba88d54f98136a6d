"""Recall@N of any embedder on a split in the evaluation layout.

An embedder is anything with ``embed_paths(paths) -> N x D float32``: a checkpoint through
``TorchEmbedder`` or an exported model through the runtime's ``Embedder``. Both go through
this one function, so an export's accuracy is measured exactly like the original's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.formats import PYTORCH, RUNTIME, format_of
from edgevpr.data.layout import DEFAULT_RADIUS_M, EvalSplit
from edgevpr.eval.recall import DEFAULT_NS, Recalls, nearest, recall_at_n

EVAL_BATCH = 32  # images embedded per call when evaluating


class Embedder(Protocol):
    def embed_paths(self, paths: Sequence[Path]) -> np.ndarray: ...


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation found: recalls, the ranked matches and their ground truth."""

    split: EvalSplit
    radius: float
    recalls: Recalls
    predictions: np.ndarray  # Q x k database indices, nearest first
    distances: np.ndarray  # Q x k squared L2 distances
    positives: list[np.ndarray]
    descriptor_dim: int
    embed_seconds: float
    search_seconds: float
    database_descriptors: np.ndarray | None = None  # for sequence and PR analysis
    query_descriptors: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": str(self.split.root),
            "split": self.split.split,
            "radius_m": self.radius,
            "recall": {str(n): round(v, 4) for n, v in sorted(self.recalls.values.items())},
            "queries": len(self.split.queries),
            "database": len(self.split.database),
            "queries_without_positives": self.recalls.queries_without_positives,
            "recall_n_beyond_database": list(self.recalls.beyond_database),
            "descriptor_dim": self.descriptor_dim,
            "embed_seconds": round(self.embed_seconds, 3),
            "search_seconds": round(self.search_seconds, 3),
        }


def evaluate(
    embedder: Embedder,
    split: EvalSplit,
    radius: float = DEFAULT_RADIUS_M,
    ns: tuple[int, ...] = DEFAULT_NS,
    depth: int = 0,
) -> Evaluation:
    """Embed the database and queries, search exactly, and score Recall@N.

    ``depth`` asks for more ranked matches than max(ns) (for plots and match grids).
    """
    start = time.perf_counter()
    database = checked_descriptors(embedder.embed_paths(list(split.database.paths)), split.database)
    queries = checked_descriptors(embedder.embed_paths(list(split.queries.paths)), split.queries)
    if database.shape[1] != queries.shape[1]:
        raise EdgeVPRError("database and query descriptors differ in size")
    embedded = time.perf_counter()
    predictions, distances = nearest(database, queries, max(max(ns), depth))
    positives = split.positives(radius)
    recalls = recall_at_n(predictions, positives, ns, database_size=len(database))
    return Evaluation(
        split=split,
        radius=radius,
        recalls=recalls,
        predictions=predictions,
        distances=distances,
        positives=positives,
        descriptor_dim=int(database.shape[1]),
        embed_seconds=embedded - start,
        search_seconds=time.perf_counter() - embedded,
        database_descriptors=database,
        query_descriptors=queries,
    )


def checked_descriptors(descriptors: Any, images: Any) -> np.ndarray:
    descriptors = np.asarray(descriptors, dtype=np.float32)
    if descriptors.ndim != 2 or len(descriptors) != len(images):
        raise EdgeVPRError(
            f"the model returned descriptors of shape {descriptors.shape} for {len(images)} images"
        )
    return descriptors


def load_embedder(
    model_path: str | os.PathLike[str],
    batch_size: int = EVAL_BATCH,
    size: tuple[int, int] | None = None,
    threads: int | None = None,
) -> Embedder:
    """What embeds images with ``model_path``, as its format says: a checkpoint through
    PyTorch, an exported model (ONNX, TensorRT engine) through the torch-free runtime.
    ``threads``: CPU threads for inference (default: the library's own choice); ``size``:
    the input of an official MixVPR checkpoint with a non-square grid."""
    if threads is not None and threads < 1:
        raise EdgeVPRError(f"threads must be >= 1, got {threads}")
    path = Path(model_path)
    if not path.exists():
        raise EdgeVPRError(f"model {path} does not exist")
    fmt = format_of(path)
    if fmt.runs_on == RUNTIME:
        from edgevpr.runtime.embedder import Embedder as RuntimeEmbedder

        return RuntimeEmbedder(path, batch_size=batch_size, threads=threads)
    if fmt.runs_on == PYTORCH:
        torch_embedder = fmt.load("edgevpr.eval.torch_embedder:TorchEmbedder")
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        return torch_embedder.from_checkpoint(path, batch_size=batch_size, size=size)
    raise EdgeVPRError(f"{path.name} is a {fmt.label}, not a model")
