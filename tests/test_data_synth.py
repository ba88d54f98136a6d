"""``edgevpr synth``: deterministic, in the evaluation layout, one positive place per query."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.images import read_image
from edgevpr.data.layout import read_split
from edgevpr.data.places import layout_training_set
from edgevpr.data.synth import SynthConfig, generate

SMALL = {
    "places": 6,
    "val_places": 3,
    "train_places": 5,
    "train_views": 4,
    "height": 48,
    "width": 64,
}


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()




def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    generate(tmp_path / "a", SynthConfig(seed=3, **SMALL))
    generate(tmp_path / "b", SynthConfig(seed=3, **SMALL))
    generate(tmp_path / "c", SynthConfig(seed=4, **SMALL))
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_more_places_keep_the_existing_ones(tmp_path: Path) -> None:
    generate(tmp_path / "few", SynthConfig(seed=1, **SMALL))
    generate(tmp_path / "more", SynthConfig(seed=1, **{**SMALL, "places": 9}))
    few = tmp_path / "few/images/test/queries"
    for path in few.iterdir():
        assert (tmp_path / "more/images/test/queries" / path.name).read_bytes() == path.read_bytes()


def test_layout_sizes_and_ground_truth(tmp_path: Path) -> None:
    generate(tmp_path / "s", SynthConfig(seed=0, **SMALL))
    test = read_split(tmp_path / "s", "test")
    assert (len(test.database), len(test.queries)) == (6, 6)
    assert read_image(test.queries.paths[0]).shape == (48, 64, 3)
    # Each query has exactly its own place's database image within 25 m.
    for q, positives in enumerate(test.positives(25.0)):
        assert len(positives) == 1
        stem = test.queries.paths[q].name.split("@")[7]
        assert test.database.paths[positives[0]].name.split("@")[7][:-4] == stem[:-4]
    train = layout_training_set(tmp_path / "s", val_fraction=0.0).train
    assert train.num_places == 5 and train.images_per_place().tolist() == [4] * 5
    assert (tmp_path / "s/images/val/queries").is_dir()


def test_views_of_a_place_differ_but_resemble_each_other(tmp_path: Path) -> None:
    generate(tmp_path / "s", SynthConfig(seed=0, **SMALL))
    train = layout_training_set(tmp_path / "s", val_fraction=0.0).train
    images = np.stack([read_image(p).astype(np.float32) for p in train.paths])
    thumbs = images.reshape(len(images), 12, 4, 16, 4, 3).mean(axis=(2, 4)).reshape(len(images), -1)
    thumbs = (thumbs - thumbs.mean(1, keepdims=True)) / thumbs.std(1, keepdims=True)
    corr = thumbs @ thumbs.T / thumbs.shape[1]
    same = train.labels[:, None] == train.labels[None, :]
    off_diagonal = ~np.eye(len(images), dtype=bool)
    assert corr[same & off_diagonal].max() < 0.999  # no two views are the same picture
    assert corr[same & off_diagonal].mean() > corr[~same].mean() + 0.1  # but they share a place


def test_cli_writes_and_refuses_to_clobber(cli,
    tmp_path: Path
) -> None:
    out = tmp_path / "demo"
    args = [
        "synth",
        str(out),
        "--places",
        "3",
        "--val-places",
        "0",
        "--train-places",
        "2",
        "--size",
        "32x48",
    ]
    code, stdout, _ = cli(args)
    assert code == 0 and "test 3+3" in stdout
    assert not (out / "images/val").exists()
    code, _, err = cli(args)
    assert code == 2 and "--overwrite" in err and err.count("\n") == 1
    code, _, _ = cli([*args, "--overwrite", "--seed", "5"])
    assert code == 0 and len(list((out / "images/test/database").iterdir())) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    code, _, err = cli(["synth", str(tmp_path / "x"), "--size", "4x4000"])
    assert code == 2 and "out of range" in err


def test_bad_configs_are_refused() -> None:
    with pytest.raises(EdgeVPRError, match="train views"):
        SynthConfig(train_views=1)
    with pytest.raises(EdgeVPRError, match="spacing"):
        SynthConfig(spacing_m=5.0)
