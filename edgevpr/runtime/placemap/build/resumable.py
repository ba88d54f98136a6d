"""Building a map from many images: embedding that survives an interruption (on this machine
or on a Ray cluster), then the map itself, compressed as asked.

Embedding is checkpointed in a work folder beside the output (``<out>.partial``): chunks of
descriptors, each written atomically with the indices of the images it holds. A rerun of
the same build (same model, same image list) embeds only the images no chunk holds yet;
a finished build removes the folder. The map is then built from the chunks: the projection
(if any) fitted on a sample of them, the index trained (faiss) and filled chunk by chunk.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from edgevpr.core.errors import EdgeVPRError, first_line
from edgevpr.core.files import remove_tree, write_bytes_atomic, write_text_atomic
from edgevpr.runtime.embedder import Embedder
from edgevpr.runtime.placemap import PlaceMap
from edgevpr.runtime.placemap.build.defaults import AUTO, default_projection
from edgevpr.runtime.placemap.core import DEFAULT_INDEX
from edgevpr.runtime.placemap.kinds import TRAIN_ROWS
from edgevpr.runtime.placemap.place_record import PlaceRecord, record_for
from edgevpr.runtime.placemap.projection import PCA, WHITENED, Projection

CHUNK_IMAGES = 1024
MANIFEST = "manifest.json"
CHUNK_GLOB = "chunk-*.npz"
PARTIAL_SUFFIX = ".partial"
Skipped = Callable[[Path, EdgeVPRError], None]


@dataclass(frozen=True)
class MapOptions:
    """How the map is built (``PlaceMap.create``'s options, and the projection's)."""

    index: str = DEFAULT_INDEX
    storage: str | None = None
    pca: int | str | None = AUTO  # dimensions, None: no projection, AUTO: the default rule
    whiten: bool = False
    fit_on: np.ndarray | None = field(default=None, repr=False)  # descriptors to fit PCA on
    store: str = "f32"
    rerank: int = 32
    params: dict[str, int] = field(default_factory=dict)  # the index kind's own


class EmbedCheckpoint:
    """The work folder of one build: which images are embedded (or unreadable) so far.

    Each chunk file is named by the sha256 of its contents and checked when read: its
    arrays' names, types and shapes, indices in range and held by no other chunk,
    descriptors finite. A chunk that fails is refused by name (``--fresh`` starts over).
    The caller holds the output's lock (``files.exclusive``) for the folder's lifetime.
    """

    def __init__(self, folder: Path, fingerprint: str, paths: list[Path], dim: int) -> None:
        self.folder = folder
        self.paths = paths
        self.dim = dim
        identity = {"fingerprint": fingerprint, "images": _list_hash(paths), "count": len(paths)}
        claim_work_folder(folder, identity, "other images or another model")
        self._done = np.zeros(len(paths), bool)
        self._embedded = 0
        for chunk in self.chunks():
            indices, ok, _ = self._checked(chunk)
            self._done[indices] = True
            self._embedded += int(ok.sum())

    def chunks(self) -> list[Path]:
        return sorted(self.folder.glob(CHUNK_GLOB))

    @property
    def done(self) -> int:
        return int(self._done.sum())

    @property
    def embedded(self) -> int:
        """Images embedded (readable ones): the places the map will hold."""
        return self._embedded

    def pending(self) -> np.ndarray:
        return np.flatnonzero(~self._done)

    def write(self, indices: np.ndarray, descriptors: np.ndarray, ok: np.ndarray) -> None:
        """One chunk: descriptors of ``indices`` (rows where ``ok`` is False: unreadable)."""
        descriptors = descriptors.astype(np.float32)
        if not np.isfinite(descriptors[ok]).all():
            bad = indices[ok][~np.isfinite(descriptors[ok]).all(axis=1)]
            raise EdgeVPRError(f"the model gave NaN or infinity for {self.paths[int(bad[0])]}")
        write_chunk(self.folder, int(indices.min()), {
            "indices": indices.astype(np.int64), "ok": ok.astype(bool),
            "descriptors": descriptors})  # fmt: skip
        self._done[indices] = True
        self._embedded += int(ok.sum())

    def read(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(indices, descriptors) of the embedded images, chunk by chunk (unreadable ones
        left out), each chunk checked again as it is read."""
        seen = np.zeros(len(self.paths), bool)
        for chunk in self.chunks():
            indices, ok, descriptors = self._checked(chunk, seen)
            yield indices[ok], descriptors[ok]

    def _checked(
        self, chunk: Path, seen: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A chunk's (indices, ok, descriptors), everything checked; ``seen`` marks the
        images earlier chunks held (the constructor's own marks otherwise)."""
        refuse = f"{chunk} is not a chunk of this build"
        arrays = read_chunk(chunk, {"indices": np.int64, "ok": np.bool_,
                                    "descriptors": np.float32})  # fmt: skip
        indices, ok, descriptors = arrays["indices"], arrays["ok"], arrays["descriptors"]
        count = len(indices)
        if ok.shape != (count,) or descriptors.shape != (count, self.dim):
            raise EdgeVPRError(f"{refuse} (its arrays have other shapes)")
        marks = self._done if seen is None else seen
        if count and (indices.min() < 0 or indices.max() >= len(self.paths)
                      or len(np.unique(indices)) != count or marks[indices].any()):  # fmt: skip
            raise EdgeVPRError(f"{refuse} (its images are out of range or in another chunk); "
                               "build with --fresh")  # fmt: skip
        if not np.isfinite(descriptors[ok]).all():
            raise EdgeVPRError(f"{chunk} holds NaN or infinite descriptors; build with --fresh")
        if seen is not None:
            seen[indices] = True
        return indices, ok, descriptors

    def places(self) -> Iterator[tuple[np.ndarray, list[PlaceRecord]]]:
        """(descriptors, records) chunk by chunk, in the order of the images' list."""
        for indices, descriptors in self.read():
            order = np.argsort(indices)
            yield descriptors[order], [record_for(self.paths[i]) for i in indices[order].tolist()]

    def remove(self) -> None:
        remove_tree(self.folder)


def write_chunk(folder: Path, first: int, arrays: dict[str, np.ndarray]) -> None:
    """One chunk file of a build's work folder, named by its first item and the sha256 of
    its contents (checked when it is read back)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    data = buffer.getvalue()
    write_bytes_atomic(folder / f"chunk-{first:010d}-{hashlib.sha256(data).hexdigest()}.npz",
                       data)  # fmt: skip


def read_chunk(chunk: Path, expected: dict[str, type]) -> dict[str, np.ndarray]:
    """A chunk's arrays, refused by name unless it is a plain file whose contents still
    have the sha256 of its name and exactly the ``expected`` arrays of those types."""
    refuse = f"{chunk} is not a chunk of this build"
    if chunk.is_symlink() or not chunk.is_file():
        raise EdgeVPRError(f"{refuse} (not a plain file); build with --fresh")
    data = chunk.read_bytes()
    if hashlib.sha256(data).hexdigest() != chunk.stem.rsplit("-", 1)[-1]:
        raise EdgeVPRError(f"{chunk} changed after it was written; build with --fresh")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as found:
            if sorted(found.files) != sorted(expected):
                raise ValueError("other arrays")
            arrays = {name: found[name] for name in expected}
    except (OSError, ValueError, EOFError) as exc:
        raise EdgeVPRError(f"{chunk} is unreadable ({first_line(exc)}); build with --fresh"
                           ) from None  # fmt: skip
    if any(arrays[name].dtype != np.dtype(kind) for name, kind in expected.items()):
        raise EdgeVPRError(f"{refuse} (its arrays have other types)")
    return arrays


def _list_hash(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.resolve()).encode() + b"\0")
    return digest.hexdigest()


def claim_work_folder(folder: Path, identity: dict[str, Any], other: str) -> None:
    """Make ``folder`` the work folder of the build ``identity`` says (its manifest), or
    resume it; one another build left (``other``, as the error names it) is refused."""
    manifest = folder / MANIFEST
    if folder.exists() and (not manifest.is_file() or _read_json(manifest) != identity):
        raise EdgeVPRError(f"{folder} holds an interrupted build of {other}; remove it (or "
                           "build with --fresh) to start over")  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    if not manifest.is_file():
        write_text_atomic(manifest, json.dumps(identity))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def partial_folder(out: Path) -> Path:
    return out.with_name(out.name + PARTIAL_SUFFIX)


def remove_partial(folder: Path) -> None:
    """Remove an interrupted build's folder: only one that holds nothing but what a build
    writes (its manifest, chunks and their temporary files), whatever state it was left in."""
    if folder.is_symlink() or not folder.is_dir():
        raise EdgeVPRError(f"{folder} is not an interrupted build's folder; not removed")
    strangers = [p.name for p in folder.iterdir() if not _ours(p)]
    if strangers:
        raise EdgeVPRError(f"{folder} holds files no build writes ({strangers[0]}, ...); "
                           "not removed")  # fmt: skip
    remove_tree(folder)


def _ours(path: Path) -> bool:
    """A file a build writes in its folder (atomic writes leave ``.<name>.*.tmp``)."""
    name = path.name
    return path.is_file() and not path.is_symlink() and (
        name == MANIFEST or fnmatch.fnmatch(name, CHUNK_GLOB)
        or (name.startswith(".") and name.endswith(".tmp"))
    )  # fmt: skip


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
class EmbeddedPlaces(Protocol):
    """What a map is built from: a work folder of embedded places (``EmbedCheckpoint`` for
    a list of images, ``DriveCheckpoint`` for a recorded drive)."""

    folder: Path

    @property
    def embedded(self) -> int: ...

    def places(self) -> Iterator[tuple[np.ndarray, list[PlaceRecord]]]: ...

    def remove(self) -> None: ...


def build_from_checkpoint(
    checkpoint: EmbeddedPlaces, embedder: Embedder, options: MapOptions
) -> PlaceMap:
    """The map of every embedded place, compressed as ``options`` say: the projection
    fitted and the index trained on a sample of the descriptors, then filled chunk by
    chunk."""
    sample = _sample(checkpoint, TRAIN_ROWS)
    projection = None
    dims = options.pca
    if dims == AUTO:
        dims = default_projection(embedder.descriptor_dim, checkpoint.embedded)
    if dims:
        fit_on = options.fit_on if options.fit_on is not None else sample
        projection = Projection.fit(fit_on, int(dims), WHITENED if options.whiten else PCA)
    placemap = PlaceMap.create(
        embedder.descriptor_dim, embedder.fingerprint, capacity=max(checkpoint.embedded, 1),
        model=embedder.model_summary(), index=options.index, storage=options.storage,
        projection=projection, store=options.store, rerank=options.rerank, **options.params,
    )  # fmt: skip
    placemap.train(sample)
    del sample
    source = embedder.model_summary()
    for descriptors, records in checkpoint.places():
        placemap.add(descriptors, records, source=source)
    if len(placemap) != checkpoint.embedded:  # never a map of fewer places than embedded
        raise EdgeVPRError(
            f"the map holds {len(placemap)} places where {checkpoint.embedded} images were "
            f"embedded; nothing written (see {checkpoint.folder})"
        )
    return placemap


def _sample(checkpoint: EmbeddedPlaces, rows: int) -> np.ndarray:
    """The first ``rows`` descriptors (chunks are in image order, so this spans the list's
    start; images are usually listed by route or area, not by content)."""
    parts, total = [], 0
    for descriptors, _ in checkpoint.places():
        parts.append(descriptors)
        total += len(descriptors)
        if total >= rows:
            break
    if not parts:
        raise EdgeVPRError("no image could be embedded")
    return np.concatenate(parts)[:rows]
