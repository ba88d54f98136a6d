"""``edgevpr bench``: latency tables per backend, precision and batch size, per stage."""

from __future__ import annotations

from pathlib import Path

import click

from edgevpr.bench.artifacts import default_cache_dir
from edgevpr.bench.backends import BACKENDS
from edgevpr.bench.report import STAGE_CHOICES, render
from edgevpr.bench.run import DEFAULT_MODEL, BenchOptions, run_bench
from edgevpr.bench.timing import FOREIGN_CPU_LIMIT
from edgevpr.core.defaults import defaults_of, listed
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.files import write_text_atomic

BENCH = defaults_of(BenchOptions)
FORMATS = ("md", "csv", "json")
SUFFIX_FORMATS = {".md": "md", ".markdown": "md", ".csv": "csv", ".json": "json"}
MAX_BATCH = 1024


def int_list(
    text: str, what: str, low: int, high: int, allow_zero: bool = False
) -> tuple[int, ...]:
    """'1,8,32' or '10k,100k,1m' -> (1, 8, 32); a one-line error otherwise."""
    values = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        scale = {"k": 1000, "m": 1_000_000}.get(part[-1].lower(), 1)
        digits = part[:-1] if scale != 1 else part
        if not digits.isdigit():
            raise EdgeVPRError(f"{what}: '{part}' is not a whole number")
        value = int(digits) * scale
        if value == 0 and allow_zero:
            continue
        if not low <= value <= high:
            raise EdgeVPRError(f"{what}: {value} is out of range [{low}, {high}]")
        values.append(value)
    if not values and not allow_zero:
        raise EdgeVPRError(f"{what}: give at least one value")
    return tuple(dict.fromkeys(values))


def name_list(values: tuple[str, ...]) -> list[str]:
    return [v for item in values for v in item.replace(" ", "").split(",") if v]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("models", nargs=-1, metavar="[MODEL]...")
@click.option(
    "--backend",
    "backends",
    multiple=True,
    help=f"Backends to run (repeat or comma-separate): {', '.join(BACKENDS)}. "
    "Default: all; those this machine cannot run are listed as skipped, with the reason.",
)
@click.option("--batches", "--batch", "batch_text", default=listed(BENCH["batches"]),
              show_default=True, help="Batch sizes to time, e.g. 1,8,32.")
@click.option("--warmup", default=BENCH["warmup"], show_default=True,
              type=click.IntRange(0, 10_000),
              help="Untimed calls before each row, at least (warm-up also lasts a quarter of "
              "--seconds).")
@click.option("--seconds", default=BENCH["seconds"], show_default=True,
              type=click.FloatRange(0, 3600), help="Time each row for at least this long.")
@click.option("--min-iters", default=BENCH["min_iters"], show_default=True,
              type=click.IntRange(1, 1_000_000), help="...and at least this many calls.")
@click.option("--map-size", "map_text", default=listed(BENCH["map_sizes"]), show_default=True,
              help="Search map sizes, e.g. 10k,100k (0: no search). Maps are cached: the "
              "first 100k build of 4096-d descriptors takes minutes on two cores.")
@click.option("--ef", "ef_text", default=listed(BENCH["efs"]), show_default=True,
              help="HNSW search breadths to compare.")
@click.option("--hnsw-m", "--M", "hnsw_m", default=BENCH["M"], show_default=True,
              type=click.IntRange(2, 512), help="HNSW graph degree M.")
@click.option("--ef-construction", default=BENCH["ef_construction"], show_default=True,
              type=click.IntRange(1, 100_000), help="HNSW build breadth.")
@click.option("-k", "--k", "--top-k", "k", default=BENCH["k"], show_default=True,
              type=click.IntRange(1, 1000),
              help="Results per query (recall@k against exact search).")
@click.option("--index", "index_specs", multiple=True,
              help="Index specs for the search table (repeat): KIND[:STORAGE][:pcaD|:pcawD]"
              "[:store-f16|:store-none], e.g. hnswlib, usearch:i8:pca256, "
              "faiss-ivf:sq8:pca256; default: what edgevpr index build makes. Default: default and "
              "hnswlib.")
@click.option("--prior", "prior_text", default="",
              help="Geo-prior radii in metres to time for every map, e.g. 100,1000,5000.")
@click.option("--stages", "stage_names", multiple=True,
              help=f"Tables to make: {', '.join(STAGE_CHOICES)} (default: all).")
@click.option("--images", type=click.Path(file_okay=False), default=None,
              help="Images to run on: a folder, or a dataset in the evaluation layout "
              "(database images seed the maps). Default: a synthetic street-scene set.")
@click.option("--map-images", default=BENCH["map_images"], show_default=True,
              type=click.IntRange(8, 100_000),
              help="Real images whose descriptors seed the search maps.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads per inference (default: the libraries' own, all cores).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help=f"Exports, maps and descriptors (default {default_cache_dir()}).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format (default: from --out's suffix, else md).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the report here (the Markdown tables still go to the terminal).")
@click.option("--allow-contended", is_flag=True,
              help="Write --out even where rows ran while other processes used the CPUs "
              "(by default such a report is refused: its numbers are not this model's).")
@click.option("--no-isolate", is_flag=True,
              help="Measure in this process instead of a fresh one per backend (debugging).")
def bench(
    models: tuple[str, ...],
    backends: tuple[str, ...],
    batch_text: str,
    warmup: int,
    seconds: float,
    min_iters: int,
    map_text: str,
    ef_text: str,
    hnsw_m: int,
    ef_construction: int,
    k: int,
    index_specs: tuple[str, ...],
    prior_text: str,
    stage_names: tuple[str, ...],
    images: str | None,
    map_images: int,
    threads: int | None,
    cache_dir: str | None,
    fmt: str | None,
    out: str | None,
    allow_contended: bool,
    no_isolate: bool,
) -> None:
    """Latency of MODEL per backend, precision and batch size, per pipeline stage.

    MODEL: a checkpoint (.pt; PyTorch eager is the reference row, and ONNX FP32/INT8 and,
    with TensorRT, an FP16 engine are exported on the fly into the cache), exported files
    (.onnx, INT8 .onnx, .engine; files of one checkpoint form one model), or a preset name.
    Default: the preset mixvpr_lite0_512 (ImageNet EfficientNet-Lite0 backbone).

    Tables: embed (the network alone), search (hnswlib against exact NumPy search on maps
    grown from real descriptors, with top-1 agreement and recall@k), and the pipeline
    (decode, preprocess, embed, search, end to end, one image at a time).
    """
    stages = tuple(name_list(stage_names)) or STAGE_CHOICES
    unknown = [s for s in stages if s not in STAGE_CHOICES]
    if unknown:
        raise EdgeVPRError(
            f"unknown stage {', '.join(unknown)} (choose from {', '.join(STAGE_CHOICES)})"
        )
    out_path = Path(out) if out else None
    if fmt is None:
        fmt = SUFFIX_FORMATS.get(out_path.suffix.lower(), "md") if out_path else "md"
    opts = BenchOptions(
        models=list(models),
        backends=name_list(backends) or None,
        batches=int_list(batch_text, "--batches", 1, MAX_BATCH),
        warmup=warmup,
        seconds=seconds,
        min_iters=min_iters,
        map_sizes=int_list(map_text, "--map-size", 2, 50_000_000, allow_zero=True),
        efs=int_list(ef_text, "--ef", 1, 100_000),
        M=hnsw_m,
        ef_construction=ef_construction,
        k=k,
        indexes=tuple(index_specs) or BENCH["indexes"],
        prior_radii=tuple(float(r) for r in int_list(prior_text, "--prior", 1, 10**7))
        if prior_text
        else (),
        stages=stages,
        images=images,
        map_images=map_images,
        threads=threads,
        cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
        isolate=not no_isolate,
    )

    _ = opts.index_specs  # parsed now: a bad spec is an error before anything runs

    def say(message: str) -> None:
        click.echo(f"[bench] {message}", err=True)

    if not models:
        say(f"no MODEL given: benchmarking the preset {DEFAULT_MODEL}")
    report = run_bench(opts, say)
    if out_path is not None:
        contended = contended_rows(report.rows)
        if contended and not allow_contended:
            click.echo(render(report, "md"))
            raise EdgeVPRError(
                f"{len(contended)} of {len(report.rows)} rows ran while other processes used "
                f"more than {FOREIGN_CPU_LIMIT:.0%} of the CPUs ({', '.join(contended[:3])}"
                f"{', ...' if len(contended) > 3 else ''}): {out_path} not written; rerun on a "
                "quiet machine, or give --allow-contended")  # fmt: skip
        write_text_atomic(out_path, render(report, fmt))
        click.echo(render(report, "md"))
        say(f"wrote {out_path}")
    else:
        click.echo(render(report, fmt), nl=False)


def contended_rows(rows: list) -> list[str]:
    """The rows measured while other processes used more than FOREIGN_CPU_LIMIT of the
    CPUs, named as the tables name them."""
    return [f"{r.backend} {r.precision} batch {r.batch}" for r in rows
            if r.foreign_cpu is not None and r.foreign_cpu > FOREIGN_CPU_LIMIT]
