"""No code runs from a checkpoint, model or map file, and no path inside a file leads out of
its folder: ONNX external data is refused before ONNX Runtime or onnx sees the file, the
image paths a map records are never opened, a dataframe cannot name images outside its
dataset, and nothing in the source deserialises with code execution."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from corpus import (
    CHECKPOINTS_BAD,
    ONNX_BAD,
    GoodFiles,
    good_files,
    pwned_marker,
)

from edgevpr.core.errors import EdgeVPRError
from edgevpr.runtime.placemap import PlaceMap

REPO = Path(__file__).resolve().parents[1]
ESCAPING = [
    "onnx-external-parent",
    "onnx-external-etc-passwd",
    "onnx-external-absolute",
    "onnx-external-sneaky-parent",
    "onnx-external-symlink-out",
]


@pytest.fixture(scope="session")
def good(tmp_path_factory: pytest.TempPathFactory) -> GoodFiles:
    return good_files(tmp_path_factory.mktemp("hardening-good"))


# ------------------------------------------------------------------ watching what is opened
_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # audit hooks stay for the process; this one records only when asked


@contextmanager
def files_opened() -> Iterator[list[str]]:
    """Every path this process opens meanwhile (open, os.open, numpy's fromfile, ...)."""
    global _OPENED
    _OPENED = []
    try:
        yield _OPENED
    finally:
        _OPENED = None


def opened_any(opened: list[str], targets: list[Path]) -> list[str]:
    real = {os.path.realpath(t) for t in targets}
    return [p for p in opened if os.path.realpath(p) in real]


# ------------------------------------------------------------------ ONNX external data
def model_readers(tmp_path: Path) -> dict[str, Callable[[Path], object]]:
    from edgevpr.bench.artifacts import resolve_one
    from edgevpr.export.pipeline import Exporter, ExportOptions
    from edgevpr.runtime.backends.onnxruntime import read_onnx_metadata
    from edgevpr.runtime.describe import describe_artifact
    from edgevpr.runtime.embedder import Embedder

    return {
        "Embedder": lambda p: Embedder(p, providers=["cpu"]),
        "describe": describe_artifact,
        "metadata": read_onnx_metadata,
        "bench": lambda p: resolve_one(str(p), tmp_path / "cache", lambda _: None),
        "export": lambda p: Exporter(p, ExportOptions(out=tmp_path / "out", int8=True)).run(),
    }


@pytest.mark.parametrize("kind", ESCAPING)
def test_escaping_external_data_is_refused_before_onnx_runtime_or_onnx_reads_it(
    kind: str, good: GoodFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx
    import onnxruntime

    folder = tmp_path / "model"
    model = ONNX_BAD[kind](folder, good.onnx)
    outside = [tmp_path / "outside-secret.bin", Path("/etc/passwd")]

    def no_reader(*args: object, **kwargs: object) -> None:
        raise AssertionError("an ONNX reader was given a model with escaping external data")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_reader)
    monkeypatch.setattr(onnx, "load", no_reader)
    monkeypatch.setattr(onnx, "load_model", no_reader)
    for name, read in model_readers(tmp_path).items():
        with files_opened() as opened, pytest.raises(EdgeVPRError) as refused:
            read(model)
        assert "outside the model's folder" in str(refused.value), name
        assert str(model) in str(refused.value) and "\n" not in str(refused.value)
        assert not opened_any(opened, outside), f"{name} opened {opened_any(opened, outside)}"
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_external_data_may_not_even_name_a_missing_file_outside(
    good: GoodFiles, tmp_path: Path
) -> None:
    """Refused for where it points, not for whether something is there."""
    from corpus import onnx_with_external_data

    from edgevpr.runtime.backends.onnx_external import check_external_data

    for location in ("../nothing-here.bin", "/nonexistent/weights.bin", "..\\..\\x.bin", "C:x"):
        model = onnx_with_external_data(tmp_path / "m", good.onnx, location, "m.onnx")
        with pytest.raises(EdgeVPRError, match="outside the model's folder"):
            check_external_data(model)


def test_external_data_in_a_subfolder_of_the_model_is_allowed(
    good: GoodFiles, tmp_path: Path
) -> None:
    from corpus import onnx_with_external_data

    from edgevpr.runtime.embedder import Embedder

    folder = tmp_path / "m"
    model = onnx_with_external_data(folder, good.onnx, "weights/data.bin", "m.onnx")
    (folder / "weights").mkdir()
    (folder / "m.onnx.weights").rename(folder / "weights" / "data.bin")
    with Embedder(model, providers=["cpu"]) as embedder, Embedder(good.onnx) as reference:
        image = np.full((32, 32, 3), 90, np.uint8)
        assert np.allclose(embedder.embed_image(image), reference.embed_image(image), atol=1e-6)


# ------------------------------------------------------------------ paths recorded in a map
def hostile_map(good: GoodFiles, folder: Path, secret: Path) -> Path:
    """The good map, with records naming files outside its folder (and the secret)."""
    placemap = PlaceMap.load(good.map)
    records = placemap.records()
    names = ["../../../../../../etc/passwd", str(secret), "../secret.png", "/dev/zero"]
    target = PlaceMap.create(placemap.descriptor_dim, placemap.fingerprint)
    target.add(
        placemap.descriptors(placemap.ids()),
        [
            {"path": names[i % len(names)], "east": r.east, "north": r.north}
            for i, r in enumerate(records)
        ],
    )
    folder.mkdir(parents=True, exist_ok=True)
    target.save(folder / "hostile.vprmap")
    return folder / "hostile.vprmap"


def test_image_paths_recorded_in_a_map_are_never_opened(cli,
    good: GoodFiles, tmp_path: Path
) -> None:
    from edgevpr.runtime.embedder import Embedder
    from edgevpr.runtime.recognizer import Recognizer

    secret = tmp_path / "secret.png"
    shutil.copy2(good.image, secret)  # a real image: opening it would "work"
    hostile = hostile_map(good, tmp_path / "maps", secret)
    named = [Path("/etc/passwd"), secret, Path("/dev/zero")]
    with files_opened() as opened:
        code, out, err = cli(["query", hostile, good.image, "-m", good.onnx, "--json"])
        assert code == 0, err
        assert json.loads(out)[0]["best"]["path"] in {"../../../../../../etc/passwd", str(secret)}
        for argv in (
            ["index", "info", hostile],
            ["info", hostile],
            ["index", "add", hostile, good.image, "-q", "-m", good.onnx],
            ["index", "remove", hostile, "0"],
        ):
            code, _, err = cli(argv)
            assert code == 0, (argv, err)
        recognizer = Recognizer(Embedder(good.onnx), PlaceMap.load(hostile))
        best = recognizer.recognize(good.image).best
        assert best is not None and best.record.path is not None
    assert not opened_any(opened, named), f"opened {opened_any(opened, named)}"
    assert good.image.as_posix() in opened or str(good.image) in opened  # the watch works


# ------------------------------------------------------------------ datasets
def test_a_gsv_dataframe_cannot_name_images_outside_the_dataset(tmp_path: Path) -> None:
    from edgevpr.data.gsv import read_gsv_cities

    root = tmp_path / "gsv"
    (root / "Dataframes").mkdir(parents=True)
    (root / "Images" / "Town").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    header = "place_id,year,month,northdeg,city_id,lat,lon,panoid\n"
    for city_id, panoid in (("../../outside", "p"), ("Town", "x/../../../../outside/p")):
        (root / "Dataframes" / "Town.csv").write_text(
            header + "".join(f"{i},2020,1,0,{city_id},1.0,2.0,{panoid}\n" for i in range(4))
        )
        with files_opened() as opened, pytest.raises(EdgeVPRError, match="out of") as refused:
            read_gsv_cities(root, min_images=1)
        assert "line 2" in str(refused.value)
        assert not [p for p in opened if "outside" in p]


# ------------------------------------------------------------------ no code from files
CODE_RUNNING = [k for k in CHECKPOINTS_BAD if k.startswith("ckpt-runs-code")]


@pytest.mark.parametrize("kind", CODE_RUNNING)
def test_no_checkpoint_loader_runs_code(kind: str, good: GoodFiles, tmp_path: Path) -> None:
    from edgevpr.bench.artifacts import resolve_one
    from edgevpr.eval.torch_embedder import TorchEmbedder
    from edgevpr.model.checkpoint import load_checkpoint, read_safely
    from edgevpr.train.trainer import resumed_config

    folder = tmp_path / "in"
    folder.mkdir()
    evil = CHECKPOINTS_BAD[kind](folder, good.checkpoint)
    loaders: dict[str, Callable[[Path], object]] = {
        "read_safely": read_safely,
        "load_checkpoint": load_checkpoint,
        "resume": lambda p: resumed_config(p, {}),
        "eval": TorchEmbedder.from_checkpoint,
        "bench": lambda p: resolve_one(str(p), tmp_path / "cache", lambda _: None),
    }
    for name, load in loaders.items():
        with pytest.raises(EdgeVPRError, match="would run code"):
            load(evil)
        assert not pwned_marker(folder).exists(), f"{name} ran the checkpoint's code"


def test_a_model_cannot_bring_its_own_operators(good: GoodFiles, tmp_path: Path) -> None:
    from edgevpr.runtime.embedder import Embedder

    model = ONNX_BAD["onnx-custom-op"](tmp_path, good.onnx)
    with pytest.raises(EdgeVPRError, match="cannot load ONNX model"):
        Embedder(model)


UNSAFE = {
    r"\bpickle\.loads?\(": "pickle.load",
    r"\btorch\.load\((?![^)]*weights_only=True)": "torch.load without weights_only=True",
    r"allow_pickle\s*=\s*True": "np.load(allow_pickle=True)",
    r"(?<![.\w])(eval|exec)\(": "eval/exec",
    r"\byaml\.(unsafe_)?load\(": "yaml.load",
    r"\bmarshal\.loads?\(|\bshelve\.": "marshal/shelve",
    r"shell\s*=\s*True": "a shell",
    r"register_custom_ops_library|ctypes\.CDLL|cdll\.LoadLibrary": "a native library by name",
}


def test_the_source_has_no_deserialiser_that_runs_code() -> None:
    found = []
    for path in sorted((REPO / "edgevpr").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            for pattern, what in UNSAFE.items():
                if re.search(pattern, code):
                    found.append(f"{path.relative_to(REPO)}:{number}: {what}: {line.strip()}")
    assert found == []
