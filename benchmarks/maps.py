"""City-scale maps: which index, storage and projection, measured side by side.

Usage: python benchmarks/maps.py --trained CKPT [--sizes 100k,1m] [--out benchmarks/results/maps.md]
       [--sections search,recall] [--cache-dir DIR]

1. search: ``edgevpr bench --stages search`` on maps of 4096-d descriptors grown from real
   images (MixVPR-Lite0 4096: the real ImageNet EfficientNet-Lite0 with a fresh MixVPR head,
   on nordland64's test images), one table per map size, one run each: build time, file size,
   load time, memory (peak; and, after the queries, the process's own and the mapped file
   pages), p50/p99 of one query (top-10), top-1 agreement with exact float search and
   recall@10, without a prior and with priors of 100 m, 1 km and 5 km (whose answers are
   checked against exact float search inside the circle).
2. recall: Recall@1 on nordland64 and corridor (test splits, positives within 25 m) of the
   same real descriptors in each compressed map against the float map: the MS-trained
   Lite0 512-d model (``--trained``) and the untrained Lite0 4096-d one, both through the
   runtime (exported to ONNX).

Each section's results are kept in ``<out>.json`` with the machine and command, so a
section can be measured again alone (``--sections``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from edgevpr.bench.machine import describe_cpu, machine_info
from edgevpr.data.layout import read_split
from edgevpr.export.onnx_export import export_onnx
from edgevpr.model import build_model, get_preset
from edgevpr.model.checkpoint import load_checkpoint, save_checkpoint
from edgevpr.runtime import Embedder, PlaceMap
from edgevpr.runtime.placemap.place_record import record_for
from edgevpr.runtime.placemap.projection import Projection

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SEARCH_SPECS = {  # per map size: today's float map is built only where it fits in memory
    "100k": ["hnswlib", "hnswlib:pca256", "usearch:i8:pca256", "usearch:f16:pca256",
             "faiss-ivf:sq8:pca256", "faiss-ivf:pq:pca256", "faiss-hnsw:sq8:pca256",
             "faiss-ivf:sq8:pca256:store-f16"],
    "1m": ["faiss-ivf:sq8:pca256:store-f16", "usearch:i8:pca256:store-f16"],
}  # fmt: skip
RECALL_SPECS = [("float (hnswlib)", "hnswlib", None, None), ("hnswlib pca", "hnswlib", None, 4),
                ("usearch i8 pca", "usearch", "i8", 4), ("usearch f16 pca", "usearch", "f16", 4),
                ("faiss-ivf sq8 pca", "faiss-ivf", "sq8", 4),
                ("faiss-ivf pq pca", "faiss-ivf", "pq", 4),
                ("faiss-hnsw sq8 pca", "faiss-hnsw", "sq8", 4)]  # fmt: skip
RADIUS_M = 25.0


# ------------------------------------------------------------------ search
def search_section(size: str, cache: Path) -> dict:
    out = cache / f"search_{size}.json"
    command = [sys.executable, "-m", "edgevpr.cli", "bench", "mixvpr_lite0_4096",
               "--stages", "search", "--images", str(SHARED / "nordland64"),
               "--map-images", "1176", "--map-size", size, "--ef", "32,64,128,256",
               "--prior", "100,1000,5000", "--cache-dir", str(cache), "--out", str(out),
               *[arg for spec in SEARCH_SPECS[size] for arg in ("--index", spec)]]  # fmt: skip
    subprocess.run(command, check=True)
    report = json.loads(out.read_text())
    rows = [r for r in report["rows"] if r["stage"] == "search"]
    return {"rows": rows, "command": "edgevpr " + " ".join(command[3:])}


def search_table(rows: list[dict]) -> str:
    header = ["index", "breadth", "prior", "build s", "file MB", "load s", "peak RSS MB",
              "RSS own/mapped MB", "p50 ms", "p99 ms", "top-1 agree", "recall@10"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['backend']} | {r['status']}: {r['reason']} |")
            continue
        prior = "-" if r.get("prior_m") is None else f"{r['prior_m']:g} m"
        memory = ("-" if r.get("rss_anon_mb") is None
                  else f"{r['rss_anon_mb']:.0f} / {r['rss_file_mb']:.0f}")  # fmt: skip
        cells = [r["backend"], r["params"].replace("breadth=", "") or "-", prior,
                 _num(r.get("build_s"), 0), _num(r.get("size_mb"), 0), _num(r.get("load_s"), 2),
                 _num(r.get("peak_rss_mb"), 0), memory, _num(r.get("p50_ms"), 3),
                 _num(r.get("p99_ms"), 3), _num(r.get("top1"), 3),
                 _num(r.get("recall_at_k"), 3)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


# ------------------------------------------------------------------ recall
def exported(checkpoint: Path, folder: Path) -> Embedder:
    onnx = folder / f"{checkpoint.stem}.onnx"
    export_onnx(load_checkpoint(checkpoint), onnx)
    return Embedder(onnx, providers=["cpu"])


def recall_rows(name: str, embedder: Embedder) -> list[list[str]]:
    rows = []
    for dataset in ("nordland64", "corridor"):
        split = read_split(SHARED / dataset, "test")
        database = list(split.database.paths)
        vectors = embedder.embed_paths(database)
        queries = embedder.embed_paths(list(split.queries.paths))
        places = np.array([[r.east, r.north] for r in map(record_for, database)])
        truth = np.array([[r.east, r.north] for r in map(record_for, split.queries.paths)])
        dims = embedder.descriptor_dim
        for label, kind, storage, divisor in RECALL_SPECS:
            projection = Projection.fit(vectors, dims // divisor) if divisor else None
            placemap = PlaceMap.create(dims, embedder.fingerprint, index=kind, storage=storage,
                                        projection=projection)  # fmt: skip
            placemap.add(vectors, [record_for(p) for p in database])
            ids, _ = placemap.search(queries, k=1)
            rows_of = np.searchsorted(placemap.ids(), ids[:, 0])
            error = np.linalg.norm(places[rows_of] - truth, axis=1)
            pca = f"pca{dims // divisor}" if divisor else "-"
            rows.append([name, dataset, label, pca, f"{100 * np.mean(error <= RADIUS_M):.1f}"])
            print(rows[-1], flush=True)
    return rows


def recall_section(trained: Path, work: Path) -> dict:
    torch.manual_seed(0)
    # the untrained head sees the trained model's inputs (size and preprocessing)
    preprocess = load_checkpoint(trained).model.config.preprocess
    untrained = replace(get_preset("mixvpr_lite0_4096"), preprocess=preprocess)
    save_checkpoint(work / "lite0_4096.pt", build_model(untrained, pretrained=True))
    rows = recall_rows("MS-trained Lite0 512-d", exported(trained, work))
    rows += recall_rows("untrained Lite0 4096-d", exported(work / "lite0_4096.pt", work))
    return {"rows": rows, "command": f"python benchmarks/maps.py --trained {trained} "
                                     "--sections recall"}  # fmt: skip


def recall_table(rows: list[list[str]]) -> str:
    header = ["model", "set", "map", "projection", "R@1"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


# ------------------------------------------------------------------ report
def report(results: dict) -> str:
    lines = ["# City-scale maps: index kinds, storage and projection", "", __doc__, ""]
    for key, found in sorted(results.items()):
        title = (f"Search, {key.split('_', 1)[1]} places" if key.startswith("search")
                 else "Recall@1 with compressed maps")  # fmt: skip
        table = search_table(found["rows"]) if key.startswith("search") else recall_table(
            found["rows"])  # fmt: skip
        lines += [f"## {title}", "", f"{found['date']}, {found['machine']}: `{found['command']}`",
                  "", table, ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trained", type=Path, required=True)
    parser.add_argument("--sizes", default="100k,1m")
    parser.add_argument("--sections", default="search,recall")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/maps.md"))
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "maps")
    args = parser.parse_args()
    torch.set_num_threads(2)
    store = args.out.with_suffix(".json")
    results = json.loads(store.read_text()) if store.exists() else {}
    work = Path(tempfile.mkdtemp(prefix="edgevpr-maps-"))
    for section in args.sections.split(","):
        keys = [f"search_{s}" for s in args.sizes.split(",")] if section == "search" else [
            "recall"]  # fmt: skip
        for key in keys:
            found = (search_section(key.split("_", 1)[1], args.cache_dir) if section == "search"
                     else recall_section(args.trained, work))  # fmt: skip
            found.update(machine=describe_cpu(machine_info()), date=time.strftime("%Y-%m-%d"))
            results[key] = found
            store.write_text(json.dumps(results, indent=1))
    args.out.write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
