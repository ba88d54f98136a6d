"""Building a map from many images: embedding that survives an interruption (on this machine
or on a Ray cluster), then the map itself, compressed as asked.

Embedding is checkpointed in a work folder beside the output (``<out>.partial``): chunks of
descriptors, each written atomically with the indices of the images it holds. A rerun of
the same build (same model, same image list) embeds only the images no chunk holds yet;
a finished build removes the folder. The map is then built from the chunks: the projection
(if any) fitted on a sample of them, the index trained (faiss) and filled chunk by chunk.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edgevpr.errors import EdgeVPRError
from edgevpr.files import write_bytes_atomic, write_text_atomic
from edgevpr.runtime.embedder import Embedder
from edgevpr.runtime.placemap import PlaceMap
from edgevpr.runtime.placemap.core import DEFAULT_INDEX
from edgevpr.runtime.placemap.place_record import record_for
from edgevpr.runtime.placemap.projection import PCA, WHITENED, Projection

CHUNK_IMAGES = 1024
TRAIN_ROWS = 100_000  # descriptors the projection and a faiss index are fitted on, at most
MANIFEST = "manifest.json"
PARTIAL_SUFFIX = ".partial"
Skipped = Callable[[Path, EdgeVPRError], None]


@dataclass(frozen=True)
class MapOptions:
    """How the map is built (``PlaceMap.create``'s options, and the projection's)."""

    index: str = DEFAULT_INDEX
    storage: str | None = None
    pca: int | None = None
    whiten: bool = False
    fit_on: np.ndarray | None = field(default=None, repr=False)  # descriptors to fit PCA on
    store: str = "f32"
    rerank: int = 32
    M: int = 16
    ef_construction: int = 200
    ef: int = 128
    params: dict[str, int] = field(default_factory=dict)


class EmbedCheckpoint:
    """The work folder of one build: which images are embedded (or unreadable) so far."""

    def __init__(self, folder: Path, fingerprint: str, paths: list[Path]) -> None:
        self.folder = folder
        self.paths = paths
        identity = {"fingerprint": fingerprint, "images": _list_hash(paths), "count": len(paths)}
        manifest = folder / MANIFEST
        if folder.exists() and (not manifest.is_file() or _read_json(manifest) != identity):
            raise EdgeVPRError(
                f"{folder} holds an interrupted build of other images or another model; "
                "remove it (or build with --fresh) to start over"
            )
        folder.mkdir(parents=True, exist_ok=True)
        if not manifest.is_file():
            write_text_atomic(manifest, json.dumps(identity))
        self._done = np.zeros(len(paths), bool)
        for chunk in self.chunks():
            try:
                with np.load(chunk) as data:
                    indices = data["indices"]
            except (OSError, ValueError, KeyError) as exc:
                raise EdgeVPRError(f"{chunk} is unreadable ({exc}); build with --fresh") from None
            if indices.size and (indices.min() < 0 or indices.max() >= len(paths)):
                raise EdgeVPRError(f"{chunk} does not belong to this build; build with --fresh")
            self._done[indices] = True

    def chunks(self) -> list[Path]:
        return sorted(self.folder.glob("chunk-*.npz"))

    @property
    def done(self) -> int:
        return int(self._done.sum())

    def pending(self) -> np.ndarray:
        return np.flatnonzero(~self._done)

    def write(self, indices: np.ndarray, descriptors: np.ndarray, ok: np.ndarray) -> None:
        """One chunk: descriptors of ``indices`` (rows where ``ok`` is False: unreadable)."""
        buffer = io.BytesIO()
        np.savez(buffer, indices=indices.astype(np.int64), ok=ok.astype(bool),
                 descriptors=descriptors.astype(np.float32))  # fmt: skip
        name = f"chunk-{int(indices.min()):010d}-{len(self.chunks()):06d}.npz"
        write_bytes_atomic(self.folder / name, buffer.getvalue())
        self._done[indices] = True

    def read(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(indices, descriptors) of the embedded images, chunk by chunk (unreadable ones
        left out)."""
        for chunk in self.chunks():
            with np.load(chunk) as data:
                ok = data["ok"]
                yield data["indices"][ok], data["descriptors"][ok]

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _list_hash(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.resolve()).encode() + b"\0")
    return digest.hexdigest()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def partial_folder(out: Path) -> Path:
    return out.with_name(out.name + PARTIAL_SUFFIX)


def remove_partial(folder: Path) -> None:
    """Remove an interrupted build's folder (only one that is one: it has a manifest)."""
    if not (folder / MANIFEST).is_file():
        raise EdgeVPRError(f"{folder} is not an interrupted build's folder; not removed")
    shutil.rmtree(folder)


# ------------------------------------------------------------------ embedding
def embed_here(
    embedder: Embedder, checkpoint: EmbedCheckpoint, progress: bool, skipped: Skipped | None
) -> None:
    """Embed the pending images on this machine, a checkpointed chunk at a time, under one
    progress bar (images/s)."""
    pending = checkpoint.pending()
    with progress_bar(len(checkpoint.paths), checkpoint.done, progress) as bar:
        for start in range(0, len(pending), CHUNK_IMAGES):
            indices = pending[start : start + CHUNK_IMAGES]
            paths = [checkpoint.paths[i] for i in indices]
            row_of = {p: r for r, p in enumerate(paths)}
            descriptors = np.zeros((len(indices), embedder.descriptor_dim), np.float32)
            ok = np.zeros(len(indices), bool)
            for kept, batch in embedder.iter_paths(paths, on_unreadable=skipped):
                rows = [row_of[p] for p in kept]
                descriptors[rows], ok[rows] = batch, True
                bar.update(len(kept))
            checkpoint.write(indices, descriptors, ok)


def progress_bar(total: int, done: int, shown: bool) -> tqdm:
    return tqdm(total=total, initial=done, unit="img", disable=not shown, file=sys.stderr,
                desc="embedding", smoothing=0.1)  # fmt: skip


# ------------------------------------------------------------------ the map
def build_from_checkpoint(
    checkpoint: EmbedCheckpoint, embedder: Embedder, options: MapOptions
) -> PlaceMap:
    """The map of every embedded image, compressed as ``options`` say: the projection fitted
    and the index trained on a sample of the descriptors, then filled chunk by chunk."""
    sample = _sample(checkpoint, TRAIN_ROWS)
    projection = None
    if options.pca:
        fit_on = options.fit_on if options.fit_on is not None else sample
        projection = Projection.fit(fit_on, options.pca, WHITENED if options.whiten else PCA)
    placemap = PlaceMap.create(
        embedder.descriptor_dim, embedder.fingerprint, M=options.M,
        ef_construction=options.ef_construction, ef=options.ef,
        capacity=max(checkpoint.done, 1), model=embedder.model_summary(), index=options.index,
        storage=options.storage, projection=projection, store=options.store,
        rerank=options.rerank, params=options.params,
    )  # fmt: skip
    placemap.train(sample)
    del sample
    source = embedder.model_summary()
    for indices, descriptors in _in_order(checkpoint):
        records = [record_for(checkpoint.paths[i]) for i in indices.tolist()]
        placemap.add(descriptors, records, source=source)
    return placemap


def _in_order(checkpoint: EmbedCheckpoint) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunks in the order of their first image, each sorted within (one chunk in memory
    at a time)."""
    for indices, descriptors in checkpoint.read():
        order = np.argsort(indices)
        yield indices[order], descriptors[order]


def _sample(checkpoint: EmbedCheckpoint, rows: int) -> np.ndarray:
    """The first ``rows`` descriptors (chunks are in image order, so this spans the list's
    start; images are usually listed by route or area, not by content)."""
    parts, total = [], 0
    for _, descriptors in checkpoint.read():
        parts.append(descriptors)
        total += len(descriptors)
        if total >= rows:
            break
    if not parts:
        raise EdgeVPRError("no image could be embedded")
    return np.concatenate(parts)[:rows]
