"""The project's own latency benchmarks: regenerate ``benchmarks/results/bench_<config>.{json,md}``.

Usage (from the repository root, on a quiet machine: the numbers are only as good as that):

    python benchmarks/bench_suite.py                 # every configuration
    python benchmarks/bench_suite.py --only r50      # one of them
    python benchmarks/bench_suite.py --quick         # a smoke run of the script itself

then ``python benchmarks/bench_readme.py`` for the README's tables and the latency chart.

Configurations (all through ``edgevpr bench``'s own code, exported artifacts run by the
runtime, PyTorch eager as the reference):
- r50: MixVPR-R50 4096-d at 320x320 (the paper's model), every backend, batch 1 and 8, and
  the pipeline end to end (a 10k map). Random weights: no ImageNet ResNet-50 weights can be
  fetched here; timing does not depend on them, but their descriptors are degenerate (mean
  pairwise cosine 0.87, some pairs 1.0), so this configuration runs no search table.
- search4096: search alone on 10k and 100k maps of 4096-d descriptors from MixVPR-Lite0-4096
  (ImageNet backbone: real features, mean pairwise cosine 0.27). The first run builds the
  100k x 4096-d HNSW index (400-550 s on two EPYC Zen 4 cores); it is cached.
- lite0: MixVPR on EfficientNet-Lite0 (ImageNet backbone) 512-d at 320x320, the edge model,
  batch 1, 8 and 32, search on 10k and 100k maps of 512-d descriptors, the pipeline.

Images: ../shared/data/nordland64 (real summer/winter frames: database frames seed the maps,
winter frames are the queries) where present, else edgevpr's synthetic street scenes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from edgevpr.bench.artifacts import default_cache_dir
from edgevpr.bench.report import render
from edgevpr.bench.run import BenchOptions, run_bench

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REAL_IMAGES = HERE.parents[1] / "shared" / "data" / "nordland64"

CONFIGS: dict[str, dict] = {
    "r50": {
        "models": ["mixvpr_resnet50_4096"],
        "batches": (1, 8),
        "map_sizes": (10_000,),
        "stages": ("embed", "pipeline"),
    },
    "search4096": {
        "models": ["mixvpr_lite0_4096"],
        "map_sizes": (10_000, 100_000),
        "stages": ("search",),
    },
    "lite0": {
        "models": ["mixvpr_lite0_512"],
        "batches": (1, 8, 32),
        "map_sizes": (10_000, 100_000),
    },
}
QUICK = {"seconds": 0.2, "warmup": 1, "min_iters": 3, "map_sizes": (2_000,), "map_images": 32}


def options_for(name: str, args: argparse.Namespace) -> BenchOptions:
    settings = dict(CONFIGS[name])
    settings.update(seconds=args.seconds, warmup=args.warmup)
    if args.quick:
        settings.update(QUICK)
        settings["batches"] = (1,)
    images = args.images or (REAL_IMAGES if REAL_IMAGES.is_dir() else None)
    return BenchOptions(
        images=str(images) if images else None,
        cache_dir=Path(args.cache_dir) if args.cache_dir else default_cache_dir(),
        **settings,
    )


def write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(CONFIGS), action="append")
    parser.add_argument("--seconds", type=float, default=10.0, help="per row (default 10)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--images", default=None, help="default: ../shared/data/nordland64")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", type=Path, default=None, help=f"default {RESULTS}")
    parser.add_argument(
        "--quick", action="store_true", help="smoke-test the script (tiny; to a temp folder)"
    )
    args = parser.parse_args()
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="edgevpr-bench-quick-")) if args.quick else RESULTS
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(CONFIGS):
        start = time.perf_counter()

        def say(message: str, name: str = name) -> None:
            print(f"[{name}] {message}", file=sys.stderr, flush=True)

        report = run_bench(options_for(name, args), say)
        report.settings["suite_config"] = name
        report.settings["suite_seconds"] = round(time.perf_counter() - start, 1)
        report.settings["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write(args.out / f"bench_{name}.json", render(report, "json"))
        write(args.out / f"bench_{name}.md", render(report, "md"))
        say(f"done in {report.settings['suite_seconds']} s -> {args.out}/bench_{name}.*")


if __name__ == "__main__":
    main()
