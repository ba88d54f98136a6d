"""What reading a map through checked private copies costs: load time, own memory and query
latency of one map file, measured by this tree and, for comparison, by another edgevpr tree
(``--baseline PATH``: e.g. a worktree of the commit before) in the same run.

Usage: python benchmarks/map_reads.py [--places 100000] [--baseline /tmp/edgevpr-before]
       [--out benchmarks/results/map_reads.md]

The map: ``--places`` 4096-d unit descriptors (random directions mixed along a route, so
that neighbours are close), faiss-ivf sq8 over a 256-d projection, a float16 store (the
configuration the maps results recommend). Queries: 300 noisy copies of map places, top-10,
one at a time, without a prior and with priors of 100 m and 1 km. Each tree is measured in a
fresh process; medians over the queries.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MEASURE = r"""
import json, resource, sys, time
import numpy as np
from edgevpr.core.geo import GeoPrior
from edgevpr.runtime.placemap import PlaceMap
path, queries_path, xy_path = sys.argv[1:4]
queries, xy = np.load(queries_path), np.load(xy_path)
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20
before = rss()
started = time.perf_counter()
placemap = PlaceMap.load(path)
load = time.perf_counter() - started
out = {"load_s": load, "rss_mb": rss() - before}
for label, radius in (("none", None), ("100 m", 100.0), ("1 km", 1000.0)):
    times = []
    for q, (x, y) in zip(queries, xy):
        prior = None if radius is None else GeoPrior(float(x), float(y), radius)
        started = time.perf_counter()
        placemap.query(q, k=10, prior=prior)
        times.append(time.perf_counter() - started)
    out[label] = 1e3 * float(np.median(times[20:]))
print(json.dumps(out))
"""


def make_map(places: int, folder: Path) -> tuple[Path, Path, Path]:
    from edgevpr.runtime.placemap import PlaceMap, PlaceRecord
    from edgevpr.runtime.placemap.projection import Projection

    rng = np.random.default_rng(0)
    anchors = rng.standard_normal((places // 100 + 2, 4096)).astype(np.float32)
    t = np.arange(places) / 100
    low = t.astype(int)
    mix = (t - low)[:, None].astype(np.float32)
    vectors = anchors[low] * (1 - mix) + anchors[low + 1] * mix
    vectors += 0.5 * rng.standard_normal(vectors.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    xy = np.stack([np.arange(places) * 2.0, np.zeros(places)], axis=1)
    placemap = PlaceMap.create(4096, "fp", index="faiss-ivf", storage="sq8", store="f16",
                               projection=Projection.fit(vectors[:20000], 256),
                               capacity=places)  # fmt: skip
    placemap.add(vectors, [PlaceRecord(east=float(x), north=0.0) for x, _ in xy])
    path = folder / "map.vprmap"
    placemap.save(path)
    picks = rng.integers(0, places, 300)
    queries = vectors[picks] + 0.02 * rng.standard_normal((300, 4096)).astype(np.float32)
    np.save(folder / "queries.npy", queries / np.linalg.norm(queries, axis=1, keepdims=True))
    np.save(folder / "xy.npy", xy[picks])
    return path, folder / "queries.npy", folder / "xy.npy"


def measure(tree: Path, files: tuple[Path, Path, Path]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", MEASURE, *map(str, files)], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--places", type=int, default=100_000)
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/map_reads.md"))
    args = parser.parse_args()
    from edgevpr.bench.machine import describe_cpu, machine_info
    from edgevpr.core.files import write_text_atomic

    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="edgevpr-reads-") as tmp:
        files = make_map(args.places, Path(tmp))
        size_mb = files[0].stat().st_size / 1e6
        trees = {"this tree": here} | ({"baseline": args.baseline} if args.baseline else {})
        rows = {name: measure(tree, files) for name, tree in trees.items()}
    lines = ["# Reading a map through checked private copies\n",
             f"Machine: {describe_cpu(machine_info())}. Map: {args.places:,} places, 4096-d, "
             f"faiss-ivf sq8 over PCA 256, float16 store ({size_mb:,.0f} MB). One fresh "
             "process per tree (RSS: resident memory the load added, file pages included); "
             "medians of 280 queries, top-10. Command: `python "
             f"benchmarks/map_reads.py --places {args.places}"
             + (" --baseline <tree>`." if args.baseline else "`."), "",
             "| tree | load s | RSS after load MB | p50 no prior ms | p50 100 m ms | "
             "p50 1 km ms |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in rows.items():
        lines.append(f"| {name} | {row['load_s']:.2f} | {row['rss_mb']:.0f} | "
                     f"{row['none']:.3f} | {row['100 m']:.3f} | {row['1 km']:.3f} |")  # fmt: skip
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
