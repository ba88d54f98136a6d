"""FP16 against FP32 on a GPU, on real images: descriptor cosine and Recall@1.

Usage: python benchmarks/gpu_recall.py CHECKPOINT DATASET [--out FILE]

DATASET is in the evaluation layout (test split); a query is right when its first match lies
within 25 m. Each PyTorch CUDA variant of ``edgevpr bench`` (FP32 and FP16 autocast; eager,
channels-last, compiled) embeds the same images; FP32 eager is the reference.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from edgevpr.bench.torch_runner import torch_reference
from edgevpr.data.layout import read_split
from edgevpr.runtime.placemap.place_record import record_for

VARIANTS = [("fp32", "eager"), ("fp16", "eager"), ("fp32", "channels-last"),
            ("fp16", "channels-last"), ("fp32", "compiled"), ("fp16", "compiled")]  # fmt: skip
RADIUS_M = 25.0


def positions(paths: list[Path]) -> np.ndarray:
    return np.array([[r.east, r.north] for r in map(record_for, paths)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--out", type=Path, default=Path("fp16_recall.md"))
    args = parser.parse_args()
    split = read_split(args.dataset, "test")
    database, queries = list(split.database.paths), list(split.queries.paths)
    truth = positions(queries)
    places = positions(database)
    lines = [f"# FP16 against FP32 on {torch.cuda.get_device_name(0)}", "",
             f"`{args.checkpoint.name}`, {len(database)} database and {len(queries)} query "
             f"images of `{args.dataset}`", "",
             "| precision | mode | R@1 | cosine to FP32 eager (min / mean) | s |",
             "|---|---|---|---|---|"]  # fmt: skip
    reference = None
    for precision, mode in VARIANTS:
        started = time.perf_counter()
        embedder = torch_reference(args.checkpoint, "cuda", precision=precision, mode=mode)
        db, q = embedder.embed_paths(database), embedder.embed_paths(queries)
        best = np.argmax(q @ db.T, axis=1)
        recall = 100 * np.mean(np.linalg.norm(places[best] - truth, axis=1) <= RADIUS_M)
        both = np.concatenate([db, q])
        reference = both if reference is None else reference
        cosine = np.sum(both * reference, axis=1)
        seconds = time.perf_counter() - started
        lines.append(f"| {precision} | {mode} | {recall:.1f} | {cosine.min():.5f} / "
                     f"{cosine.mean():.5f} | {seconds:.1f} |")  # fmt: skip
        print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
