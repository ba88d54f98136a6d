"""The benchmark's PyTorch variants (channels-last, FP16 autocast, compiled) compute the same
descriptors as the eager reference; every PyTorch backend row names a variant the runner
knows. CUDA rows run only on a GPU (benchmarks/gpu_check.sh); channels-last runs on a CPU too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgevpr.bench.backends import BACKENDS, CHECKPOINT

MODES = {"eager", "channels-last", "compiled"}


def test_every_pytorch_row_names_a_known_variant() -> None:
    rows = [b for b in BACKENDS.values() if b.artifact == CHECKPOINT]
    assert {b.torch_mode for b in rows} == MODES
    assert {b.precision for b in rows if b.device == "cuda"} == {"fp32", "fp16"}
    assert all(b.torch_mode == "eager" for b in BACKENDS.values() if b.artifact != CHECKPOINT)


def test_channels_last_embeds_like_eager(exported: dict[str, Path]) -> None:
    pytest.importorskip("torch")
    from edgevpr.bench.torch_runner import torch_reference

    eager = torch_reference(exported["checkpoint"])
    nhwc = torch_reference(exported["checkpoint"], mode="channels-last")
    spec = eager.spec
    batch = np.random.default_rng(0).standard_normal((3, 3, spec.height, spec.width))
    a, b = eager.embed_batch(batch.astype(np.float32)), nhwc.embed_batch(batch.astype(np.float32))
    assert np.sum(a * b, axis=1).min() > 0.9999
