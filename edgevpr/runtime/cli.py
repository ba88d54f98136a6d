"""``edgevpr index ...`` and ``edgevpr query``: the runtime on the command line, torch-free.

Every failure is one line and a non-zero exit, and a map on disk changes only by an atomic
rename after everything else has succeeded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import click

from edgevpr.errors import EdgeVPRError
from edgevpr.runtime.backends import PROVIDER_ALIASES
from edgevpr.runtime.embedder import Embedder
from edgevpr.runtime.geo import GeoPrior
from edgevpr.runtime.images import list_images
from edgevpr.runtime.placemap import (
    DEFAULT_EF,
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_K,
    DEFAULT_M,
    PlaceMap,
)
from edgevpr.runtime.placemap.mapfile import is_place_map
from edgevpr.runtime.placemap.records import record_for
from edgevpr.runtime.recognizer import Recognition, Recognizer, check_same_model

PathArg = click.Path(path_type=Path)


def expand_images(items: Sequence[Path]) -> list[Path]:
    """Files as given, folders as the images directly inside them (sorted)."""
    paths: list[Path] = []
    for item in items:
        if item.is_dir():
            found = list_images(item)
            if not found:
                raise EdgeVPRError(f"no images in {item}")
            paths.extend(found)
        elif item.exists():
            paths.append(item)
        else:
            raise EdgeVPRError(f"image {item} does not exist")
    return paths


def model_options(func: click.decorators.FC) -> click.decorators.FC:
    """--batch, --threads and --provider, shared by every command that runs a model."""
    func = click.option(
        "--provider",
        "providers",
        multiple=True,
        help="ONNX Runtime execution provider, best first (repeatable): "
        f"{', '.join(PROVIDER_ALIASES)} or a full name. Default: the best available.",
    )(func)
    func = click.option("--threads", type=click.IntRange(min=1), help="CPU threads per inference.")(
        func
    )
    return click.option(
        "--batch", type=click.IntRange(min=1), default=None, help="Images per inference call."
    )(func)


def open_embedder(
    model: Path, batch: int | None, threads: int | None, providers: tuple
) -> Embedder:
    return Embedder(model, providers=list(providers) or None, threads=threads, batch_size=batch)


def add_images(
    placemap: PlaceMap, embedder: Embedder, paths: list[Path], quiet: bool, skip_unreadable: bool
) -> tuple[list[int], list[Path]]:
    """Embed ``paths`` batch by batch into ``placemap``; returns (new ids, skipped paths)."""
    skipped: list[Path] = []

    def report(path: Path, exc: EdgeVPRError) -> None:
        skipped.append(path)
        click.echo(f"warning: skipped {exc}", err=True)

    added: list[int] = []
    source = embedder.model_summary()
    for kept, descriptors in embedder.iter_paths(
        paths, progress=not quiet, on_unreadable=report if skip_unreadable else None
    ):
        records = [record_for(p) for p in kept]
        added.extend(placemap.add(descriptors, records, source=source).tolist())
    return added, skipped


def without_coordinates(placemap: PlaceMap, ids: list[int]) -> str:
    """', N of them without coordinates' when some added places have none (a prior can
    never select those), else ''."""
    missing = placemap.without_coordinates(ids)
    return f", {missing} of them without coordinates" if missing else ""


def new_images(placemap: PlaceMap, paths: list[Path]) -> list[Path]:
    """``paths`` less the images the map already holds (same file) and repeats, each
    reported: a place added twice would only push a true neighbour down the list."""
    held = {Path(r.path).resolve() for r in placemap.records() if r.path}
    fresh, seen = [], set()
    for path in paths:
        resolved = path.resolve()
        if resolved in held or resolved in seen:
            click.echo(f"warning: {path} is already in the map; not added again", err=True)
            continue
        seen.add(resolved)
        fresh.append(path)
    return fresh


@click.group()
def index() -> None:
    """Build, extend and inspect place maps (hnswlib graphs of reference descriptors)."""


@index.command("build")
@click.argument("model", type=PathArg)
@click.argument("images_dir", type=PathArg)
@click.option("--out", "-o", "out", type=PathArg, required=True, help="Place map file to write.")
@click.option(
    "--hnsw-m",
    "--M",
    "m",
    type=click.IntRange(2, 512),
    default=DEFAULT_M,
    show_default=True,
    help="HNSW graph degree.",
)
@click.option(
    "--ef-construction",
    type=click.IntRange(1, 100_000),
    default=DEFAULT_EF_CONSTRUCTION,
    show_default=True,
    help="HNSW build breadth.",
)
@click.option(
    "--ef",
    type=click.IntRange(1, 100_000),
    default=DEFAULT_EF,
    show_default=True,
    help="HNSW search breadth stored in the map.",
)
@click.option(
    "--skip-unreadable",
    is_flag=True,
    help="Warn about and skip unreadable images instead of stopping.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@model_options
def build(
    model: Path,
    images_dir: Path,
    out: Path,
    m: int,
    ef_construction: int,
    ef: int,
    skip_unreadable: bool,
    quiet: bool,
    batch: int | None,
    threads: int | None,
    providers: tuple[str, ...],
) -> None:
    """Embed every image in IMAGES_DIR with MODEL (.onnx or TensorRT engine) into a new map.

    Coordinates come from evaluation-layout file names (@east@north@...) when present.
    OUT is written atomically: on any failure an existing OUT is left as it was.
    """
    started = time.perf_counter()
    if out.exists() and not is_place_map(out):
        raise EdgeVPRError(f"refusing to overwrite {out}: it is not an edgevpr place map")
    paths = list_images(images_dir)
    if not paths:
        raise EdgeVPRError(f"no images in {images_dir}")
    embedder = open_embedder(model, batch, threads, providers)
    placemap = PlaceMap.create(
        embedder.descriptor_dim,
        embedder.fingerprint,
        M=m,
        ef_construction=ef_construction,
        ef=ef,
        capacity=len(paths),
        model=embedder.model_summary(),
    )
    added, skipped = add_images(placemap, embedder, paths, quiet, skip_unreadable)
    if not added:
        raise EdgeVPRError(f"none of the {len(paths)} images in {images_dir} could be read")
    placemap.save(out)
    seconds = time.perf_counter() - started
    click.echo(
        f"wrote {out}: {len(added)} places"
        + (f" ({len(skipped)} unreadable skipped)" if skipped else "")
        + f", {embedder.descriptor_dim}-d, coordinates: {placemap.coordinate_kind() or 'none'}"
        + without_coordinates(placemap, added)
        + f", {seconds:.1f} s with {embedder.backend}"
    )


@index.command("add")
@click.argument("map_path", metavar="MAP", type=PathArg)
@click.argument("images", nargs=-1, required=True, type=PathArg)
@click.option(
    "--model", "-m", "model", type=PathArg, required=True, help="The model that built MAP."
)
@click.option("--skip-unreadable", is_flag=True, help="Warn about and skip unreadable images.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@model_options
def add(
    map_path: Path,
    images: tuple[Path, ...],
    model: Path,
    skip_unreadable: bool,
    quiet: bool,
    batch: int | None,
    threads: int | None,
    providers: tuple[str, ...],
) -> None:
    """Add IMAGES (files or folders) to MAP, which is then replaced atomically."""
    placemap = PlaceMap.load(map_path)
    embedder = open_embedder(model, batch, threads, providers)
    check_same_model(embedder, placemap)
    paths = new_images(placemap, expand_images(images))
    if not paths:
        raise EdgeVPRError("every image is already in the map; the map is unchanged")
    added, skipped = add_images(placemap, embedder, paths, quiet, skip_unreadable)
    if not added:
        raise EdgeVPRError("none of the images could be read; the map is unchanged")
    placemap.save(map_path)
    click.echo(
        f"added {len(added)} places to {map_path} (ids {added[0]}..{added[-1]})"
        + without_coordinates(placemap, added)
        + (f", {len(skipped)} unreadable skipped" if skipped else "")
        + f"; it now has {len(placemap)}"
    )


@index.command("remove")
@click.argument("map_path", metavar="MAP", type=PathArg)
@click.argument("ids", nargs=-1, required=True, type=int)
def remove(map_path: Path, ids: tuple[int, ...]) -> None:
    """Remove places by id from MAP (all or none), which is then replaced atomically."""
    placemap = PlaceMap.load(map_path)
    placemap.remove(list(ids))
    placemap.save(map_path)
    click.echo(f"removed {len(set(ids))} places from {map_path}; it now has {len(placemap)}")


@index.command("info")
@click.argument("map_path", metavar="MAP", type=PathArg)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(map_path: Path, as_json: bool) -> None:
    """Describe MAP (its integrity is verified)."""
    from edgevpr.info import print_description
    from edgevpr.runtime.describe import describe_place_map

    if not map_path.exists():
        raise EdgeVPRError(f"place map {map_path} does not exist")
    description = describe_place_map(map_path)
    if as_json:
        click.echo(json.dumps(description, indent=2, sort_keys=True))
    else:
        print_description(description)


def parse_prior(text: str, option: str) -> tuple[float, float, float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise EdgeVPRError(f"{option} takes three numbers A,B,RADIUS_M, got '{text}'")
    return values  # type: ignore[return-value]


def prior_for(placemap: PlaceMap, prior: str | None, prior_latlon: str | None) -> GeoPrior | None:
    """--prior is in the map's own coordinates; --prior-latlon is a GPS fix."""
    if prior and prior_latlon:
        raise EdgeVPRError("give --prior or --prior-latlon, not both")
    if prior_latlon:
        lat, lon, radius = parse_prior(prior_latlon, "--prior-latlon")
        return GeoPrior.from_latlon(lat, lon, radius)
    if not prior:
        return None
    a, b, radius = parse_prior(prior, "--prior")
    kind = placemap.coordinate_kind()
    if kind is None:
        raise EdgeVPRError("this map's places have no coordinates, so a prior cannot be applied")
    if "east/north" in kind:
        return GeoPrior(a, b, radius)
    return GeoPrior.from_latlon(a, b, radius)


def format_recognition(result: Recognition) -> list[str]:
    lines = [str(result.query)]
    if not result.matches:
        lines.append(f"  no place {result.prior.describe() if result.prior else 'found'}")
    for match in result.matches:
        where = ""
        if match.record.east is not None:
            where = f"  east {match.record.east:.2f} north {match.record.north:.2f}"
        elif match.record.lat is not None:
            where = f"  lat {match.record.lat:.6f} lon {match.record.lon:.6f}"
        away = f"  {match.distance_m:.1f} m from prior" if match.distance_m is not None else ""
        path = f"  {match.record.path}" if match.record.path else ""
        lines.append(
            f"  {match.rank:>2}  place {match.id:<6} score {match.score:.4f}{where}{away}{path}"
        )
    return lines


@click.command()
@click.argument("map_path", metavar="MAP", type=PathArg)
@click.argument("images", nargs=-1, required=True, type=PathArg)
@click.option(
    "--model",
    "-m",
    "model",
    type=PathArg,
    required=True,
    help="The exported model that built MAP (.onnx or TensorRT engine).",
)
@click.option(
    "-k",
    "--k",
    "k",
    type=click.IntRange(min=1),
    default=DEFAULT_K,
    show_default=True,
    help="Places to list per image.",
)
@click.option(
    "--prior",
    metavar="A,B,R",
    help="Only places within R metres of a rough position, in the map's own "
    "coordinates: EAST,NORTH,R for east/north maps (the evaluation layout's UTM "
    "metres), LAT,LON,R for maps with only latitude/longitude.",
)
@click.option(
    "--prior-latlon",
    metavar="LAT,LON,R",
    help="Like --prior, from a GPS fix (projected to UTM on east/north maps "
    "that record their UTM zone).",
)
@click.option(
    "--ef",
    type=click.IntRange(1, 100_000),
    default=None,
    help="Search breadth for this run (default: the map's).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@model_options
def query(
    map_path: Path,
    images: tuple[Path, ...],
    model: Path,
    k: int,
    prior: str | None,
    prior_latlon: str | None,
    ef: int | None,
    as_json: bool,
    batch: int | None,
    threads: int | None,
    providers: tuple[str, ...],
) -> None:
    """Recognise the places in IMAGE... (files or folders) using MAP built by --model."""
    placemap = PlaceMap.load(map_path)
    geo_prior = prior_for(placemap, prior, prior_latlon)
    if ef is not None:
        placemap.set_ef(ef)
    paths = expand_images(images)
    recognizer = Recognizer(open_embedder(model, batch, threads, providers), placemap)
    results = recognizer.recognize_many(paths, k=k, prior=geo_prior)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    for result in results:
        click.echo("\n".join(format_recognition(result)))
