"""The search table's maps: one per index spec (kind, storage, projection, descriptor store),
grown from real descriptors with positions along a city-sized route, built a chunk at a time
(a million 4096-d descriptors never sit in memory at once), and measured against exact
float search, with and without a geo prior.

An index spec is ``KIND[:STORAGE][:pcaD|:pcawD][:store-f16|:store-none]``, for example
``hnswlib`` (today's float map), ``usearch:i8:pca256`` or ``faiss-ivf:sq8:pca256:store-f16``.
"""

from __future__ import annotations

import gc
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevpr.bench.descriptors import (
    agreement,
    content_key,
    exact_search,
    grow_chunks,
    route_xy,
)
from edgevpr.bench.report import STAGE_SEARCH, Row
from edgevpr.bench.stages import timed_row
from edgevpr.bench.timing import PeakMemory, TimingConfig, measure, read_status_kib, reset_peak_rss
from edgevpr.core.errors import EdgeVPRError
from edgevpr.runtime.placemap.search import DEFAULT_RERANK

MAP_SEED = 1
QUERY_SEED = 2
BUILD_CHUNK = 65536
DEFAULT_SPEC = "default"  # --index default: the map `edgevpr index build` makes by default
EXACT_TIMED_BYTES = 2 << 30  # exact search is timed where the float map fits in this
FIT_ROWS = 20_000
PRIOR_SEED = 3
MAP_VERSION = 2  # bump when how maps are built changes: cached maps are keyed by it


@dataclass(frozen=True)
class IndexSpec:
    kind: str
    storage: str | None = None
    pca: int | None = None
    whiten: bool = False
    store: str = "f32"
    nlist: int | None = None  # inverted lists (faiss-ivf), where not the kind's default
    rerank: int = DEFAULT_RERANK  # candidates re-ranked by their stored descriptor
    default: bool = False  # what `edgevpr index build` makes with no options

    @classmethod
    def parse(cls, text: str) -> IndexSpec:
        from edgevpr.runtime.placemap.build.resumable import MapOptions
        from edgevpr.runtime.placemap.kinds import index_kind

        if text.strip() == DEFAULT_SPEC:
            made = MapOptions()
            return cls(made.index, store=made.store, rerank=made.rerank, default=True)
        kind, *rest = text.strip().split(":")
        info = index_kind(kind)
        spec = cls(kind)
        for token in rest:
            if token in info.storages:
                spec = _replace(spec, storage=token)
            elif token.startswith("pca") and token.lstrip("pcaw").isdigit():
                whiten = token.startswith("pcaw")
                spec = _replace(spec, pca=int(token.lstrip("pcaw")), whiten=whiten)
            elif token in ("store-f32", "store-f16", "store-none"):
                spec = _replace(spec, store=token.split("-", 1)[1])
            elif token.startswith("nlist") and token[5:].isdigit() and info.own({"nlist": 1}):
                spec = _replace(spec, nlist=int(token[5:]))
            elif token.startswith("rerank") and token[6:].isdigit():
                spec = _replace(spec, rerank=int(token[6:]))
            else:
                raise EdgeVPRError(f"index spec {text!r}: {token!r} is not a storage of "
                                   f"{kind}, pcaD, pcawD, store-f32/f16/none, nlistN or "
                                   "rerankN")  # fmt: skip
        return spec

    def resolved(self, dim: int, places: int) -> IndexSpec:
        """The default spec made concrete for a map of ``places`` x ``dim`` (the projection
        `index build` chooses for them); any other spec as it is."""
        from edgevpr.runtime.placemap.build.defaults import default_projection

        return _replace(self, pca=default_projection(dim, places)) if self.default else self

    @property
    def label(self) -> str:
        from edgevpr.runtime.placemap.kinds import index_kind

        if self.default:
            return f"{DEFAULT_SPEC} ({_replace(self, default=False).label})"

        parts = [self.kind, self.storage or index_kind(self.kind).storages[0]]
        if self.pca:
            parts.append(f"{'pcaw' if self.whiten else 'pca'}{self.pca}")
        if self.store != "f32":
            parts.append(f"store-{self.store}")
        if self.nlist:
            parts.append(f"nlist{self.nlist}")
        if self.rerank != DEFAULT_RERANK:
            parts.append(f"rerank{self.rerank}")
        return ":".join(parts)


def _replace(spec: IndexSpec, **changes: object) -> IndexSpec:
    return IndexSpec(**{**spec.__dict__, **changes})


# ------------------------------------------------------------------ the grown map
@dataclass(frozen=True)
class GrownMap:
    """How to regenerate a grown map chunk by chunk, and where its places lie."""

    real: np.ndarray
    size: int
    seed: int

    def chunks(self, chunk: int = BUILD_CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(descriptors, planar positions) a chunk at a time, in id order."""
        for vectors, positions in grow_chunks(self.real, self.size, self.seed, chunk=chunk):
            yield vectors, route_xy(positions, len(self.real), self.size)


@dataclass
class Truth:
    """Exact float answers: top-k without a prior, and within each prior's circle."""

    ids: np.ndarray
    sims: np.ndarray
    centres: np.ndarray  # (queries, 2): where each query's prior is centred
    within: dict[float, tuple[np.ndarray, np.ndarray]]  # radius -> (ids, sims)


def exact_truth(grown: GrownMap, queries: np.ndarray, k: int, radii: tuple[float, ...]) -> Truth:
    """Two passes over the grown map: exact top-k, then (priors centred near each query's
    best place, off by up to half the radius) exact top-k inside each circle."""
    best = _Running(len(queries), k)
    xy_of_best = np.zeros((len(queries), 2))
    for vectors, _, offset in _with_offsets(grown):
        best.update(queries @ vectors.T, offset)
    ids, sims = best.result()
    rng = np.random.default_rng(PRIOR_SEED)
    centres: dict[float, np.ndarray] = {}
    for vectors, xy, offset in _with_offsets(grown):
        hit = (ids[:, 0] >= offset) & (ids[:, 0] < offset + len(vectors))
        xy_of_best[hit] = xy[ids[hit, 0] - offset]
    within = {}
    for radius in radii:
        angle = rng.uniform(0, 2 * np.pi, len(queries))
        shift = 0.5 * radius * np.sqrt(rng.uniform(0, 1, len(queries)))
        centres[radius] = xy_of_best + np.stack([np.cos(angle), np.sin(angle)], 1) * shift[:, None]
    running = {r: _Running(len(queries), k) for r in radii}
    for vectors, xy, offset in _with_offsets(grown):
        sims_chunk = queries @ vectors.T
        for radius in radii:
            d = np.linalg.norm(xy[None, :, :] - centres[radius][:, None, :], axis=2)
            running[radius].update(np.where(d <= radius, sims_chunk, -np.inf), offset)
    for radius in radii:
        within[radius] = running[radius].result()
    stacked = np.stack([centres[r] for r in radii]) if radii else np.zeros((0, len(queries), 2))
    return Truth(ids, sims, stacked, within)


def _with_offsets(grown: GrownMap) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    offset = 0
    for vectors, xy in grown.chunks():
        yield vectors, xy, offset
        offset += len(vectors)


class _Running:
    """The best k (ids, sims) per row over chunks of columns."""

    def __init__(self, rows: int, k: int) -> None:
        self.k = k
        self.ids = np.full((rows, 0), -1, np.int64)
        self.sims = np.full((rows, 0), -np.inf, np.float32)

    def update(self, sims: np.ndarray, offset: int) -> None:
        k = min(self.k, sims.shape[1])
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        ids = np.concatenate([self.ids, part + offset], axis=1)
        values = np.concatenate([self.sims, np.take_along_axis(sims, part, 1)], axis=1)
        order = np.argsort(-values, axis=1, kind="stable")[:, : self.k]
        self.ids = np.take_along_axis(ids, order, 1)
        self.sims = np.take_along_axis(values, order, 1).astype(np.float32)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, sims); -1 where fewer than k columns were eligible (outside a prior)."""
        return np.where(np.isfinite(self.sims), self.ids, -1), self.sims


# ------------------------------------------------------------------ building
def map_path(
    cache_dir: Path, grown: GrownMap, spec: IndexSpec, fingerprint: str, graph: tuple[int, int]
) -> Path:
    key = content_key(grown.real, size=grown.size, seed=grown.seed, spec=spec.label,
                      fingerprint=fingerprint, graph=graph, version=MAP_VERSION)  # fmt: skip
    return cache_dir / "maps" / f"{grown.size}x{grown.real.shape[1]}-{key}.vprmap"


def build(
    grown: GrownMap, spec: IndexSpec, fingerprint: str, path: Path, graph: tuple[int, int]
) -> float:
    """Build and save the map of ``spec`` (cached beside it with its build time); ``graph``:
    HNSW's M and ef_construction."""
    from edgevpr.runtime.placemap import PlaceMap, PlaceRecord
    from edgevpr.runtime.placemap.projection import PCA, WHITENED, Projection

    info = path.with_suffix(".json")
    if path.is_file() and info.is_file():
        return float(json.loads(info.read_text())["build_s"])
    start = time.perf_counter()
    from edgevpr.runtime.placemap.kinds import TRAIN_ROWS

    # lists set by hand are trained on the first chunk: as many rows as a kind trains on
    chunks = grown.chunks(TRAIN_ROWS if spec.nlist else BUILD_CHUNK)
    first, first_xy = next(chunks)
    projection = None
    if spec.pca:
        kind = WHITENED if spec.whiten else PCA
        projection = Projection.fit(first[:FIT_ROWS], spec.pca, kind)
    from edgevpr.runtime.placemap.kinds import index_kind

    given = {"M": graph[0], "ef_construction": graph[1], "nlist": spec.nlist}
    own = index_kind(spec.kind).own({k: v for k, v in given.items() if v is not None})
    placemap = PlaceMap.create(first.shape[1], fingerprint, capacity=grown.size, index=spec.kind,
                                storage=spec.storage, projection=projection, store=spec.store,
                                rerank=spec.rerank, **own)  # fmt: skip
    for vectors, xy in [(first, first_xy), *chunks]:
        records = [PlaceRecord.checked({"east": float(e), "north": float(n)}) for e, n in xy]
        placemap.add(vectors, records)
        del vectors
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    placemap.save(path)
    del placemap
    gc.collect()
    info.write_text(json.dumps({"build_s": seconds}) + "\n")
    return seconds


# ------------------------------------------------------------------ measuring
@dataclass(frozen=True)
class MeasureJob:
    """One built map, measured in a fresh process (its memory is the map's alone)."""

    path: str
    spec: str
    model: str
    map_size: int
    dim: int
    build_s: float
    queries: str  # .npz: queries, truth ids/sims, prior centres and truths
    breadths: tuple[int, ...]
    prior_breadth: int
    radii: tuple[float, ...]
    k: int
    timing: TimingConfig


def save_truth(path: Path, queries: np.ndarray, truth: Truth) -> None:
    arrays = {"queries": queries, "ids": truth.ids, "sims": truth.sims, "centres": truth.centres}
    for i, (ids, sims) in enumerate(truth.within.values()):
        arrays[f"within_ids_{i}"], arrays[f"within_sims_{i}"] = ids, sims
    np.savez(path, **arrays)


def measure_map(job: MeasureJob) -> list[Row]:
    """Load time and memory, then one query at a time per search breadth (no prior) and per
    prior radius, each scored against exact float search."""
    from edgevpr.core.geo import GeoPrior
    from edgevpr.runtime.placemap import PlaceMap

    data = np.load(job.queries)
    queries = data["queries"]
    reset_peak_rss()
    start = time.perf_counter()
    placemap = PlaceMap.load(job.path)
    load_s = time.perf_counter() - start
    base = dict(stage=STAGE_SEARCH, model=job.model, backend=job.spec, map_size=job.map_size,
                dim=job.dim, k=job.k, build_s=job.build_s, load_s=load_s,
                size_mb=Path(job.path).stat().st_size / 1e6)  # fmt: skip
    cycle = itertools.cycle(range(len(queries))).__next__
    rows = []
    for breadth in job.breadths:
        placemap.set_ef(breadth)
        ids, sims = placemap.search(queries, job.k)
        score = agreement(ids, sims, data["ids"], data["sims"], job.k)
        with PeakMemory() as peak:
            timing = measure(lambda: placemap.search(queries[cycle()][None], job.k), job.timing)
        row = Row(params=f"breadth={breadth}", top1=score.top1, recall_at_k=score.recall_at_k,
                  **base)  # fmt: skip
        rows.append(_with_memory(timed_row(row, timing, peak)))
    placemap.set_ef(job.prior_breadth)
    for i, radius in enumerate(job.radii):
        centres = data["centres"][i]
        priors = [GeoPrior(float(x), float(y), radius) for x, y in centres]
        pairs = zip(queries, priors, strict=True)
        found = [placemap.query(q, job.k, prior=p)[0] for q, p in pairs]
        ids = np.stack([np.pad(f.ids, (0, job.k - len(f)), constant_values=-1) for f in found])
        sims = np.stack([np.pad(f.scores, (0, job.k - len(f)), constant_values=-np.inf)
                         for f in found])  # fmt: skip
        score = agreement(ids, sims, data[f"within_ids_{i}"], data[f"within_sims_{i}"], job.k)

        def one(priors: list[GeoPrior] = priors) -> None:
            at = cycle()
            placemap.query(queries[at], job.k, prior=priors[at])

        with PeakMemory() as peak:
            timing = measure(one, job.timing)
        row = Row(params=f"breadth={job.prior_breadth}", prior_m=radius, top1=score.top1,
                  recall_at_k=score.recall_at_k, **base)  # fmt: skip
        rows.append(_with_memory(timed_row(row, timing, peak)))
    return rows


def _with_memory(row: Row) -> Row:
    """Resident memory now, split: the process's own (anonymous) and mapped file pages."""
    anon, mapped = read_status_kib("RssAnon"), read_status_kib("RssFile")
    if anon is not None and mapped is not None:
        row.rss_anon_mb, row.rss_file_mb = anon * 1024 / 1e6, mapped * 1024 / 1e6
    return row


@dataclass(frozen=True)
class ExactJob:
    real: str
    size: int
    queries: str
    model: str
    k: int
    timing: TimingConfig


def measure_exact(job: ExactJob) -> list[Row]:
    """Exact NumPy search over the whole float map, one query at a time."""
    grown = GrownMap(np.load(job.real), job.size, MAP_SEED)
    database = np.concatenate([v for v, _ in grown.chunks()])
    queries = np.load(job.queries)["queries"]
    cycle = itertools.cycle(range(len(queries))).__next__
    with PeakMemory() as peak:
        timing = measure(lambda: exact_search(database, queries[cycle()][None], job.k), job.timing)
    row = Row(stage=STAGE_SEARCH, model=job.model, backend="exact (numpy)", map_size=job.size,
              dim=database.shape[1], k=job.k, size_mb=database.nbytes / 1e6, top1=1.0,
              recall_at_k=1.0)  # fmt: skip
    return [timed_row(row, timing, peak)]
