"""INT8 vs FP32 ONNX latency (batch 1, CPU) for MixVPR-R50 4096 at 320x320 and Lite0.

Usage: python benchmarks/export_int8.py OUT_DIR [--runs 30]
Both models are exported and quantised with edgevpr's own code and timed through the
runtime Embedder (what ships), FP32 and INT8 runs interleaved so that load from other
processes hits both alike. Prints a Markdown table of medians (p10-p90).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from edgevpr.core.preprocess import preprocess
from edgevpr.export.onnx_export import export_onnx
from edgevpr.export.quantize import Int8Options, quantize_int8
from edgevpr.model import build_model, get_preset
from edgevpr.model.checkpoint import load_checkpoint, save_checkpoint
from edgevpr.runtime.embedder import Embedder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "corridor" / "images" / "test"


def corridor_images(count: int) -> list[np.ndarray]:
    from edgevpr.core.images import list_images, read_image

    files = list_images(DATA / "database")
    picks = np.linspace(0, len(files) - 1, count).round().astype(int)
    return [read_image(files[i]) for i in picks]


def make_models(out: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    r50 = build_model(get_preset("mixvpr_resnet50_4096"))
    # The authors' layout: a raw state dict, loaded back through the official-file path.
    torch.save(r50.state_dict(), out / "r50_official_random.ckpt")
    lite = build_model(get_preset("mixvpr_lite0_512"), pretrained=True)
    save_checkpoint(out / "lite0_320.pt", lite)
    lite128 = build_model(get_preset("mixvpr_lite0_512").with_size(128, 128), pretrained=True)
    save_checkpoint(out / "lite0_128.pt", lite128)
    return {
        "MixVPR-R50 4096 @320 (random weights)": out / "r50_official_random.ckpt",
        "MixVPR-Lite0 512 @320 (ImageNet backbone)": out / "lite0_320.pt",
        "MixVPR-Lite0 512 @128 (ImageNet backbone)": out / "lite0_128.pt",
    }


def timed(embedder: Embedder, batch: np.ndarray) -> float:
    start = time.perf_counter()
    embedder.embed_batch(batch)
    return 1000.0 * (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, ckpt_path in make_models(args.out).items():
        ckpt = load_checkpoint(ckpt_path)
        spec = ckpt.model.config.preprocess
        fp32 = args.out / f"{ckpt_path.stem}.onnx"
        t0 = time.perf_counter()
        export_onnx(ckpt, fp32)
        export_s = time.perf_counter() - t0
        calib = preprocess(corridor_images(32), spec)
        int8 = args.out / f"{ckpt_path.stem}_int8.onnx"
        t0 = time.perf_counter()
        result = quantize_int8(fp32, int8, calib, Int8Options(search=False))
        quant_s = time.perf_counter() - t0
        sessions = {
            p: Embedder(p, providers=["CPUExecutionProvider"], threads=2) for p in (fp32, int8)
        }
        x = calib[:1]
        for emb in sessions.values():
            for _ in range(5):
                timed(emb, x)
        times: dict[Path, list[float]] = {fp32: [], int8: []}
        for _ in range(args.runs):
            for path, emb in sessions.items():
                times[path].append(timed(emb, x))
        med = {p: float(np.median(t)) for p, t in times.items()}
        spread = {p: (np.percentile(t, 10), np.percentile(t, 90)) for p, t in times.items()}
        rows.append(
            f"| {name} | {fp32.stat().st_size / 1e6:.1f} / {int8.stat().st_size / 1e6:.1f} | "
            f"{med[fp32]:.1f} ({spread[fp32][0]:.1f}-{spread[fp32][1]:.1f}) | "
            f"{med[int8]:.1f} ({spread[int8][0]:.1f}-{spread[int8][1]:.1f}) | "
            f"{med[fp32] / med[int8]:.2f}x | {result.cosine_min:.4f} | "
            f"{export_s:.0f} / {quant_s:.0f} |"
        )
        print(rows[-1], flush=True)
    print(
        "| model | size MB FP32 / INT8 | FP32 ms median (p10-p90) | INT8 ms median (p10-p90) "
        "| speed-up | INT8 cos min (32 calib imgs, no float blocks) | export / quantise s |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
