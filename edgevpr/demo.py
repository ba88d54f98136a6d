"""``edgevpr demo``: the whole pipeline on built-in data, with nothing to bring.

It runs, in this process, exactly the commands a user would type (each is printed first):
synthesise a small set of places, train MixVPR on the real ImageNet EfficientNet-Lite0
backbone, evaluate it, export ONNX and INT8 with their parity gates, build a place map, ask
it where a query image was taken, localise the test route frame by frame, teach a map
from a recorded drive (a video with its GPX track) and localise a second drive (a ROS 2 bag)
against its own GNSS, measure the exported model through the runtime, and print a latency
table.
"""

from __future__ import annotations

import shlex
import shutil
import time
from pathlib import Path

import click

from edgevpr.core.errors import EdgeVPRError


def synth_step(work: Path) -> list[str]:
    return [
        "synth",
        str(work / "data"),
        "--places",
        "30",
        "--val-places",
        "15",
        "--train-places",
        "60",
        "--seed",
        "0",
        "--overwrite",
    ]


def pipeline_steps(work: Path, minutes: float) -> list[list[str]]:
    """Every step after synthesis (the query step names two of the synthesised images)."""
    data, run, export = work / "data", work / "run", work / "export"
    model, queries = export / "best.onnx", sorted((data / "images/test/queries").glob("*.png"))
    return [
        [
            "train",
            "--data",
            str(data),
            "--model",
            "mixvpr_lite0_512",
            "--size",
            "96x128",
            "--loss",
            "ms",
            "--batch-places",
            "16",
            "--images-per-place",
            "4",
            "--lr",
            "0.01",
            "--warmup-steps",
            "20",
            "--epochs",
            "30",
            "--minutes",
            str(minutes),
            "--seed",
            "0",
            "--out",
            str(run),
            "--no-progress",
        ],
        ["eval", str(run / "best.pt"), str(data)],
        [
            "export",
            str(run / "best.pt"),
            "--int8",
            "--parity-data",
            str(data),
            "--out",
            str(export),
        ],
        ["info", str(model)],
        [
            "index",
            "build",
            str(model),
            str(data / "images/test/database"),
            "--out",
            str(work / "map.evm"),
            "--index",
            "hnswlib",
        ],
        # The same places compressed: 64-d projection, int8 inverted lists, float16 store.
        [
            "index",
            "build",
            str(model),
            str(data / "images/test/database"),
            "--out",
            str(work / "map_small.vprmap"),
            "--pca",
            "64",
            "--store",
            "f16",
            "-q",
        ],
        ["index", "info", str(work / "map_small.vprmap")],
        [
            "query",
            str(work / "map_small.vprmap"),
            "--model",
            str(model),
            "--k",
            "3",
            *(str(q) for q in queries[:2]),
        ],
        # The test queries, one a place in route order, as a stream: a track and its error.
        [
            "localize",
            str(work / "map.evm"),
            str(data / "images/test/queries"),
            "--model",
            str(model),
            "--length",
            "5",
            "--out",
            str(work / "track.jsonl"),
            "--plot",
            str(work / "track.png"),
            "-q",
        ],
        *teach_steps(work, model),
        ["eval", str(model), str(data)],
        ["eval", str(export / "best_int8.onnx"), str(data)],
        # The artifacts export just gated, with the checkpoint as the PyTorch reference row.
        [
            "bench",
            str(run / "best.pt"),
            str(model),
            str(export / "best_int8.onnx"),
            "--batches",
            "1",
            "--seconds",
            "1",
            "--map-size",
            "10k",
        ],
    ]


def teach_steps(work: Path, model: Path) -> list[list[str]]:
    """Teach and repeat: the test places driven once as a video with a GPX track, taught
    into a map; driven again (the query views) as a ROS 2 bag with NavSatFix, localised
    against the map and scored against the bag's own GNSS, the track written as GPX."""
    test, drives = work / "data/images/test", work / "drives"
    first, second = drives / "first.avi", drives / "second"
    return [
        ["record", str(test / "database"), str(first), "--as", "video", "--period", "2",
         "--start", "2026-06-01T10:00:00Z"],
        ["record", str(test / "queries"), str(second), "--as", "bag", "--period", "2",
         "--start", "2026-06-02T10:00:00Z"],
        ["index", "build", str(model), str(first), "--track", str(first.with_suffix(".gpx")),
         "--start-time", "2026-06-01T10:00:00Z", "--out", str(work / "taught.vprmap"), "-q"],
        ["localize", str(work / "taught.vprmap"), str(second), "--model", str(model),
         "--truth", "/gps/fix", "--length", "5", "--out", str(work / "second.gpx"), "-q"],
    ]  # fmt: skip


def run_step(args: list[str]) -> None:
    from edgevpr.cli import cli

    click.secho(f"\n$ edgevpr {shlex.join(args)}", bold=True)
    started = time.perf_counter()
    try:
        cli.main(args=args, prog_name="edgevpr", standalone_mode=False)
    except SystemExit as exc:  # a stage's own exit (a failed gate) ends the demo with it
        if exc.code:
            raise
    click.secho(f"  ({time.perf_counter() - started:.1f} s)", dim=True)


@click.command()
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=Path("edgevpr-demo"),
    show_default=True,
    help="Where the demo writes its data, model and map.",
)
@click.option(
    "--minutes",
    type=click.FloatRange(0.1, 60),
    default=1.5,
    show_default=True,
    help="Training budget.",
)
@click.option("--keep", is_flag=True, help="Reuse an existing --workdir instead of starting anew.")
def demo(workdir: Path, minutes: float, keep: bool) -> None:
    """Run the whole pipeline on built-in synthetic data (a few minutes on 2 CPU cores)."""
    if workdir.exists() and not keep:
        if not (workdir / "data").is_dir() and any(workdir.iterdir()):
            raise EdgeVPRError(f"{workdir} exists and is not a demo folder; pick another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    run_step(synth_step(workdir))
    for args in pipeline_steps(workdir, minutes):
        run_step(args)
    click.secho(
        f"\ndemo finished in {time.perf_counter() - started:.0f} s; outputs in {workdir}", bold=True
    )
