"""``edgevpr query`` and what the runtime's commands share (``index_cli`` has ``edgevpr
index ...``), torch-free.

Every failure is one line and a non-zero exit, and a map on disk changes only by an atomic
rename after everything else has succeeded.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.geo import GeoPrior
from edgevpr.core.images import list_images
from edgevpr.runtime.backends import PROVIDER_ALIASES
from edgevpr.runtime.embedder import Embedder
from edgevpr.runtime.placemap import (
    DEFAULT_K,
    PlaceMap,
)
from edgevpr.runtime.placemap.tiles import TiledMap, is_tiled_map
from edgevpr.runtime.recognizer import Recognition, Recognizer

PathArg = click.Path(path_type=Path)


def with_options(command: Callable, options: Sequence[Callable]) -> Callable:
    """``command`` with click ``options`` applied so that ``--help`` lists them in order."""
    return functools.reduce(lambda c, option: option(c), reversed(options), command)


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


def parse_prior(text: str, option: str) -> tuple[float, float, float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise EdgeVPRError(f"{option} takes three numbers A,B,RADIUS_M, got '{text}'")
    return values[0], values[1], values[2]


def prior_for(
    placemap: PlaceMap | TiledMap, prior: str | None, prior_latlon: str | None
) -> GeoPrior | None:
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


VERIFY_HELP = ("Check every stored descriptor of MAP before the first query (a full read; "
               "without it each query checks the rows it reads).")


def load_any_map(path: Path, verify: bool) -> PlaceMap | TiledMap:
    """A map file or a tiled map's folder; ``verify``: every stored descriptor checked."""
    if is_tiled_map(path):
        return TiledMap.load(path, verify=verify)
    return PlaceMap.load(path, verify=verify)


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
@click.option("--verify", is_flag=True, help=VERIFY_HELP)
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
    verify: bool,
    batch: int | None,
    threads: int | None,
    providers: tuple[str, ...],
) -> None:
    """Recognise the places in IMAGE... (files or folders) using MAP built by --model (a
    map file, or a tiled map's folder: then --prior is required)."""
    placemap = load_any_map(map_path, verify)
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
