"""``edgevpr eval`` and ``evaluate``: one code path for checkpoints and exports, reproducible
numbers, pictures, and one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.images import read_image
from edgevpr.core.preprocess import preprocess
from edgevpr.data.layout import read_split
from edgevpr.data.synth import SynthConfig, generate
from edgevpr.eval.evaluate import evaluate, load_embedder
from edgevpr.eval.torch_embedder import TorchEmbedder
from edgevpr.model.checkpoint import load_checkpoint, save_checkpoint
from edgevpr.model.config import ModelConfig, default_preprocess
from edgevpr.model.vpr import build_model

RECALL_LINE = re.compile(
    r"^R@1: \d+\.\d  R@5: \d+\.\d  R@10: \d+\.\d  R@20: \d+\.\d"
    r"(  \(R@20: the whole database of \d+ images\))?$"
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval") / "synth"
    generate(
        root, SynthConfig(seed=2, places=10, val_places=0, train_places=0, height=48, width=64)
    )
    return root


def tiny_model():
    config = ModelConfig(
        backbone="efficientnet_lite0",
        aggregator="mixvpr",
        aggregator_params={"mix_depth": 1, "out_channels": 16, "out_rows": 2},
        preprocess=default_preprocess("efficientnet_lite0", 32, 32),
    )
    torch.manual_seed(0)
    return build_model(config, pretrained=True).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, tiny_model())
    return path


class ThumbnailEmbedder:
    """A torch-free stand-in: 4 x 4 grey thumbnails, zero-mean, unit-norm."""

    def embed_paths(self, paths):
        out = []
        for p in paths:
            grey = cv2.resize(read_image(p).mean(axis=2), (4, 4), interpolation=cv2.INTER_AREA)
            v = grey.ravel() - grey.mean()
            out.append(v / (np.linalg.norm(v) + 1e-9))
        return np.array(out, dtype=np.float32)




def test_evaluate_any_embedder(dataset: Path) -> None:
    split = read_split(dataset, "test")
    result = evaluate(ThumbnailEmbedder(), split, radius=25.0, ns=(1, 5), depth=8)
    assert result.predictions.shape == (10, 8) and result.descriptor_dim == 16
    assert all(len(p) == 1 for p in result.positives)
    hits = [int(result.predictions[q, 0] in result.positives[q]) for q in range(10)]
    assert result.recalls.values[1] == pytest.approx(10.0 * sum(hits))
    assert set(result.to_dict()["recall"]) == {"1", "5"}


def test_queries_without_positives_are_misses_beyond_the_database_size(
    tmp_path: Path
) -> None:
    """8 database images, 20 queries of which 4 are far from every one: R@10 is 80.0."""
    rng = np.random.default_rng(0)
    for folder, count, offset in (("database", 8, 0.0), ("queries", 20, 0.0)):
        target = tmp_path / "set/images/test" / folder
        target.mkdir(parents=True)
        for i in range(count):
            north = offset + 10.0 * (i % 8) if i < 16 else 5000.0 + i
            image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            cv2.imwrite(str(target / f"@0@{north:.2f}@@@@@{i:07d}@@@@@@@@.png"), image)
    split = read_split(tmp_path / "set", "test")
    result = evaluate(ThumbnailEmbedder(), split, radius=5.0, ns=(1, 10))
    assert result.recalls.queries_without_positives == 4
    assert result.recalls.values[10] == 80.0
    assert result.to_dict()["recall_n_beyond_database"] == [10]
    assert "R@10: 80.0" in result.recalls.describe()
    assert "whole database of 8 images" in result.recalls.describe()


def test_torch_embedder_uses_the_runtime_preprocessing(dataset: Path, checkpoint: Path) -> None:
    embedder = TorchEmbedder.from_checkpoint(checkpoint, batch_size=3)
    paths = read_split(dataset, "test").queries.paths[:5]
    descriptors = embedder.embed_paths(paths)
    batch = preprocess([read_image(p) for p in paths], embedder.spec)
    with torch.no_grad():
        expected = embedder.model(torch.from_numpy(batch)).numpy()
    assert descriptors.shape == (5, 32)
    assert np.allclose(descriptors, expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-5)


def test_cli_prints_recall_and_reproduces_it(cli,
    dataset: Path, checkpoint: Path
) -> None:
    code, first, err = cli(["eval", str(checkpoint), str(dataset)])
    assert code == 0 and RECALL_LINE.match(first.strip()), first
    assert "10 queries" in err
    code, second, _ = cli(["eval", str(checkpoint), str(dataset), "--batch", "3"])
    assert code == 0 and second == first
    code, out, _ = cli(["eval", str(checkpoint), str(dataset), "--json"])
    report = json.loads(out)
    assert f"R@1: {report['recall']['1']:.1f}" in first
    assert report["queries"] == report["database"] == 10 and report["descriptor_dim"] == 32


def test_cli_writes_curve_and_match_grid(cli,
    dataset: Path, checkpoint: Path, tmp_path: Path
) -> None:
    plot, grid = tmp_path / "curve.png", tmp_path / "out" / "grid.png"
    args = ["eval", str(checkpoint), str(dataset), "--plot", str(plot), "--visualize", str(grid)]
    code, _, _ = cli([*args, "--visualize-queries", "4"])
    assert code == 0
    assert read_image(plot).shape[0] > 200
    picture = read_image(grid)
    # 4 rows of 96 x 128 tiles (the images' 3:4 aspect) with 6-pixel gaps; 6 tiles a row.
    assert picture.shape == (4 * 96 + 3 * 6, 6 * 128 + 18 + 4 * 6, 3)
    assert tuple(picture[1, 1]) == (120, 120, 120)  # the query's grey frame
    frame = picture[1, 128 + 18 + 1]  # the frame of the first match
    assert tuple(frame) in {(40, 180, 40), (220, 40, 40)}


def test_cli_errors_are_one_line(cli,
    dataset: Path, checkpoint: Path, tmp_path: Path
) -> None:
    cases = [
        (["eval", str(checkpoint), str(tmp_path / "none")], "does not exist"),
        (["eval", str(tmp_path / "none.pt"), str(dataset)], "does not exist"),
        (["eval", str(checkpoint), str(dataset), "--split", "val"], "no split 'val'"),
    ]
    weird = tmp_path / "model.bin"
    weird.write_bytes(b"x")
    cases.append((["eval", str(weird), str(dataset)], "cannot tell what model.bin is"))
    for args, message in cases:
        code, out, err = cli(args)
        assert code == 2 and message in err and err.count("\n") == 1 and not out, (args, err)


def test_unreadable_and_unnamed_images_are_named(cli,
    dataset: Path, checkpoint: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    generate(
        broken, SynthConfig(seed=1, places=3, val_places=0, train_places=0, height=32, width=32)
    )
    victim = sorted((broken / "images/test/queries").iterdir())[1]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code, _, err = cli(["eval", str(checkpoint), str(broken)])
    assert code == 2 and victim.name in err and err.count("\n") == 1
    victim.unlink()
    (broken / "images/test/database/snapshot.png").write_bytes(b"")
    code, _, err = cli(["eval", str(checkpoint), str(broken)])
    assert code == 2 and "snapshot.png has no UTM coordinates" in err


def test_load_embedder_dispatches_on_the_suffix(checkpoint: Path, tmp_path: Path) -> None:
    assert isinstance(load_embedder(checkpoint), TorchEmbedder)
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not onnx")
    with pytest.raises(EdgeVPRError) as err:
        load_embedder(fake)  # goes to the runtime, which refuses it in one line
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_an_export_is_measured_like_its_checkpoint(
    dataset: Path, checkpoint: Path, tmp_path: Path
) -> None:
    export = pytest.importorskip("edgevpr.export.onnx_export")
    onnx_path = tmp_path / "tiny.onnx"
    export.export_onnx(load_checkpoint(checkpoint), onnx_path)
    split = read_split(dataset, "test")
    from_torch = evaluate(load_embedder(checkpoint), split)
    from_onnx = evaluate(load_embedder(onnx_path), split)
    assert from_onnx.recalls.values == from_torch.recalls.values
    assert np.array_equal(from_onnx.predictions[:, :3], from_torch.predictions[:, :3])


def test_data_and_eval_import_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import edgevpr.data, edgevpr.data.synth, edgevpr.data.gsv, edgevpr.data.cli\n"
        "import edgevpr.eval.recall, edgevpr.eval.evaluate, edgevpr.eval.cli, edgevpr.eval.plots\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
