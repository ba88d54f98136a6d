"""MixVPR and its successors side by side: size, compute, CPU latency and export parity.

Usage: python benchmarks/models.py [--out benchmarks/results/models.md] [--models a,b]
       [--runs 10] [--parity-data ../shared/data/corridor]

For each preset (MixVPR-R50 4096, BoQ-R50 16384, BoQ-DINOv2 12288, DINOv2-SALAD 8448), with
freshly initialised weights (the published ones cannot be downloaded here; parity and
latency do not depend on them): parameters, GFLOP per image (torch's counter), the export
through ``edgevpr export`` with its gates (FP32 ONNX, and INT8 for CPUs calibrated on real
images), and ONNX Runtime CPU latency at batch 1 (median of ``--runs`` calls after two
warm-up calls, the model on a preprocessed real image, in a fresh process) for FP32 and
INT8, through the runtime.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgevpr.bench.machine import describe_cpu, machine_info
from edgevpr.core.images import read_image
from edgevpr.core.preprocess import preprocess
from edgevpr.export.pipeline import Exporter, ExportOptions
from edgevpr.export.quantize import Int8Options
from edgevpr.model import build_model
from edgevpr.model.checkpoint import save_checkpoint
from edgevpr.model.vpr import flops_per_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MODELS = ["mixvpr_resnet50_4096", "boq_resnet50_16384", "boq_dinov2_12288",
          "salad_dinov2_8448"]  # fmt: skip


LATENCY = """
import statistics, sys, time
import numpy as np
from edgevpr.runtime import Embedder
batch = np.load(sys.argv[2])
with Embedder(sys.argv[1], providers=["cpu"], batch_size=1) as embedder:
    for _ in range(2):
        embedder.embed_batch(batch)
    times = []
    for _ in range(int(sys.argv[3])):
        started = time.perf_counter()
        embedder.embed_batch(batch)
        times.append(1000 * (time.perf_counter() - started))
print(statistics.median(times))
"""


def latency_ms(path: Path, batch: np.ndarray, runs: int) -> float:
    """Median batch-1 latency, in a fresh process: torch's worker threads, still spinning
    after an export in this one, would slow ONNX Runtime down."""
    saved = path.with_suffix(".batch.npy")
    np.save(saved, batch)
    found = subprocess.run([sys.executable, "-c", LATENCY, str(path), str(saved), str(runs)],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return float(found.stdout.strip().splitlines()[-1])


def measure(name: str, work: Path, data: Path, runs: int, search: bool) -> list[str]:
    torch.manual_seed(0)
    model = build_model(name).eval()
    params = sum(p.numel() for p in model.parameters())
    gflop = flops_per_image(model) / 1e9
    save_checkpoint(work / f"{name}.pt", model)
    options = ExportOptions(out=work / name, int8=True, parity_data=data, parity_images=16,
                            calibration_images=16,
                            int8_options=Int8Options(search=search))  # fmt: skip
    report = Exporter(work / f"{name}.pt", options, say=lambda m: print(f"  {m}")).run()
    rows = {r.format: r for r in report.artifacts}
    fp32, int8 = rows["ONNX"], rows.get("ONNX INT8")
    spec = model.config.preprocess
    image = read_image(sorted((data / "images" / "test" / "queries").iterdir())[0])
    batch = preprocess([image], spec)
    size = f"{spec.height}x{spec.width}"
    parity = f"{fp32.metrics.cosine_min:.6f} / {fp32.metrics.max_abs:.1e} ({fp32.status})"
    cells = [name, f"{model.descriptor_dim}", size, f"{params / 1e6:.1f}", f"{gflop:.1f}",
             f"{latency_ms(fp32.file, batch, runs):.0f}", parity]  # fmt: skip
    if int8 is not None and int8.file is not None:
        cells += [f"{latency_ms(int8.file, batch, runs):.0f}",
                  f"{int8.metrics.cosine_min:.4f} ({int8.status})"]  # fmt: skip
    else:
        cells += ["-", f"not written: {'; '.join(int8.failures) if int8 else 'no row'}"]
    print(" | ".join(cells), flush=True)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/models.md"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--parity-data", type=Path, default=SHARED / "corridor")
    parser.add_argument("--no-int8-search", action="store_true",
                        help="INT8 without the search for blocks to keep in float (each trial "
                             "quantises and runs the model again: long for a ViT)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="edgevpr-models-"))
    header = ["model", "dim", "input", "params M", "GFLOP", "ORT FP32 ms",
              "FP32 parity: cos min / max abs (gate)", "ORT INT8 ms",
              "INT8 cos min (gate)"]  # fmt: skip
    store = args.out.with_suffix(".json")
    rows = json.loads(store.read_text()) if store.exists() else {}
    flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
             for k, v in vars(args).items() if k != "out" and v is not False]  # fmt: skip
    command = "python benchmarks/models.py " + " ".join(flags)
    for name in args.models.split(","):
        cells = measure(name, work, args.parity_data, args.runs, not args.no_int8_search)
        rows[name] = {"cells": cells, "command": command, "date": time.strftime("%Y-%m-%d")}
        store.write_text(json.dumps(rows, indent=1))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row["cells"]) + " |" for row in rows.values()]
    commands = sorted({f"{row['date']}: `{row['command']}`" for row in rows.values()})
    text = "\n".join([
        "# MixVPR and its successors: size, compute, CPU latency, export parity", "",
        __doc__, "", f"{describe_cpu(machine_info())}:", "", *[f"- {c}" for c in commands],
        "", *lines, ""])  # fmt: skip
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
