"""``edgevpr eval MODEL DATASET_DIR``: Recall@N of a checkpoint or an exported model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from edgevpr.core.errors import EdgeVPRError
from edgevpr.data.cli import SIZE
from edgevpr.data.layout import DEFAULT_RADIUS_M, read_split
from edgevpr.eval.evaluate import EVAL_BATCH, Evaluation, load_embedder
from edgevpr.eval.evaluate import evaluate as run_evaluation
from edgevpr.eval.recall import DEFAULT_NS
from edgevpr.eval.sequence import SequenceResult, sequence_evaluation, single_frame_pr
from edgevpr.runtime.localize.calibration import Calibration, PRCurve, sidecar
from edgevpr.runtime.localize.localizer import ROUTE

PLOT_MAX_N = 25
GRID_K = 5


def parse_ns(text: str) -> tuple[int, ...]:
    try:
        ns = tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a list like 1,5,10,20") from None
    if not ns or ns[0] < 1:
        raise click.BadParameter("every N must be >= 1")
    return ns


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True, help="images/<split> to use.")
@click.option(
    "--radius",
    default=DEFAULT_RADIUS_M,
    show_default=True,
    help="Metres within which a database image is a true match.",
)
@click.option(
    "--recall-at",
    "recall_at",
    default=",".join(map(str, DEFAULT_NS)),
    show_default=True,
    help="Comma-separated N for Recall@N.",
)
@click.option("--batch", default=EVAL_BATCH, show_default=True, help="Images embedded per batch.")
@click.option("--threads", type=int, help="CPU threads for inference (default: all cores).")
@click.option(
    "--size",
    type=SIZE,
    default=None,
    help="Input HxW of an official MixVPR checkpoint with a non-square grid.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.option("--plot", type=click.Path(path_type=Path), help="Write the Recall@N curve (PNG).")
@click.option(
    "--visualize",
    type=click.Path(path_type=Path),
    help="Write a grid of queries and their top-5 matches (PNG).",
)
@click.option(
    "--pr",
    is_flag=True,
    help="Precision-recall of accepted matches: AUC (average precision) and R@100P, for "
    "single frames and, with --sequence, sequences; with --plot, the curves too.",
)
@click.option(
    "--sequence",
    "sequence_length",
    type=click.IntRange(1, 1000),
    default=None,
    help="Also match sequences of L frames (the runtime's route tracker, queries and "
    "database in travel order) and report their Recall@N.",
)
@click.option(
    "--threshold-at-precision",
    "precision",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=None,
    help="Write the sequence margin that reaches this precision, and the measured curve, as "
    "the calibration a Localizer uses by default (needs --sequence and --calibration).",
)
@click.option(
    "--calibration",
    "calibration_out",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write it: a place map (written beside it as MAP.localizer.json) or a "
    ".json file.",
)
@click.option(
    "--visualize-queries",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Rows in the --visualize grid.",
)
def evaluate(
    model: Path,
    dataset_dir: Path,
    split: str,
    radius: float,
    recall_at: str,
    batch: int,
    threads: int | None,
    size: tuple[int, int] | None,
    as_json: bool,
    plot: Path | None,
    visualize: Path | None,
    pr: bool,
    sequence_length: int | None,
    precision: float | None,
    calibration_out: Path | None,
    visualize_queries: int,
) -> None:
    """Recall@N of MODEL (checkpoint, .onnx or .engine) on DATASET_DIR/images/<split>.

    Positives are database images within --radius metres of the query (UTM from the file
    names). Exact search; prints e.g. 'R@1: 91.2  R@5: 95.0  R@10: 96.4  R@20: 97.3'.
    """
    ns = parse_ns(recall_at)
    if batch < 1:
        raise click.BadParameter("--batch must be >= 1")
    if precision is not None and (sequence_length is None or calibration_out is None):
        raise EdgeVPRError("--threshold-at-precision needs --sequence L and --calibration OUT")
    data = read_split(dataset_dir, split)
    embedder = load_embedder(model, batch_size=batch, size=size, threads=threads)
    if precision is not None and calibration_out is not None:
        check_calibration_target(calibration_out, embedder.fingerprint)
    depth = max(PLOT_MAX_N if plot else 0, GRID_K if visualize else 0, 2 if pr else 0)
    result = run_evaluation(embedder, data, radius=radius, ns=ns, depth=depth)
    analysis = analyse(result, ns, pr, sequence_length)
    if precision is not None and calibration_out is not None:
        write_calibration(analysis, precision, embedder, calibration_out, data.name)
    if plot:
        from edgevpr.eval.plots import plot_recall_curve

        curves = analysis.curves() if pr else None
        plot_recall_curve({model.name: result}, plot, max_n=PLOT_MAX_N, pr_curves=curves)
    if visualize:
        from edgevpr.eval.plots import visualize_matches

        visualize_matches(result, visualize, num_queries=visualize_queries, k=GRID_K)
    if as_json:
        click.echo(
            json.dumps({"model": str(model), **result.to_dict(), **analysis.to_dict()}, indent=2)
        )
        return
    click.echo(
        f"{data.name}: {len(data.queries)} queries, {len(data.database)} database images, "
        f"{result.descriptor_dim}-d, radius {radius:g} m; embedded in {result.embed_seconds:.1f} s",
        err=True,
    )
    if result.recalls.queries_without_positives:
        click.echo(
            f"note: {result.recalls.queries_without_positives} queries have no database image "
            f"within {radius:g} m and count as misses",
            err=True,
        )
    click.echo(result.recalls.describe())
    for line in analysis.lines():
        click.echo(line)


@dataclass
class Analysis:
    """What --pr and --sequence add to an evaluation."""

    single: PRCurve | None = None
    sequence: SequenceResult | None = None

    def curves(self) -> dict[str, PRCurve]:
        found = {"single frame": self.single} if self.single else {}
        if self.sequence is not None:
            found[f"sequence of {self.sequence.length}"] = self.sequence.curve
        return found

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.single is not None:
            data["pr_single"] = self.single.summary()
        if self.sequence is not None:
            data["sequence"] = self.sequence.to_dict()
        return data

    def lines(self) -> list[str]:
        lines = []
        if self.sequence is not None:
            lines.append(f"sequence of {self.sequence.length}: {self.sequence.recalls.describe()}")
        for label, curve in self.curves().items():
            lines.append(
                f"{label}: AP {curve.average_precision:.3f}  "
                f"R@100P {100 * curve.recall_at_full_precision:.1f}"
            )
        return lines


def analyse(result: Evaluation, ns: tuple[int, ...], pr: bool, length: int | None) -> Analysis:
    analysis = Analysis()
    if pr:
        analysis.single = single_frame_pr(result)[0]
    if length is not None:
        analysis.sequence = sequence_evaluation(result, length, ns)
    return analysis


def check_calibration_target(out: Path, fingerprint: str) -> None:
    """Refuse, before evaluating, a calibration for a map that another model built: every
    Localizer on that map would set it aside (or, given it explicitly, refuse to start)."""
    if out.suffix.lower() == ".json":
        return
    if not out.exists():
        raise EdgeVPRError(f"--calibration {out}: no place map there (give the map the "
                           "calibration is for, or a .json file)")  # fmt: skip
    from edgevpr.runtime.commands.query import load_any_map

    built_by = load_any_map(out, verify=False).fingerprint
    if built_by != fingerprint:
        raise EdgeVPRError(f"{out} was built by another model (fingerprint {built_by[:12]}, this "
                           f"one {fingerprint[:12]}): calibrate with the model that built it; "
                           "nothing written")  # fmt: skip


def write_calibration(
    analysis: Analysis, precision: float, embedder: Any, out: Path, dataset: str
) -> None:
    """The margin reaching ``precision`` and the measured curve, for a Localizer."""
    sequence = analysis.sequence
    assert sequence is not None
    calibration = Calibration.fit(
        sequence.margins,
        sequence.correct,
        precision,
        fingerprint=embedder.fingerprint,
        mode=ROUTE,
        length=sequence.length,
        source={"dataset": dataset},
    )
    target = sidecar(out) if out.suffix.lower() != ".json" else out
    calibration.save(target)
    click.echo(
        f"calibration: margin {calibration.threshold:.4f} for precision {precision:g}; "
        f"wrote {target}",
        err=True,
    )
