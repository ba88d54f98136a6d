"""Fuzz the place-map loader and search over every index kind, counting what each mutation
gave: refused (one EdgeVPRError line); equal (the map loaded and every answer equals the
clean map's); other (loaded, and answered otherwise, but every answer true to the map as
loaded: each place a live record, its score the exact cosine of its stored descriptor,
best first, inside the prior: a forged coordinate or path is another valid map, a forged
index code or link costs recall); wrong (an answer not true to the map as loaded); crash
(the process died); hang.

Usage: python benchmarks/integrity_fuzz.py [--mutations 200] [--out benchmarks/results/integrity.md]

Surfaces, each with every checksum made valid again after the change (a forgery) except
``raw``:
    raw       random byte flips, cuts and appends anywhere in the file
    index     random bytes of the index kind's own sections changed or cut
    metadata  a header field set to another JSON value
    records   a record column's values changed
    vectors   stored descriptor values changed, their row checks recomputed

Each mutation runs in a worker process that loads the map and answers the same queries as
the clean map (top-5 without a prior and with one, the index's own search, an addition);
a worker that dies is a crash, one that takes over ``--timeout`` seconds a hang.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

import numpy as np

from edgevpr.bench.machine import describe_cpu, machine_info
from edgevpr.core.files import write_text_atomic
from edgevpr.runtime.placemap import PlaceMap, PlaceRecord
from edgevpr.runtime.placemap.fileformat.container import MapFile, write_sections
from edgevpr.runtime.placemap.fileformat.filerows import row_checks
from edgevpr.runtime.placemap.kinds import INDEX_KINDS, FewerThanK
from edgevpr.runtime.placemap.projection import Projection

DIM, PLACES = 16, 120
SURFACES = ("raw", "index", "metadata", "records", "vectors")
OUTCOMES = ("refused", "equal", "other", "wrong", "crash", "hang")
PRIOR = (40.0, 3.0, 25.0)  # east, north, radius of the probe's prior
METADATA_KEYS = ["descriptor_dim", "next_id", "places", "rerank", "store", "zones", "sources",
                 "projection", "index.kind", "index.storage", "params.M", "params.ef",
                 "params.nlist", "params.nprobe"]  # fmt: skip
JSON_VALUES = [None, True, 0, -1, 1, 2**31, 2**63, 2**70, 0.5, -1e300, "x", [], {}, [1, 2],
               {"a": 1}, "f" * 64]  # fmt: skip


def specs() -> list[tuple[str, str]]:
    out = []
    for kind in INDEX_KINDS.values():
        if kind.needs is not None:
            try:
                __import__(kind.needs)
            except ImportError:
                continue
        out.extend((kind.name, storage) for storage in kind.storages)
    return out


def clean_map(kind: str, storage: str, path: Path) -> None:
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((PLACES, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    projection = Projection.fit(vectors, 8) if kind != "hnswlib" else None
    graph = INDEX_KINDS[kind].own({"M": 4, "ef_construction": 20})
    placemap = PlaceMap.create(DIM, "f" * 64, index=kind, storage=storage, projection=projection,
                               **graph)  # fmt: skip
    placemap.add(vectors, [PlaceRecord(path=f"{i}.jpg", east=float(i), north=float(i % 7))
                           for i in range(PLACES)])  # fmt: skip
    placemap.remove([5, 17])
    placemap.save(path)


def probe(path: str) -> object:
    """Everything a user does with a map; its answers (or the refusal) as plain data."""
    from edgevpr.core.errors import EdgeVPRError
    from edgevpr.core.geo import GeoPrior

    try:
        loaded = PlaceMap.load(path)
        queries = np.random.default_rng(0).standard_normal((6, DIM)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        ids, scores = loaded.search(queries, k=5)
        near = loaded.query(queries, k=3, prior=GeoPrior(*PRIOR))
        true = _true_to_the_map(loaded, queries, ids, scores, near)
        projected = queries[:, : loaded._index.dim] if loaded.projection is None else \
            loaded.projection.apply(queries)  # fmt: skip
        try:
            loaded._index.search(np.ascontiguousarray(projected), 5)
        except FewerThanK:  # too few live places in its walk: only a crash matters here
            pass
        loaded.add(queries[:2])
        return {"ids": ids.tolist(), "scores": np.round(scores, 4).tolist(),
                "near": [n.ids.tolist() for n in near], "true": true,
                "records": [(r.path, r.east, r.north) for r in loaded.records()]}  # fmt: skip
    except EdgeVPRError as exc:
        message = str(exc)
        return "refused" if message and "\n" not in message else f"bad message: {message!r}"


def _true_to_the_map(loaded: PlaceMap, queries: np.ndarray, ids: np.ndarray,
                     scores: np.ndarray, near: list) -> bool:  # fmt: skip
    """Whether every answer is a live place with its exact score, best first, and every
    prior's answer lies inside it."""
    live = set(loaded.ids().tolist())
    for row, (found, score) in enumerate(zip(ids, scores, strict=True)):
        if not set(found.tolist()) <= live or (np.diff(score) > 1e-5).any():
            return False
        if not np.allclose(loaded.descriptors(found) @ queries[row], score, atol=1e-3):
            return False
    for answer in near:
        records = [loaded.record(int(i)) for i in answer.ids]
        if any(r.east is None or np.hypot(r.east - PRIOR[0], r.north - PRIOR[1]) > PRIOR[2]
               for r in records):  # fmt: skip
            return False
    return True


def worker(jobs: mp.Queue, results: mp.Queue) -> None:
    while True:
        job = jobs.get()
        if job is None:
            return
        results.put((job, probe(job)))


def mutate(clean: Path, target: Path, surface: str, rng: np.random.Generator) -> None:
    """Write ``clean`` changed on ``surface`` to ``target`` (forged surfaces with every
    checksum valid again)."""
    if surface == "raw":
        target.write_bytes(_raw_mutation(bytearray(clean.read_bytes()), rng))
        return
    mapped = MapFile(clean)
    metadata = json.loads(json.dumps(mapped.metadata))
    arrays = {n: np.array(a) for n, a in mapped.arrays().items()}
    del mapped
    FORGERIES[surface](metadata, arrays, rng)
    write_sections(target, metadata, arrays)


def _raw_mutation(data: bytearray, rng: np.random.Generator) -> bytes:
    choice = rng.integers(3)
    if choice == 0:
        for _ in range(rng.integers(1, 5)):
            data[rng.integers(len(data))] ^= int(rng.integers(1, 256))
    elif choice == 1:
        data = data[: rng.integers(len(data))]
    else:
        data += bytes(rng.integers(0, 256, rng.integers(1, 64)).astype(np.uint8))
    return bytes(data)


def _forge_index(metadata: dict, arrays: dict, rng: np.random.Generator) -> None:
    name = str(rng.choice(sorted(n for n in arrays if n.startswith("index."))))
    raw = bytearray(arrays[name].tobytes())
    for _ in range(rng.integers(1, 7)):
        if raw:
            raw[rng.integers(len(raw))] = int(rng.integers(256))
    if rng.random() < 0.3:
        raw = raw[: rng.integers(len(raw) + 1)]
    dtype = arrays[name].dtype
    arrays[name] = np.frombuffer(bytes(raw[: len(raw) // dtype.itemsize * dtype.itemsize]),
                                 dtype).copy()  # fmt: skip


def _forge_metadata(metadata: dict, arrays: dict, rng: np.random.Generator) -> None:
    key = str(rng.choice(METADATA_KEYS))
    value = JSON_VALUES[rng.integers(len(JSON_VALUES))]
    if key.startswith("params."):
        metadata["index"]["params"][key.split(".")[1]] = value
    elif key.startswith("index."):
        metadata["index"][key.split(".")[1]] = value
    else:
        metadata[key] = value


def _forge_records(metadata: dict, arrays: dict, rng: np.random.Generator) -> None:
    name = str(rng.choice(sorted(n for n in arrays if n.startswith("records."))))
    flat = arrays[name].reshape(-1)
    if flat.size:
        values = [0, 1, -1, 7, 255, 32767] if flat.dtype.kind in "iub" else \
            [np.nan, np.inf, -1e9, 91.0, 0.5]  # fmt: skip
        flat[rng.integers(flat.size)] = np.array(values[rng.integers(len(values))]).astype(
            flat.dtype)  # fmt: skip


def _forge_vectors(metadata: dict, arrays: dict, rng: np.random.Generator) -> None:
    """A stored value changed, the row checks recomputed."""
    vectors = arrays["vectors"]
    vectors[rng.integers(len(vectors)), rng.integers(DIM)] = rng.choice(
        [np.nan, np.inf, 1e30, -3.0, 0.0, 0.7])  # fmt: skip
    arrays["vectors.check"] = row_checks(vectors, np.arange(len(vectors)))


FORGERIES = {"index": _forge_index, "metadata": _forge_metadata, "records": _forge_records,
             "vectors": _forge_vectors}  # fmt: skip


def _outcome(answer: object, expected: object) -> str:
    if answer == "refused" or answer == expected:
        return "refused" if answer == "refused" else "equal"
    return "other" if isinstance(answer, dict) and answer["true"] else "wrong"


def run(mutations: int, timeout: float, workdir: Path) -> dict:
    counts: dict = {}
    ctx = mp.get_context("spawn")
    for kind, storage in specs():
        clean = workdir / f"{kind}-{storage}.vprmap"
        clean_map(kind, storage, clean)
        expected = probe(str(clean))
        for surface in SURFACES:
            stored = any(e.name == "vectors" for e in MapFile(clean).entries)
            if surface == "vectors" and not stored:
                continue
            rng = np.random.default_rng(hash((kind, storage, surface)) % 2**32)
            tally = dict.fromkeys(OUTCOMES, 0)
            jobs, results = ctx.Queue(), ctx.Queue()
            process = ctx.Process(target=worker, args=(jobs, results), daemon=True)
            process.start()
            for n in range(mutations):
                target = workdir / f"m-{n}.vprmap"
                mutate(clean, target, surface, rng)
                jobs.put(str(target))
                started = time.monotonic()
                outcome = None
                while outcome is None:
                    try:
                        _, answer = results.get(timeout=0.5)
                        outcome = _outcome(answer, expected)
                    except Empty:
                        if not process.is_alive():
                            outcome = "crash"
                        elif time.monotonic() - started > timeout:
                            process.kill()
                            outcome = "hang"
                if outcome in ("crash", "hang"):
                    process.join()
                    jobs, results = ctx.Queue(), ctx.Queue()
                    process = ctx.Process(target=worker, args=(jobs, results), daemon=True)
                    process.start()
                tally[outcome] += 1
                target.unlink(missing_ok=True)
            jobs.put(None)
            process.join(timeout=30)
            counts[f"{kind} {storage}|{surface}"] = tally
            print(f"{kind:10s} {storage:4s} {surface:9s} {tally}", flush=True)
    return counts


def table(counts: dict, mutations: int, seconds: float) -> str:
    lines = [
        "# Place-map integrity fuzz", "",
        f"Machine: {describe_cpu(machine_info())}; {mutations} mutations per index kind, "
        f"storage and surface; {seconds:.0f} s. Command: `python benchmarks/integrity_fuzz.py "
        f"--mutations {mutations}`.", "",
        "refused: one EdgeVPRError line. equal: loaded, every answer equal to the clean "
        "map's (a raw flip in a stored descriptor no query read loads: that row is refused "
        "when read). other: loaded with other content the format allows (a forged "
        "coordinate, path, parameter, descriptor value near the original, or index code), "
        "every answer true to that content: live places, exact scores, inside the prior. "
        "wrong: an answer untrue to the loaded map. crash: the worker process died. hang: "
        "no answer within the timeout.", "",
        "| kind, storage | surface | " + " | ".join(OUTCOMES) + " |",
        "|---|---|" + "---|" * len(OUTCOMES),
    ]  # fmt: skip
    totals = dict.fromkeys(OUTCOMES, 0)
    for key, tally in counts.items():
        spec, surface = key.split("|")
        lines.append(f"| {spec} | {surface} | " + " | ".join(str(tally[o]) for o in OUTCOMES)
                     + " |")  # fmt: skip
        for outcome in OUTCOMES:
            totals[outcome] += tally[outcome]
    lines.append("| **all** | | " + " | ".join(f"**{totals[o]}**" for o in OUTCOMES) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutations", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/integrity.md"))
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgevpr-fuzz-") as tmp:
        counts = run(args.mutations, args.timeout, Path(tmp))
    seconds = time.perf_counter() - started
    write_text_atomic(args.out, table(counts, args.mutations, seconds))
    write_text_atomic(args.out.with_suffix(".json"), json.dumps(counts, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
