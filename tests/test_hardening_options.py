"""Option values out of range, and folders that are not what a command needs: one error
line, a non-zero exit, nothing written. Every case starts from otherwise valid arguments, so
that a value nobody checks shows up as a run that starts (or an internal error)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from corpus import GoodFiles, assert_one_line_refusal, good_files, snapshot


@pytest.fixture(scope="session")
def good(tmp_path_factory: pytest.TempPathFactory) -> GoodFiles:
    return good_files(tmp_path_factory.mktemp("hardening-good"))


Argv = Callable[[GoodFiles, Path, Path], list[object]]  # (good files, train set, work folder)


def train(*options: object) -> Argv:
    """A valid one-epoch run of the tiny model on the tiny set, with ``options`` after it."""
    return lambda g, data, w: [
        "train", "--data", data, "--out", w / "run", "--model", "mixvpr_lite0_512",
        "--size", "32x32", "--no-pretrained", "--batch-places", "2", "--images-per-place", "2",
        "--epochs", "1", "--augment", "none", "--no-progress", *options,
    ]  # fmt: skip


def export(*options: object) -> Argv:
    return lambda g, data, w: [
        "export", g.checkpoint, "--out", w / "out", "--parity-data", g.images, *options
    ]


def bench(*options: object) -> Argv:
    return lambda g, data, w: [
        "bench", g.onnx, "--backend", "ort-cpu", "--stages", "embed", "--seconds", "0",
        "--warmup", "0", "--min-iters", "1", "--map-size", "0", "--cache-dir", w / "cache",
        "--out", w / "report.md", *options,
    ]  # fmt: skip


def query(*options: object) -> Argv:
    return lambda g, data, w: ["query", g.map, g.image, "-m", g.onnx, *options]


def build(*options: object) -> Argv:
    return lambda g, data, w: ["index", "build", g.onnx, g.images, "-o", w / "m.vprmap", *options]


def evaluate(*options: object) -> Argv:
    return lambda g, data, w: ["eval", g.onnx, g.dataset, *options]


def synth(*options: object) -> Argv:
    return lambda g, data, w: ["synth", w / "set", "--places", "2", "--val-places", "0",
                               "--train-places", "0", "--size", "32x32", *options]  # fmt: skip


def previous_export(good: GoodFiles, work: Path) -> Path:
    """An output folder holding an earlier export, which a failed export must leave alone."""
    folder = work / "previous"
    folder.mkdir(exist_ok=True)
    shutil.copy2(good.onnx, folder / "lite0.onnx")
    (folder / "parity.json").write_text('{"artifacts": []}\n')
    return folder


OPTIONS: dict[str, Argv] = {
    # training
    "train --epochs -1": train("--epochs", "-1"),
    "train --batch-places 0": train("--batch-places", "0"),
    "train --batch-places 1": train("--batch-places", "1"),
    "train --images-per-place 1": train("--images-per-place", "1"),
    "train --size 40x40 (not /16)": train("--size", "40x40"),
    "train --size 0x32": train("--size", "0x32"),
    "train --size huge": train("--size", "65536x65536"),
    "train --loss unknown": train("--loss", "contrastive"),
    "train --model unknown": train("--model", "mixvpr_nothing"),
    "train --lr 0": train("--lr", "0"),
    "train --lr nan": train("--lr", "nan"),
    "train --momentum -1": train("--momentum", "-1"),
    "train --weight-decay inf": train("--weight-decay", "inf"),
    "train --warmup-steps -5": train("--warmup-steps", "-5"),
    "train --gamma 0": train("--gamma", "0"),
    "train --gamma 2": train("--gamma", "2"),
    "train --milestones 5,x": train("--milestones", "5,x"),
    "train --milestones -3": train("--milestones", "-3"),
    "train --margin -1": train("--loss", "triplet", "--margin", "-1"),
    "train --sigma 0": train("--loss", "dwt", "--sigma", "0"),
    "train --eps -1": train("--loss", "dwt", "--eps", "-1"),
    "train --val-fraction 1.5": train("--val-fraction", "1.5"),
    "train --radius -25": train("--radius", "-25"),
    "train --place-radius nan": train("--place-radius", "nan"),
    "train --minutes 0": train("--minutes", "0"),
    "train --threads 0": train("--threads", "0"),
    "train --workers -1": train("--workers", "-1"),
    "train --val-batch 0": train("--val-batch", "0"),
    "train --frozen-stages 99": train("--frozen-stages", "99"),
    "train --aggregator unknown": train("--aggregator", "transformer"),
    "train --aggregator-param out_channels=0": train("--aggregator-param", "out_channels=0"),
    "train --aggregator-param no=": train("--aggregator-param", "out_channels="),
    "train --device tpu": train("--device", "tpu"),
    "train --val-split missing": train("--val-split", "nope"),
    # training data
    "train --data missing": lambda g, data, w: train()(g, w / "missing", w),
    "train --data is a file": lambda g, data, w: train()(g, g.checkpoint, w),
    "train --data without train split": lambda g, data, w: train()(g, g.dataset, w),
    "train --val-data missing": train("--val-data", "/nonexistent/edgevpr-set"),
    "train without --data": lambda g, data, w: ["train", "--out", w / "run"],
    "train --resume missing": lambda g, data, w: ["train", "--resume", w / "no" / "last.pt"],
    "train --resume best.pt-like (no state)": lambda g, data, w: [
        "train", "--resume", g.checkpoint, "--out", w / "run",
    ],  # fmt: skip
    # export
    "export --batch 0:8:32": export("--batch", "0:8:32"),
    "export --batch 8:4:2": export("--batch", "8:4:2"),
    "export --batch 1:8": export("--batch", "1:8"),
    "export --batch a:b:c": export("--batch", "a:b:c"),
    "export --batch 1:8:99999": export("--batch", "1:8:99999"),
    "export --opset 11": export("--opset", "11"),
    "export --parity-images 1": export("--parity-images", "1"),
    "export --calib-images 0": export("--calib-images", "0"),
    "export --int8-target 2": export("--int8-target", "2"),
    "export --min-cosine 1.5": export("--min-cosine", "1.5"),
    "export --fp32-max-abs -1": export("--fp32-max-abs", "-1"),
    "export --max-recall-drop -1": export("--max-recall-drop", "-1"),
    "export --fp32-min-cosine nan": export("--fp32-min-cosine", "nan"),
    "export --parity-data missing": lambda g, data, w: [
        "export", g.checkpoint, "--out", w / "out", "--parity-data", w / "missing",
    ],  # fmt: skip
    "export --parity-data empty": lambda g, data, w: [
        "export", g.checkpoint, "--out", w / "out", "--parity-data", w,
    ],  # fmt: skip
    "export over a previous export, --parity-data missing": lambda g, data, w: [
        "export", g.checkpoint, "--out", previous_export(g, w), "--parity-data", w / "missing",
    ],  # fmt: skip
    "export --out is a file": lambda g, data, w: [
        "export", g.checkpoint, "--out", g.map, "--parity-data", g.images,
    ],  # fmt: skip
    # bench
    "bench --map-size -5": bench("--map-size", "-5"),
    "bench --map-size abc": bench("--map-size", "abc"),
    "bench --map-size 1x": bench("--map-size", "1x"),
    "bench --map-size 0.5k": bench("--map-size", "0.5k"),
    "bench --map-size 1": bench("--map-size", "1"),
    "bench --map-size 99999999999": bench("--map-size", "99999999999"),
    "bench --batch 0": bench("--batch", "0"),
    "bench --batch 4096": bench("--batch", "4096"),
    "bench --ef 0": bench("--ef", "0"),
    "bench --hnsw-m 1": bench("--hnsw-m", "1"),
    "bench --seconds -1": bench("--seconds", "-1"),
    "bench --backend unknown": bench("--backend", "tpu"),
    "bench --stages unknown": bench("--stages", "everything"),
    "bench --images missing": bench("--images", "/nonexistent/edgevpr-images"),
    "bench --threads 0": bench("--threads", "0"),
    # query and the index
    "query --k 0": query("--k", "0"),
    "query --k -1": query("--k", "-1"),
    "query --ef 0": query("--ef", "0"),
    "query --prior 1,2": query("--prior", "1,2"),
    "query --prior a,b,c": query("--prior", "a,b,c"),
    "query --prior radius -5": query("--prior", "0,0,-5"),
    "query --prior radius 0": query("--prior", "0,0,0"),
    "query --prior nan": query("--prior", "nan,0,10"),
    "query --prior inf radius": query("--prior", "0,0,inf"),
    "query --prior-latlon lat 91": query("--prior-latlon", "91,0,10"),
    "query --prior and --prior-latlon": query("--prior", "0,0,5", "--prior-latlon", "1,1,5"),
    "query --batch 0": query("--batch", "0"),
    "query --threads 0": query("--threads", "0"),
    "query --provider unknown": query("--provider", "tpu"),
    "query no image": lambda g, data, w: ["query", g.map, "-m", g.onnx],
    "query images folder empty": lambda g, data, w: ["query", g.map, w, "-m", g.onnx],
    "index build --M 1": build("--M", "1"),
    "index build --ef 0": build("--ef", "0"),
    "index build --ef-construction 0": build("--ef-construction", "0"),
    "index build --batch 0": build("--batch", "0"),
    "index build images missing": lambda g, data, w: [
        "index", "build", g.onnx, w / "missing", "-o", w / "m.vprmap",
    ],  # fmt: skip
    "index build images is a file": lambda g, data, w: [
        "index", "build", g.onnx, g.image, "-o", w / "m.vprmap",
    ],  # fmt: skip
    "index build images folder empty": lambda g, data, w: [
        "index", "build", g.onnx, w, "-o", w / "m.vprmap",
    ],  # fmt: skip
    "index build -o over a model": lambda g, data, w: [
        "index", "build", g.onnx, g.images, "-o", g.checkpoint,
    ],  # fmt: skip
    "index build -o is a folder": lambda g, data, w: [
        "index", "build", g.onnx, g.images, "-o", g.images,
    ],  # fmt: skip
    "index remove unknown id": lambda g, data, w: ["index", "remove", g.map, "999"],
    "index remove negative id": lambda g, data, w: ["index", "remove", g.map, "-1"],
    "index remove id abc": lambda g, data, w: ["index", "remove", g.map, "abc"],
    # eval
    "eval --batch 0": evaluate("--batch", "0"),
    "eval --threads 0": evaluate("--threads", "0"),
    "eval --recall-at 0": evaluate("--recall-at", "0"),
    "eval --recall-at a": evaluate("--recall-at", "1,a"),
    "eval --radius -5": evaluate("--radius", "-5"),
    "eval --radius nan": evaluate("--radius", "nan"),
    "eval --split missing": evaluate("--split", "nope"),
    "eval --visualize-queries 0": lambda g, data, w: evaluate(
        "--visualize", w / "grid.png", "--visualize-queries", "0"
    )(g, data, w),
    "eval dataset missing": lambda g, data, w: ["eval", g.onnx, w / "missing"],
    "eval dataset is a file": lambda g, data, w: ["eval", g.onnx, g.image],
    "eval dataset without layout": lambda g, data, w: ["eval", g.onnx, g.images],
    # synth
    "synth --places 0": synth("--places", "0"),
    "synth --train-views 1": synth("--train-places", "2", "--train-views", "1"),
    "synth --size 8x8": synth("--size", "8x8"),
    "synth --spacing 1": synth("--spacing", "1"),
    "synth --spacing nan": synth("--spacing", "nan"),
    "synth --val-places -1": synth("--val-places", "-1"),
    "synth OUT is a file": lambda g, data, w: ["synth", g.checkpoint, "--places", "2"],
    "synth OUT not empty": lambda g, data, w: ["synth", g.images, "--places", "2"],
    "synth OUT under a file": lambda g, data, w: ["synth", g.checkpoint / "set", "--places", "2"],
}


@pytest.mark.parametrize("case", sorted(OPTIONS))
def test_out_of_range_option_is_refused_and_writes_nothing(cli,
    case: str,
    good: GoodFiles,
    tmp_path: Path,

) -> None:
    argv = OPTIONS[case](good, good.train, tmp_path)
    before = snapshot(tmp_path, good.root)
    code, _, err = cli(argv)
    assert_one_line_refusal(code, err, case)
    assert snapshot(tmp_path, good.root) == before, f"{case} changed files on disk"
