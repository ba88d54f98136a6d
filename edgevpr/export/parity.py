"""The parity gate: does an exported artifact find the same places as its checkpoint?

The reference is the checkpoint in PyTorch FP32 on the CPU (no TF32); the artifact is run
through the runtime's ``Embedder``, exactly as it will run on the robot. Both see the same
images through the same preprocessing. Compared per descriptor (cosine min and mean, max
absolute error) and, where the images carry coordinates, at the retrieval level: how often
the artifact's top-1 database match is the reference's, how much of the top 5 they share,
and Recall@1/5 of both.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.images import list_images, read_image
from edgevpr.data.layout import (
    DATABASE,
    DEFAULT_RADIUS_M,
    QUERIES,
    available_splits,
    find_within,
    read_image_set,
)
from edgevpr.eval.recall import nearest, recall_at_n

RECALL_NS = (1, 5)
DEFAULT_PARITY_IMAGES = 256


@dataclass
class ParityData:
    """Images for the gate; with coordinates, the first ``database`` ones are the map."""

    source: str
    images: list[np.ndarray]
    names: list[str]
    database: int = 0
    positives: list[np.ndarray] | None = None

    @property
    def has_retrieval(self) -> bool:
        return self.positives is not None and self.database > 0

    @property
    def queries(self) -> int:
        return len(self.images) - self.database if self.has_retrieval else 0

    def map_images(self) -> list[np.ndarray]:
        """The database images (all images where there is no database): INT8 calibrates on
        the map a robot will be compared against."""
        return self.images[: self.database] if self.has_retrieval else self.images

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "images": len(self.images),
            "database": self.database,
            "queries": self.queries,
            "retrieval": self.has_retrieval,
        }


def evenly(count: int, keep: int) -> np.ndarray:
    """``keep`` indices spread evenly over ``range(count)`` (all of them if fewer)."""
    if keep >= count:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, keep).round().astype(np.int64))


def find_split_folder(path: Path) -> Path | None:
    """A folder holding database/ and queries/: ``path`` itself, or a split of a dataset
    in the evaluation layout (``test`` preferred)."""
    if (path / DATABASE).is_dir() and (path / QUERIES).is_dir():
        return path
    splits = available_splits(path)
    if splits:
        return path / "images" / ("test" if "test" in splits else splits[0])
    return None


def load_parity_data(
    path: str | os.PathLike[str], max_images: int = DEFAULT_PARITY_IMAGES
) -> ParityData:
    """Read parity images: a dataset in the evaluation layout (or one split of it), with
    retrieval metrics, or any folder of images, with descriptor metrics only."""
    path = Path(path)
    if not path.is_dir():
        raise EdgeVPRError(f"parity data {path} does not exist or is not a folder")
    if max_images < 2:
        raise EdgeVPRError(f"--parity-images must be at least 2, got {max_images}")
    folder = find_split_folder(path)
    if folder is None:
        files = list_images(path)
        if not files:
            raise EdgeVPRError(
                f"no images in {path}: give a folder of images or a dataset in the "
                "evaluation layout (<set>/images/<split>/{database,queries})"
            )
        files = [files[i] for i in evenly(len(files), max_images)]
        return ParityData(str(path), [read_image(p) for p in files], [p.name for p in files])
    database, queries = read_image_set(folder / DATABASE), read_image_set(folder / QUERIES)
    keep_db = max(1, max_images // 2)
    database = database.subset(evenly(len(database), keep_db))
    queries = queries.subset(evenly(len(queries), max_images - len(database)))
    paths = [*database.paths, *queries.paths]
    positives = find_within(database.utm, queries.utm, DEFAULT_RADIUS_M)
    return ParityData(
        source=str(folder),
        images=[read_image(p) for p in paths],
        names=[p.name for p in paths],
        database=len(database),
        positives=positives,
    )


@dataclass
class ParityMetrics:
    images: int
    cosine_min: float
    cosine_mean: float
    max_abs: float
    top1_agreement: float | None = None  # percent of queries
    top5_overlap: float | None = None  # percent, mean over queries
    recall_reference: dict[int, float] = field(default_factory=dict)
    recall_artifact: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["recall_reference"] = {f"R@{n}": v for n, v in self.recall_reference.items()}
        data["recall_artifact"] = {f"R@{n}": v for n, v in self.recall_artifact.items()}
        return data


def cosines(reference: np.ndarray, artifact: np.ndarray) -> np.ndarray:
    num = np.sum(reference * artifact, axis=1, dtype=np.float64)
    den = np.linalg.norm(reference, axis=1) * np.linalg.norm(artifact, axis=1)
    return num / np.maximum(den, 1e-12)


def compare(reference: np.ndarray, artifact: np.ndarray, data: ParityData) -> ParityMetrics:
    """Per-descriptor and (with coordinates) retrieval agreement of two descriptor sets."""
    reference = np.asarray(reference, dtype=np.float32)
    artifact = np.asarray(artifact, dtype=np.float32)
    if reference.shape != artifact.shape:
        raise EdgeVPRError(
            f"the artifact gives descriptors of shape {artifact.shape}, "
            f"the checkpoint {reference.shape}"
        )
    if not np.isfinite(artifact).all():
        raise EdgeVPRError("the artifact gives NaN or infinite descriptors")
    cos = cosines(reference, artifact)
    metrics = ParityMetrics(
        images=len(reference),
        cosine_min=float(cos.min()),
        cosine_mean=float(cos.mean()),
        max_abs=float(np.abs(reference - artifact).max()),
    )
    if data.has_retrieval and data.positives is not None:
        n = data.database
        k = min(max(RECALL_NS), n)
        ref_top, _ = nearest(reference[:n], reference[n:], k)
        art_top, _ = nearest(artifact[:n], artifact[n:], k)
        metrics.top1_agreement = float(100.0 * np.mean(ref_top[:, 0] == art_top[:, 0]))
        overlap = [len(set(a) & set(b)) / k for a, b in zip(ref_top, art_top, strict=True)]
        metrics.top5_overlap = float(100.0 * np.mean(overlap))
        metrics.recall_reference = recall_at_n(ref_top, data.positives, RECALL_NS, n).values
        metrics.recall_artifact = recall_at_n(art_top, data.positives, RECALL_NS, n).values
    return metrics


@dataclass(frozen=True)
class Gate:
    """Thresholds an artifact must meet; ``None`` skips a check."""

    min_cosine: float
    max_abs: float | None = None
    # Points of Recall@1 the artifact may lose. One-sided: an artifact that finds more
    # places is not failed for it (top-1 agreement shows how much it differs).
    max_recall1_drop: float | None = None

    def __post_init__(self) -> None:
        # NaN compares false with everything: a gate with one would pass anything
        if not -1.0 <= self.min_cosine <= 1.0:
            raise EdgeVPRError(f"gate cosine minimum {self.min_cosine} is not in [-1, 1]")
        if self.max_abs is not None and not 0.0 <= self.max_abs < math.inf:
            raise EdgeVPRError(f"gate maximum absolute error {self.max_abs} is not >= 0")
        if self.max_recall1_drop is not None and not 0.0 <= self.max_recall1_drop <= 100.0:
            raise EdgeVPRError(
                f"gate Recall@1 drop {self.max_recall1_drop} is not in [0, 100] points"
            )

    def describe(self) -> str:
        parts = [f"cos>={self.min_cosine:g}"]
        if self.max_abs is not None:
            parts.append(f"abs<={self.max_abs:g}")
        if self.max_recall1_drop is not None:
            parts.append(f"R@1-{self.max_recall1_drop:g}")
        return " ".join(parts)

    def failures(self, metrics: ParityMetrics) -> list[str]:
        """Each failed check as 'what measured vs what allowed'; empty when it passes."""
        failed = []
        if metrics.cosine_min < self.min_cosine:
            failed.append(f"cosine min {metrics.cosine_min:.6f} < {self.min_cosine:g}")
        if self.max_abs is not None and metrics.max_abs > self.max_abs:
            failed.append(f"max abs error {metrics.max_abs:.3g} > {self.max_abs:g}")
        if self.max_recall1_drop is not None and metrics.recall_reference:
            ref, art = metrics.recall_reference[1], metrics.recall_artifact[1]
            if ref - art > self.max_recall1_drop:
                failed.append(
                    f"Recall@1 {art:.1f} vs reference {ref:.1f} "
                    f"(at most {self.max_recall1_drop:g} points lower allowed)"
                )
        return failed


DEFAULT_GATES = {
    "fp32": Gate(min_cosine=0.99999, max_abs=1e-4),
    "fp16": Gate(min_cosine=0.99, max_recall1_drop=1.0),
    "bf16": Gate(min_cosine=0.99, max_recall1_drop=1.0),  # gated like FP16
    "int8": Gate(min_cosine=0.99, max_recall1_drop=1.0),
}


def reference_descriptors(model: Any, data: ParityData) -> np.ndarray:
    """The checkpoint's descriptors: PyTorch FP32 on the CPU, the definition of correct."""
    from edgevpr.eval.torch_embedder import TorchEmbedder

    return TorchEmbedder(model, batch_size=16, device="cpu").embed_images(data.images)


def artifact_descriptors(
    path: str | os.PathLike[str], data: ParityData, providers: list[str] | None = None
) -> np.ndarray:
    """The artifact's descriptors, computed by the runtime that will ship it."""
    from edgevpr.runtime.embedder import Embedder

    with Embedder(path, providers=providers) as embedder:  # a GPU engine's memory freed after
        return np.asarray(embedder.embed_images(data.images), dtype=np.float32)
