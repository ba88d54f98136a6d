"""Localisation from a stream of frames: single frames against sequences, and what it costs.

Usage: python benchmarks/localize.py --trained CKPT [--untrained CKPT] [--data ../shared/data]
       [--out benchmarks/results/localize.md] [--big-map 100000] [--sections accuracy,cost,stream]

Everything runs through the runtime, as it ships: each checkpoint is exported to ONNX, the
runtime ``Embedder`` embeds the test splits, a ``PlaceMap`` (the default index) holds the
database in travel order and a ``Localizer`` (route mode, no calibration) takes the queries one by
one through ``update_descriptor``. A fix is right when it lies within 25 m of the query's
true position.

1. nordland64 and corridor test: single frames (exact search; confidence = best cosine less
   the second) against sequences of L = 5, 10, 20 (confidence = the fix's margin): R@1,
   R@100P and AUC (average precision of accepted fixes; a fix the Localizer's integrity
   checks set aside, confidence 0, ranks last). Variable speed: the query stream
   resampled in segments of 60 frames at 1x, 0.5x (every frame twice) and 2x (every
   other frame dropped).
2. Kidnapped robot: the nordland64 test stream with 20 insertions of 30 consecutive frames
   from at least 10 km away (start points drawn with seeds 0, 1, 2; after each insertion
   the stream resumes where it left off), localised (L = 10) with the default threshold and
   with a calibration written by ``edgevpr eval --split train --sequence 10
   --threshold-at-precision 1.0`` (a stretch the test split does not use). Each frame's
   fix is right within 25 m of that frame's own true position, inserted frames included:
   precision of accepted fixes over the whole stream, and frames from each return to the
   first right accepted fix.
3. Cost of the filter per frame (the Localizer's time less its kNN search) against the
   embed time of a frame of MixVPR-Lite0 and of MixVPR-R50 4096 at 320x320 (ONNX Runtime,
   CPU, batch 1), on the nordland64 map and on a synthetic route of ``--big-map`` places of
   4096-d descriptors in the default index (faiss IVF over int8 codes, float descriptors
   stored for exact re-ranking, which the filter reads).
4. Stream throughput, batch 1: the model alone on frames decoded and resized beforehand
   (``Embedder.embed_batch``), ``Embedder.stream`` over the files (decoding and resizing of
   the next frame overlap the embedding of this one) and ``Localizer.run`` over the files;
   MixVPR-Lite0 on nordland64's 64x32 PNGs and MixVPR-R50 on corridor's frames re-encoded
   as 640x480 JPEGs (what a VGA camera gives), R50 with ONNX Runtime on all cores (the
   stream then decodes between frames: a decode beside it slows the model more than it
   saves) and on one thread (the decode overlaps on the other core).

Each section's results are kept in ``<out>.json`` with the machine and command, so one
section can be measured again without the others (``--sections``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from edgevpr.bench.machine import describe_cpu, machine_info
from edgevpr.core.preprocess import PreprocessSpec, normalize, read_for_model, resize_rgb
from edgevpr.data.layout import read_split
from edgevpr.export.onnx_export import export_onnx
from edgevpr.model import build_model, get_preset
from edgevpr.model.checkpoint import load_checkpoint, save_checkpoint
from edgevpr.runtime import Embedder, PlaceMap
from edgevpr.runtime.localize import Calibration, FixIntegrity, Localizer, precision_recall
from edgevpr.runtime.localize.layout import traversal_order
from edgevpr.runtime.localize.route import DEFAULT_SEEDS
from edgevpr.runtime.placemap.place_record import PlaceRecord, record_for

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RADIUS_M = 25.0
LENGTHS = (5, 10, 20)
SEGMENT = 60  # frames per speed segment of the variable-speed stream
SPEEDS = (1.0, 0.5, 2.0)


# ------------------------------------------------------------------ models and data
def exported(checkpoint: Path, folder: Path) -> Embedder:
    onnx = folder / f"{checkpoint.stem}-{abs(hash(str(checkpoint))) % 10**6}.onnx"
    export_onnx(load_checkpoint(checkpoint), onnx)
    return Embedder(onnx, providers=["cpu"], batch_size=1)


def untrained_like(checkpoint: Path, folder: Path) -> Path:
    """The same model with a fresh MixVPR head (seed 0) on the ImageNet backbone."""
    config = load_checkpoint(checkpoint).model.config
    torch.manual_seed(0)
    path = folder / "untrained.pt"
    save_checkpoint(path, build_model(config, pretrained=True))
    return path


class RouteSet:
    """A test split in travel order: database as a place map, queries as descriptors."""

    def __init__(self, embedder: Embedder, root: Path) -> None:
        split = read_split(root, "test")
        database = ordered(list(split.database.paths))
        self.paths = ordered(list(split.queries.paths))
        self.name = root.name
        self.truth = np.array([[r.east, r.north] for r in map(record_for, self.paths)])
        records = [record_for(p) for p in database]
        self.places = np.array([[r.east, r.north] for r in records])
        vectors = embedder.embed_paths(database)
        self.queries = embedder.embed_paths(self.paths)
        self.map = PlaceMap.create(embedder.descriptor_dim, embedder.fingerprint)
        self.map.add(vectors, records)
        self.vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ordered(paths: list[Path]) -> list[Path]:
    order, _ = traversal_order([record_for(p) for p in paths])
    return [paths[i] for i in order]


def variable_speed(frames: int) -> np.ndarray:
    """Query indices of a stream whose speed switches every SEGMENT frames."""
    picked, position = [], 0.0
    while position < frames - 0.5:
        picked.append(int(position))
        position += SPEEDS[(len(picked) // SEGMENT) % len(SPEEDS)]
    return np.asarray(picked)


# ------------------------------------------------------------------ accuracy
def scores(correct: np.ndarray, confidence: np.ndarray) -> dict[str, float]:
    curve = precision_recall(confidence, correct)
    return {
        "R@1": 100 * float(correct.mean()),
        "R@100P": 100 * curve.recall_at_full_precision,
        "AUC": curve.average_precision,
    }


def single_frames(data: RouteSet, stream: np.ndarray) -> dict[str, float]:
    cosines = data.queries[stream] @ data.vectors.T
    top = np.argsort(-cosines, axis=1)[:, :2]
    rows = np.arange(len(stream))
    right = np.linalg.norm(data.places[top[:, 0]] - data.truth[stream], axis=1) <= RADIUS_M
    return scores(right, cosines[rows, top[:, 0]] - cosines[rows, top[:, 1]])


def sequence(embedder: Embedder, data: RouteSet, length: int, stream: np.ndarray) -> dict:
    """The Localizer's decisions: a fix ranks by its margin where the fix's integrity checks
    let it be weighed at all (confidence above 0), else last."""
    localizer = Localizer(embedder, data.map, length=length, calibration=None)
    right, margins, seconds = [], [], []
    for frame, index in enumerate(stream):
        start = time.perf_counter()
        fix = localizer.update_descriptor(data.queries[index])
        seconds.append(time.perf_counter() - start)
        error = np.hypot(fix.position.east - data.truth[index, 0],
                         fix.position.north - data.truth[index, 1])  # fmt: skip
        right.append(error <= RADIUS_M)
        weighed = frame >= length - 1 and fix.confidence > 0
        margins.append(fix.margin if weighed else -np.inf)
    result = scores(np.array(right), np.array(margins))
    result["ms"] = 1000 * statistics.median(seconds)
    return result


def accuracy_rows(models: dict[str, Embedder], sets: dict[str, Path]) -> list[list[str]]:
    rows = []
    for model, embedder in models.items():
        for name, root in sets.items():
            data = RouteSet(embedder, root)
            for pattern in ("steady", "variable"):
                stream = np.arange(len(data.paths))
                if pattern == "variable":
                    stream = variable_speed(len(data.paths))
                results = {"single frame": single_frames(data, stream)}
                for length in LENGTHS:
                    results[f"L={length}"] = sequence(embedder, data, length, stream)
                for how, r in results.items():
                    rows.append([model, name, pattern, str(len(stream)), how, f"{r['R@1']:.1f}",
                                 f"{r['R@100P']:.1f}", f"{r['AUC']:.3f}"])  # fmt: skip
    return rows


# ------------------------------------------------------------------ kidnap
KIDNAPS, KIDNAP_FRAMES, KIDNAP_MIN_M = 20, 30, 10_000.0
UNCHECKED = FixIntegrity(gate=-100.0, floor=-100.0, frames=1, contradiction=100.0)


def kidnap_stream(truth: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(query indices, 1 where inserted) of the test stream with KIDNAPS insertions of
    KIDNAP_FRAMES consecutive frames from at least KIDNAP_MIN_M away; after each, the
    stream resumes where it left off."""
    rng = np.random.default_rng(seed)
    frames = len(truth)
    cuts = np.sort(rng.choice(np.arange(50, frames - 50), KIDNAPS, replace=False))
    stream: list[int] = []
    inserted: list[int] = []
    last = 0
    for cut in cuts:
        stream += range(last, cut)
        inserted += [0] * (cut - last)
        far = np.linalg.norm(truth[: frames - KIDNAP_FRAMES] - truth[cut], axis=1) >= KIDNAP_MIN_M
        start = int(rng.choice(np.flatnonzero(far)))
        stream += range(start, start + KIDNAP_FRAMES)
        inserted += [1] * KIDNAP_FRAMES
        last = cut
    stream += range(last, frames)
    inserted += [0] * (frames - last)
    return np.asarray(stream), np.asarray(inserted)


def kidnap_run(embedder: Embedder, data: RouteSet, stream: np.ndarray, inserted: np.ndarray,
               calibration: Calibration | None, integrity: FixIntegrity | None,
               ) -> dict:  # fmt: skip
    localizer = Localizer(embedder, data.map, length=10, calibration=calibration,
                          integrity=integrity)  # fmt: skip
    accepted, right, confident_wrong = [], [], 0
    for index in stream:
        fix = localizer.update_descriptor(data.queries[index])
        error = np.hypot(fix.position.east - data.truth[index, 0],
                         fix.position.north - data.truth[index, 1])  # fmt: skip
        accepted.append(fix.accepted)
        right.append(error <= RADIUS_M)
        confident_wrong += int(fix.accepted and error > RADIUS_M and fix.confidence >= 0.9)
    accepted_, right_ = np.array(accepted), np.array(right)
    returns = np.flatnonzero((inserted[:-1] == 1) & (inserted[1:] == 0)) + 1
    delays = []
    for back in returns:
        good = np.flatnonzero(accepted_[back:] & right_[back:])
        delays.append(int(good[0]) + 1 if len(good) else len(stream) - back)
    wrong = int((accepted_ & ~right_).sum())
    return {"accepted": int(accepted_.sum()), "wrong": wrong,
            "precision": 1 - wrong / max(int(accepted_.sum()), 1), "delays": delays,
            "confident_wrong": confident_wrong}  # fmt: skip


def kidnap_rows(embedder: Embedder, root: Path, calibration: Calibration) -> list[list[str]]:
    data = RouteSet(embedder, root)
    rows = []
    for seed in (0, 1, 2):
        stream, inserted = kidnap_stream(data.truth, seed)
        runs = (("default", None, None), ("calibrated", calibration, None),
                ("default, integrity checks off", None, UNCHECKED))  # fmt: skip
        for name, given, integrity in runs:
            r = kidnap_run(embedder, data, stream, inserted, given, integrity)
            rows.append([str(seed), name, str(len(stream)), str(r["accepted"]), str(r["wrong"]),
                         f"{r['precision']:.4f}", str(r["confident_wrong"]),
                         f"{statistics.median(r['delays']):.0f}",
                         f"{np.percentile(r['delays'], 95):.0f}"])  # fmt: skip
    return rows


def held_out_calibration(model: Path, data: Path, work: Path) -> Calibration:
    """The calibration a user would write: route matching over 10 frames, precision 1.0,
    measured on nordland64's train split (a stretch of route the test split does not use)."""
    out = work / "calibration.json"
    command = [str(Path(sys.executable).with_name("edgevpr")), "eval", str(model), str(data),
               "--split", "train", "--pr", "--sequence", "10", "--threshold-at-precision", "1.0",
               "--calibration", str(out)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return Calibration.load(out)


# ------------------------------------------------------------------ cost
def median_ms(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def embed_ms(embedder: Embedder, repeats: int = 20) -> float:
    spec: PreprocessSpec = embedder.spec
    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    batch = normalize(resize_rgb(rgb, spec)[None], spec)
    return median_ms(lambda: embedder.embed_batch(batch), repeats)


def filter_ms(embedder: Embedder, placemap: PlaceMap, queries: np.ndarray) -> tuple[float, float]:
    """(median ms a frame of the whole update, of its kNN search alone)."""
    localizer = Localizer(embedder, placemap, length=10, calibration=None)
    k = max(localizer.k, DEFAULT_SEEDS)  # what the Localizer asks of the map
    updates, searches = [], []
    for query in queries:
        start = time.perf_counter()
        localizer.update_descriptor(query)
        middle = time.perf_counter()
        placemap.query(query, k=k)
        updates.append(middle - start)
        searches.append(time.perf_counter() - middle)
    return 1000 * statistics.median(updates), 1000 * statistics.median(searches)


def synthetic_route(embedder: Embedder, places: int, frames: int) -> tuple[PlaceMap, np.ndarray]:
    """A route of ``places`` descriptors that drift along it, and noisy frames of a stretch."""
    rng = np.random.default_rng(0)
    dim = embedder.descriptor_dim
    vectors = np.empty((places, dim), np.float32)
    current = rng.standard_normal(dim).astype(np.float32)
    for i in range(places):
        current = 0.9 * current + 0.45 * rng.standard_normal(dim).astype(np.float32)
        vectors[i] = current / np.linalg.norm(current)
    records = [PlaceRecord(east=10.0 * i, north=0.0, id=i) for i in range(places)]
    placemap = PlaceMap.create(dim, embedder.fingerprint)
    placemap.add(vectors, records)
    start = places // 3
    queries = vectors[start : start + frames] + 0.02 * rng.standard_normal((frames, dim))
    return placemap, queries.astype(np.float32)


def cost_rows(lite0: Embedder, r50: Embedder, nordland: RouteSet, big: int) -> list[list[str]]:
    lite0_ms, r50_ms = embed_ms(lite0), embed_ms(r50)
    rows = []
    update, search = filter_ms(lite0, nordland.map, nordland.queries[:400])
    rows.append(["nordland64 (Lite0 512-d)", str(len(nordland.map)), update, search])
    if big:
        placemap, queries = synthetic_route(r50, big, 300)
        update, search = filter_ms(r50, placemap, queries)
        rows.append([f"synthetic route (R50 {r50.descriptor_dim}-d)", str(big), update, search])
    table = []
    for name, places, update, search in rows:
        cost = update - search
        table.append([name, places, f"{update:.2f}", f"{search:.2f}", f"{cost:.2f}",
                      f"{100 * cost / lite0_ms:.0f}%", f"{100 * cost / r50_ms:.1f}%"])  # fmt: skip
    table.append(["embed, batch 1", "", f"Lite0 {lite0_ms:.2f}", "", "", "", f"R50 {r50_ms:.1f}"])
    return table


def stream_row(name: str, embedder: Embedder, paths: list[Path], placemap: PlaceMap) -> list:
    """Frames a second of the model alone (frames decoded and resized beforehand), of
    ``Embedder.stream`` over the files (decoding overlapped) and of ``Localizer.run``."""
    spec = embedder.spec
    batches = [normalize(resize_rgb(read_for_model(p, spec), spec)[None], spec) for p in paths]
    embedder.warmup()
    start = time.perf_counter()
    for batch in batches:
        embedder.embed_batch(batch)
    model = len(paths) / (time.perf_counter() - start)
    start = time.perf_counter()
    streamed = sum(len(d) for _, d in embedder.stream(paths))
    stream = streamed / (time.perf_counter() - start)
    localizer = Localizer(embedder, placemap, length=10, calibration=None)
    start = time.perf_counter()
    localized = sum(1 for _ in localizer.run(paths))
    localize = localized / (time.perf_counter() - start)
    return [name, str(len(paths)), f"{model:.1f}", f"{stream:.1f}", f"{localize:.1f}",
            f"{stream / model:.2f}", f"{localize / model:.2f}"]  # fmt: skip


def camera_frames(paths: list[Path], folder: Path) -> list[Path]:
    """The frames as a VGA camera gives them: 640x480 JPEG (quality 90), names kept."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in paths:
        big = cv2.resize(cv2.imread(str(path)), (640, 480), interpolation=cv2.INTER_CUBIC)
        out.append(folder / (path.stem + ".jpg"))
        cv2.imwrite(str(out[-1]), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return out


def stream_rows(lite0: Embedder, r50: Path, sets: dict[str, Path], work: Path) -> list:
    nordland = RouteSet(lite0, sets["nordland64"])
    rows = [stream_row("Lite0 64x128, nordland64 64x32 PNG", lite0, nordland.paths[:600],
                       nordland.map)]  # fmt: skip
    for threads in (None, 1):
        embedder = Embedder(r50, providers=["cpu"], batch_size=1, threads=threads)
        corridor = RouteSet(embedder, sets["corridor"])
        frames = camera_frames(corridor.paths, work / "vga")
        name = "R50 4096 320x320, corridor as 640x480 JPEG"
        name += ", 1 model thread" if threads else ", model on all cores"
        rows.append(stream_row(name, embedder, frames, corridor.map))
    return rows


# ------------------------------------------------------------------ one step
STEP_SIZES = (10_000, 100_000)
STEP_DIM = 512  # MixVPR-Lite0's descriptor; the step's cost is the map's, not the model's


def step_rows(embedder: Embedder) -> list[list[str]]:
    """``Localizer.update_descriptor`` (search + tracking + integrity + bookkeeping), one
    frame at a time on synthetic routes in the default map, p50 and p90 over 350 frames
    after 50 of warm-up; and the map's k-nearest search alone."""
    rows = []
    for places in STEP_SIZES:
        placemap, queries = synthetic_route(_Dim(embedder, STEP_DIM), places, 400)
        localizer = Localizer(_Dim(embedder, STEP_DIM), placemap, length=10, calibration=None)
        for query in queries[:50]:
            localizer.update_descriptor(query)
        update, search = [], []
        k = max(localizer.k, DEFAULT_SEEDS)
        for query in queries[50:]:
            start = time.perf_counter()
            localizer.update_descriptor(query)
            middle = time.perf_counter()
            placemap.search(query[None], k)
            update.append(middle - start)
            search.append(time.perf_counter() - middle)
        rows.append([f"synthetic route, {STEP_DIM}-d", f"{places:,}", placemap.index_kind,
                     f"{1000 * statistics.median(update):.3f}",
                     f"{1000 * float(np.percentile(update, 90)):.3f}",
                     f"{1000 * statistics.median(search):.3f}"])  # fmt: skip
    return rows


class _Dim(Embedder):
    """An embedder's fingerprint with another descriptor size: no model (frames come
    embedded, through update_descriptor)."""

    def __init__(self, embedder: Embedder, dim: int) -> None:  # no backend opened
        self._fingerprint, self._dim = embedder.fingerprint, dim

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def descriptor_dim(self) -> int:
        return self._dim


# ------------------------------------------------------------------ report
def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


SECTIONS = ("accuracy", "kidnap", "step", "cost", "stream")


def measure(section: str, args: argparse.Namespace, work: Path) -> list[list[str]]:
    models = {
        "MS-trained": args.trained,
        "untrained": args.untrained or untrained_like(args.trained, work),
    }
    sets = {name: args.data / name for name in ("nordland64", "corridor")}
    if section == "accuracy":
        return accuracy_rows({m: exported(c, work) for m, c in models.items()}, sets)
    if section == "step":
        return step_rows(exported(args.trained, work))
    if section == "kidnap":
        trained = exported(args.trained, work)
        calibration = held_out_calibration(trained.path, sets["nordland64"], work)
        return kidnap_rows(trained, sets["nordland64"], calibration)
    lite0 = exported(args.trained, work)
    torch.manual_seed(0)
    r50_config = get_preset("mixvpr_resnet50_4096").with_size(320, 320)
    save_checkpoint(work / "r50.pt", build_model(r50_config, pretrained=False))
    r50 = exported(work / "r50.pt", work)
    if section == "stream":
        return stream_rows(lite0, r50.path, sets, work)
    return cost_rows(lite0, r50, RouteSet(lite0, sets["nordland64"]), args.big_map)


HEADERS = {
    "accuracy": ("Recall and confidence (a fix is right within 25 m)",
                 ["model", "set", "speed", "frames", "matching", "R@1", "R@100P", "AUC"]),
    "kidnap": ("Kidnapped: 20 insertions of 30 frames from at least 10 km away (nordland64 "
               "test, MS-trained; calibration at precision 1.0 from the train split)",
               ["seed", "threshold", "frames", "accepted", "wrong accepted",
                "precision of accepted", "of them with confidence >= 0.9",
                "frames to the first right accepted fix after a return: median", "p95"]),
    "step": ("One localisation step (Localizer.update_descriptor: search, tracking, "
             "integrity checks, bookkeeping), one frame at a time, ms",
             ["map", "places", "index", "step p50", "step p90", "its kNN search alone p50"]),
    "cost": ("Filter cost a frame (medians, ms; filter = update less its kNN search)",
             ["map", "places", "update", "kNN search", "filter", "of Lite0 embed",
              "of R50 embed"]),
    "stream": ("Stream throughput (frames/s, batch 1; the model alone on frames decoded "
               "beforehand, Embedder.stream and Localizer.run over the files)",
               ["model, frames", "frames", "model alone", "Embedder.stream", "Localizer.run",
                "stream / model", "localize / model"]),
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trained", type=Path, required=True)
    parser.add_argument("--untrained", type=Path)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/localize.md"))
    parser.add_argument("--big-map", type=int, default=100_000)
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help="sections to measure; the others keep their last results")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="edgevpr-localize-"))
    store = args.out.with_suffix(".json")
    results = json.loads(store.read_text()) if store.exists() else {}
    for section in args.sections.split(","):
        rows = measure(section, args, work)
        results[section] = {
            "rows": rows,
            "machine": describe_cpu(machine_info()),
            "command": " ".join(sys.argv),
            "date": time.strftime("%Y-%m-%d"),
        }
        store.write_text(json.dumps(results, indent=1))
        print(table(HEADERS[section][1], rows), flush=True)
    args.out.write_text(report(results))


def report(results: dict) -> str:
    lines = ["# Localisation from a stream: sequence matching and its cost", "", __doc__, ""]
    for section in SECTIONS:
        if section not in results:
            continue
        title, header = HEADERS[section]
        found = results[section]
        lines += [f"## {title}", "", f"{found['date']}, {found['machine']}: `{found['command']}`",
                  "", table(header, found["rows"]), ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
