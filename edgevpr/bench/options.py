"""What ``edgevpr bench`` is asked to do: one dataclass, whose defaults the command's options
show."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgevpr.bench.artifacts import default_cache_dir
from edgevpr.bench.timing import TimingConfig
from edgevpr.runtime.placemap.kinds import HNSWLIB, INDEX_KINDS

GRAPH = INDEX_KINDS[HNSWLIB].defaults  # M and ef_construction of the HNSW kinds

DEFAULT_MODEL = "mixvpr_lite0_512"
STAGES = ("embed", "search", "pipeline")


@dataclass
class BenchOptions:
    models: list[str] = field(default_factory=list)
    backends: list[str] | None = None  # None: every backend (unavailable ones are skipped)
    batches: tuple[int, ...] = (1, 8)
    warmup: int = 3
    seconds: float = 2.0
    min_iters: int = 5
    map_sizes: tuple[int, ...] = (10_000, 100_000)
    efs: tuple[int, ...] = (32, 64, 128, 256)
    M: int = GRAPH["M"]
    ef_construction: int = GRAPH["ef_construction"]
    e2e_ef: int | None = None  # None: the runtime's default ef
    # index specs (see bench.mapsearch.IndexSpec): the map's default kind, and hnswlib's
    # float graph for reference; the first is the one the pipeline queries
    indexes: tuple[str, ...] = ("default", "hnswlib")  # default: what index build makes
    prior_radii: tuple[float, ...] = ()  # geo-prior radii (m) measured for every map
    k: int = 10
    stages: tuple[str, ...] = STAGES
    images: str | None = None
    map_images: int = 512
    threads: int | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    isolate: bool = True

    @property
    def timing(self) -> TimingConfig:
        return TimingConfig(warmup=self.warmup, seconds=self.seconds, min_iters=self.min_iters)

    @property
    def index_specs(self) -> list:
        from edgevpr.bench.mapsearch import IndexSpec

        return [IndexSpec.parse(text) for text in self.indexes]

    def embed_batches(self) -> tuple[int, ...]:
        """Batch 1 is always measured when the pipeline table is wanted: it needs it."""
        if "pipeline" in self.stages and 1 not in self.batches:
            return (1, *self.batches)
        return self.batches
