"""Every command that takes files gets every bad file it could get (tests/corpus.py): one
error line on stderr, a non-zero exit, no traceback, and nothing on disk changed - the inputs
keep their bytes and times, and an output named on the command line is not created.

The commands run in-process through ``edgevpr.cli.main`` (fast); a few run as real
subprocesses to prove the same holds for the installed entry point.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from corpus import (
    CHECKPOINTS_BAD,
    ENGINES_BAD,
    IMAGES_BAD,
    IMAGES_OK,
    MAPS_BAD,
    ONNX_BAD,
    ONNX_OK,
    GoodFiles,
    assert_one_line_refusal,
    good_files,
    pwned_marker,
    snapshot,
)

from edgevpr.runtime.placemap import PlaceMap

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def good(tmp_path_factory: pytest.TempPathFactory) -> GoodFiles:
    return good_files(tmp_path_factory.mktemp("hardening-good"))


# ------------------------------------------------------------------ commands and their slots
@dataclass(frozen=True)
class Slot:
    """A command with one argument left open for the bad input, and the outputs it names."""

    argv: Callable[[Path, GoodFiles, Path], list[object]]  # (bad, good, work folder)
    outputs: tuple[str, ...] = ()  # paths under the work folder that must not appear


def copied_map(good: GoodFiles, work: Path) -> Path:
    target = work / "mine.vprmap"
    if not target.exists():
        shutil.copy2(good.map, target)
    return target


BENCH_QUICK = [
    "--backend", "ort-cpu", "--batch", "1", "--map-size", "0", "--stages", "embed",
    "--seconds", "0", "--warmup", "0", "--min-iters", "1",
]  # fmt: skip

MODEL_SLOTS: dict[str, Slot] = {
    "info": Slot(lambda bad, g, w: ["info", bad]),
    "eval": Slot(
        lambda bad, g, w: ["eval", bad, g.dataset, "--plot", w / "out" / "curve.png"],
        ("out",),
    ),
    "export": Slot(
        lambda bad, g, w: ["export", bad, "--out", w / "out", "--parity-data", g.images],
        ("out",),
    ),
    "index build": Slot(
        lambda bad, g, w: ["index", "build", bad, g.images, "-q", "-o", w / "out" / "m.vprmap"],
        ("out",),
    ),
    "index add": Slot(
        lambda bad, g, w: ["index", "add", copied_map(g, w), g.image, "-q", "-m", bad]
    ),
    "query": Slot(lambda bad, g, w: ["query", g.map, g.image, "-m", bad]),
    "bench": Slot(
        lambda bad, g, w: [
            "bench", bad, *BENCH_QUICK, "--cache-dir", w / "cache", "--out", w / "report.md",
        ],
        ("cache", "report.md"),
    ),  # fmt: skip
}

MAP_SLOTS: dict[str, Slot] = {
    "info": Slot(lambda bad, g, w: ["info", bad]),
    "index info": Slot(lambda bad, g, w: ["index", "info", bad]),
    "index add": Slot(lambda bad, g, w: ["index", "add", bad, g.image, "-q", "-m", g.onnx]),
    "index remove": Slot(lambda bad, g, w: ["index", "remove", bad, "0"]),
    "query": Slot(lambda bad, g, w: ["query", bad, g.image, "-m", g.onnx]),
}


def dataset_with(bad: Path, good: GoodFiles, work: Path) -> Path:
    """The good dataset with the bad image among its queries."""
    root = work / "dataset"
    if not root.exists():
        shutil.copytree(good.dataset, root)
    queries = root / "images" / "test" / "queries"
    target = queries / f"@0@5.00@@@@@9999999@@@@@@@@{bad.suffix}"
    if bad.is_dir():
        target.mkdir()
    elif bad.exists():
        shutil.copy2(bad, target)
    return root


def images_with(bad: Path, good: GoodFiles, work: Path) -> Path:
    """The good image folder with the bad image among them."""
    folder = work / "images"
    if not folder.exists():
        shutil.copytree(good.images, folder)
    if bad.is_file():
        shutil.copy2(bad, folder / f"zz-{bad.name}")
    return folder


IMAGE_SLOTS: dict[str, Slot] = {
    "index add": Slot(
        lambda bad, g, w: ["index", "add", copied_map(g, w), bad, "-q", "-m", g.onnx]
    ),
    "query": Slot(lambda bad, g, w: ["query", g.map, g.image, bad, "-m", g.onnx]),
    "index build": Slot(
        lambda bad, g, w: [
            "index", "build", g.onnx, images_with(bad, g, w), "-q", "-o", w / "o.map",
        ],
        ("o.map",),
    ),  # fmt: skip
    "eval": Slot(lambda bad, g, w: ["eval", g.onnx, dataset_with(bad, g, w)]),
}

CHECKPOINT_SLOTS: dict[str, Slot] = {
    "info": MODEL_SLOTS["info"],
    "eval": MODEL_SLOTS["eval"],
    "export": MODEL_SLOTS["export"],
    "bench": MODEL_SLOTS["bench"],
    "train --resume": Slot(
        lambda bad, g, w: ["train", "--resume", bad, "--out", w / "run", "--no-progress"],
        ("run",),
    ),
    # the runtime takes no checkpoints: refused by name, never unpickled
    "query": MODEL_SLOTS["query"],
    "index build": MODEL_SLOTS["index build"],
}

ENGINE_SLOTS = {name: MODEL_SLOTS[name] for name in ("info", "eval", "query", "bench")}

# Folder-taking commands (images in a folder skip non-files, so a missing image or a folder
# named like one is not an input there: those kinds go to the path-taking slots only).
FILE_ONLY_IMAGE_KINDS = sorted(k for k in IMAGES_BAD if k not in ("missing", "directory"))


# A map of another model is a good map: only the commands that pair it with the model refuse it.
MAP_FOR_ANOTHER_MODEL = {"map-other-model", "map-wrong-dimension"}
# ``info`` describes any ONNX model it can open; when the edgevpr metadata is missing or does
# not fit the graph it says so (exit 0) instead of failing: see test_info_names_what_is_wrong.
ONNX_INFO_DESCRIBES = {
    "onnx-foreign",
    "onnx-no-metadata",
    "onnx-broken-preprocess-json",
    "onnx-preprocess-not-an-object",
    "onnx-preprocess-wrong-size",
    "onnx-preprocess-wrong-types",
    "onnx-model-config-not-an-object",
    "onnx-newer-metadata",
    "onnx-wrong-descriptor-size",
    "onnx-negative-descriptor-size",
    "onnx-fingerprint-is-a-path",
}


def cases() -> list:
    params = []
    for kind in sorted(ONNX_BAD):
        for command in MODEL_SLOTS:
            if command == "info" and kind in ONNX_INFO_DESCRIBES:
                continue
            params.append(pytest.param(command, "onnx", kind, id=f"{command}-{kind}"))
    for kind in sorted(MAPS_BAD):
        for command in MAP_SLOTS:
            if kind in MAP_FOR_ANOTHER_MODEL and command not in ("query", "index add"):
                continue
            params.append(pytest.param(command, "map", kind, id=f"{command}-{kind}"))
    for kind in sorted(CHECKPOINTS_BAD):
        for command in CHECKPOINT_SLOTS:
            params.append(pytest.param(command, "checkpoint", kind, id=f"{command}-{kind}"))
    for kind in sorted(ENGINES_BAD):
        for command in ENGINE_SLOTS:
            params.append(pytest.param(command, "engine", kind, id=f"{command}-{kind}"))
    for kind in sorted(IMAGES_BAD):
        for command in IMAGE_SLOTS:
            if command in ("index build", "eval") and kind not in FILE_ONLY_IMAGE_KINDS:
                continue
            params.append(pytest.param(command, "image", kind, id=f"{command}-{kind}"))
    return params


SLOTS = {
    "onnx": (MODEL_SLOTS, ONNX_BAD),
    "map": (MAP_SLOTS, MAPS_BAD),
    "checkpoint": (CHECKPOINT_SLOTS, CHECKPOINTS_BAD),
    "engine": (ENGINE_SLOTS, ENGINES_BAD),
    "image": (IMAGE_SLOTS, IMAGES_BAD),
}


@pytest.mark.parametrize("command, family, kind", cases())
def test_bad_file_is_refused_in_one_line_and_changes_nothing(cli,
    command: str,
    family: str,
    kind: str,
    good: GoodFiles,
    tmp_path: Path,

) -> None:
    slots, makers = SLOTS[family]
    slot = slots[command]
    inputs = tmp_path / "in"
    inputs.mkdir()
    if family in ("engine", "image"):
        bad = makers[kind](inputs)
    else:
        bad = makers[kind](inputs, good.onnx if family == "onnx" else _source(family, good))
    argv = slot.argv(bad, good, tmp_path)
    before = snapshot(tmp_path, good.root)
    code, out, err = cli(argv)
    assert_one_line_refusal(code, err, f"edgevpr {command} <{kind}>")
    assert snapshot(tmp_path, good.root) == before, f"{command} <{kind}> changed files on disk"
    for output in slot.outputs:
        assert not (tmp_path / output).exists()
    assert not pwned_marker(inputs).exists(), "code from the file ran"


def _source(family: str, good: GoodFiles) -> Path:
    return {"map": good.map, "checkpoint": good.checkpoint}[family]


# ------------------------------------------------------------------ the other side of the line
@pytest.mark.parametrize("kind", sorted(ONNX_INFO_DESCRIBES))
def test_info_names_what_is_wrong_with_an_onnx_model(cli,
    kind: str, good: GoodFiles, tmp_path: Path
) -> None:
    """``info`` is for looking at any ONNX file: it describes what it can and names the
    problem with the edgevpr metadata instead of failing (every other command refuses)."""
    bad = ONNX_BAD[kind](tmp_path, good.onnx)
    code, out, err = cli(["info", bad, "--json"])
    assert code == 0 and err == ""
    described = json.loads(out)
    assert described["kind"] == "onnx model" and "input" in described
    assert described["edgevpr_metadata"].startswith("missing or unreadable: ")
    assert "fingerprint" not in described


def test_awkward_but_valid_images_are_recognised(cli,
    good: GoodFiles, tmp_path: Path
) -> None:
    """16-bit, RGBA, grey, palette, mislabelled, 1x1 and BMP images are queried and added."""
    images = [IMAGES_OK[kind](tmp_path) for kind in sorted(IMAGES_OK)]
    code, out, err = cli(["query", good.map, *images, "-m", good.onnx, "--json"])
    assert code == 0, err
    results = json.loads(out)
    assert [r["query"] for r in results] == [str(p) for p in images]
    assert all(len(r["matches"]) == 5 for r in results)
    target = tmp_path / "mine.vprmap"
    shutil.copy2(good.map, target)
    code, _, err = cli(["index", "add", target, *images, "-q", "-m", good.onnx])
    assert code == 0, err
    assert len(PlaceMap.load(target)) == len(PlaceMap.load(good.map)) + len(images)


def test_onnx_with_external_data_inside_its_folder_works(cli,
    good: GoodFiles, tmp_path: Path
) -> None:
    """External data beside the model (how ONNX stores models over 2 GB) is allowed."""
    model = ONNX_OK["onnx-external-inside"](tmp_path, good.onnx)
    assert model.stat().st_size < good.onnx.stat().st_size // 10  # the weights are outside
    code, out, err = cli(["info", model, "--json"])
    assert code == 0, err
    assert json.loads(out)["descriptor_dim"] == 512
    code, out, err = cli(["query", good.map, good.image, "-m", model, "--json"])
    assert code == 0, err
    assert json.loads(out)[0]["best"]["path"] == good.image.name


def test_training_on_a_set_with_a_broken_image_writes_nothing(cli,
    good: GoodFiles, tmp_path: Path
) -> None:
    data = tmp_path / "set"
    shutil.copytree(good.train, data)
    victim = sorted((data / "images" / "train" / "database").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:60])  # every place has two views: both are drawn
    before = snapshot(tmp_path, good.root)
    code, _, err = cli([
        "train", "--data", data, "--out", tmp_path / "run", "--model", "mixvpr_lite0_512",
        "--size", "32x32", "--no-pretrained", "--batch-places", "2", "--images-per-place", "2",
        "--epochs", "1", "--augment", "none", "--no-progress",
    ])  # fmt: skip
    assert_one_line_refusal(code, err, "train on a broken image")
    assert victim.name in err
    assert snapshot(tmp_path, good.root) == before
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ the real entry point
SUBPROCESS_CASES = [
    ("query", "map", "map-truncated-half"),
    ("index build", "onnx", "onnx-external-etc-passwd"),
    ("info", "checkpoint", "ckpt-runs-code-torch"),
    ("export", "checkpoint", "ckpt-torn-zip"),
    ("eval", "image", "truncated-jpeg"),
]


@pytest.mark.parametrize("command, family, kind", SUBPROCESS_CASES)
def test_bad_file_through_the_installed_entry_point(
    command: str, family: str, kind: str, good: GoodFiles, tmp_path: Path
) -> None:
    slots, makers = SLOTS[family]
    inputs = tmp_path / "in"
    inputs.mkdir()
    if family == "image":
        bad = makers[kind](inputs)
    else:
        bad = makers[kind](inputs, good.onnx if family == "onnx" else _source(family, good))
    argv = [str(a) for a in slots[command].argv(bad, good, tmp_path)]
    before = snapshot(tmp_path, good.root)
    done = subprocess.run(
        [sys.executable, "-m", "edgevpr.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert snapshot(tmp_path, good.root) == before
    assert not pwned_marker(inputs).exists()
