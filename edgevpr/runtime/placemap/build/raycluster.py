"""Embedding a collection too large for one machine on a Ray cluster: Ray Data batch
inference with the runtime's own ``Embedder`` in each worker (one CPU each), so the
descriptors are those a single process gives. Results stream back in any order and are
checkpointed as they come, like a local build's (an interrupted build resumes).

Needs the ``cluster`` extra (``pip install 'edgevpr[cluster]'``) on the driver and on every
node, with edgevpr and the model file reachable there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.extras import install_hint
from edgevpr.runtime.embedder import Embedder
from edgevpr.runtime.placemap.build.resumable import (
    CHUNK_IMAGES,
    EmbedCheckpoint,
    Skipped,
    progress_bar,
)

LOCAL = "local"


class RayEmbedder:
    """What each Ray worker runs: a batch of {index, path} rows -> {index, descriptor, ok}."""

    def __init__(self, model: str, batch_size: int) -> None:
        self.embedder = Embedder(model, threads=1, batch_size=batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [Path(p) for p in batch["path"].tolist()]
        row_of = {p: r for r, p in enumerate(paths)}
        descriptors = np.zeros((len(paths), self.embedder.descriptor_dim), np.float32)
        ok = np.zeros(len(paths), bool)
        for kept, found in self.embedder.iter_paths(paths, on_unreadable=lambda *_: None):
            rows = [row_of[p] for p in kept]
            descriptors[rows], ok[rows] = found, True
        return {"index": batch["index"], "descriptor": descriptors, "ok": ok}


def embed_on_ray(
    model: Path,
    checkpoint: EmbedCheckpoint,
    address: str,
    workers: int | None,
    batch_size: int,
    progress: bool,
    skipped: Skipped | None,
) -> None:
    """Embed the checkpoint's pending images on the Ray cluster at ``address`` ("local":
    start one on this machine), ``workers`` at a time (default: one per CPU)."""
    try:
        import ray
    except ImportError:
        raise EdgeVPRError(f"--ray needs Ray: {install_hint('ray')}") from None
    pending = checkpoint.pending()
    if not len(pending):
        return
    ray.init(address=None if address == LOCAL else address, ignore_reinit_error=True,
             include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)  # fmt: skip
    workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    rows = [{"index": int(i), "path": str(checkpoint.paths[i])} for i in pending]
    made = {"model": str(model.resolve()), "batch_size": batch_size}
    results = ray.data.from_items(rows).map_batches(
        RayEmbedder, fn_constructor_kwargs=made, batch_size=batch_size, concurrency=workers,
        num_cpus=1, batch_format="numpy",
    )  # fmt: skip
    parts: list[dict[str, np.ndarray]] = []
    with progress_bar(len(checkpoint.paths), checkpoint.done, progress) as bar:
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            _report_unreadable(checkpoint, batch, skipped)
            parts.append(batch)
            bar.update(len(batch["index"]))
            if sum(len(p["index"]) for p in parts) >= CHUNK_IMAGES:
                _write(checkpoint, parts)
                parts = []
    if parts:
        _write(checkpoint, parts)


def _report_unreadable(
    checkpoint: EmbedCheckpoint, batch: dict[str, np.ndarray], skipped: Skipped | None
) -> None:
    for index in batch["index"][~batch["ok"]].tolist():
        path = checkpoint.paths[index]
        if skipped is None:
            raise EdgeVPRError(f"image {path} could not be read")
        skipped(path, EdgeVPRError(f"image {path} could not be read"))


def _write(checkpoint: EmbedCheckpoint, parts: list[dict[str, np.ndarray]]) -> None:
    checkpoint.write(
        np.concatenate([p["index"] for p in parts]),
        np.concatenate([p["descriptor"] for p in parts]),
        np.concatenate([p["ok"] for p in parts]),
    )
