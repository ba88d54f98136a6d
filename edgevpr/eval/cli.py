"""``edgevpr eval MODEL DATASET_DIR``: Recall@N of a checkpoint or an exported model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgevpr.data.cli import SIZE
from edgevpr.data.layout import DEFAULT_RADIUS_M, read_split
from edgevpr.eval.evaluate import EVAL_BATCH, load_embedder
from edgevpr.eval.evaluate import evaluate as run_evaluation
from edgevpr.eval.recall import DEFAULT_NS

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
@click.option(
    "--batch", default=EVAL_BATCH, show_default=True, help="Images embedded per batch."
)
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
    visualize_queries: int,
) -> None:
    """Recall@N of MODEL (checkpoint, .onnx or .engine) on DATASET_DIR/images/<split>.

    Positives are database images within --radius metres of the query (UTM from the file
    names). Exact search; prints e.g. 'R@1: 91.2  R@5: 95.0  R@10: 96.4  R@20: 97.3'.
    """
    ns = parse_ns(recall_at)
    if batch < 1:
        raise click.BadParameter("--batch must be >= 1")
    data = read_split(dataset_dir, split)
    embedder = load_embedder(model, batch_size=batch, size=size, threads=threads)
    depth = max(PLOT_MAX_N if plot else 0, GRID_K if visualize else 0)
    result = run_evaluation(embedder, data, radius=radius, ns=ns, depth=depth)
    if plot:
        from edgevpr.eval.plots import plot_recall_curve

        plot_recall_curve({model.name: result}, plot, max_n=PLOT_MAX_N)
    if visualize:
        from edgevpr.eval.plots import visualize_matches

        visualize_matches(result, visualize, num_queries=visualize_queries, k=GRID_K)
    if as_json:
        click.echo(json.dumps({"model": str(model), **result.to_dict()}, indent=2))
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
