"""``edgevpr index ...``: build, extend, compact and inspect place maps, torch-free.

``index build`` embeds with checkpoints (an interrupted build resumes where it stopped),
optionally on a Ray cluster, then writes a map compressed as asked, or a folder of geo
tiles. Every failure is one line and a non-zero exit, and a map on disk changes only by an
atomic rename after everything else has succeeded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from edgevpr.core.checks import RANGES
from edgevpr.core.defaults import defaults_of
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.files import exclusive
from edgevpr.core.images import list_images
from edgevpr.runtime.commands.query import PathArg, expand_images, model_options, open_embedder
from edgevpr.runtime.commands.teach import DriveArgs, drive_options, is_drive, teach
from edgevpr.runtime.embedder import Embedder
from edgevpr.runtime.placemap import PlaceMap
from edgevpr.runtime.placemap.build.defaults import AUTO, RULE
from edgevpr.runtime.placemap.build.resumable import (
    EmbedCheckpoint,
    EmbeddedPlaces,
    MapOptions,
    build_from_checkpoint,
    embed_here,
    partial_folder,
    remove_partial,
)
from edgevpr.runtime.placemap.fileformat.version1 import is_place_map
from edgevpr.runtime.placemap.kinds import INDEX_KINDS, settable_params
from edgevpr.runtime.placemap.place_record import record_for
from edgevpr.runtime.placemap.tiles import SUFFIX as TILES_SUFFIX
from edgevpr.runtime.placemap.tiles import TiledMap, is_tiled_map, write_tiles
from edgevpr.runtime.recognizer import check_same_model

MAP = defaults_of(MapOptions)


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


# How the index kinds' parameters are spelled on the command line where not "--<name>".
PARAM_FLAGS = {"M": ("--hnsw-m", "--M"), "ef_construction": ("--ef-construction",),
               "pq_bytes": ("--pq-bytes",)}  # fmt: skip


def _breadth_defaults() -> str:
    return ", ".join(f"{kind.name} {kind.defaults[kind.breadth]}" for kind in INDEX_KINDS.values())


def kind_param_options(command: Callable) -> Callable:
    """An option for each parameter the index kinds take (``placemap.kinds``: their range,
    default and help), except search breadth, which is ``--ef`` for every kind. A value
    for a parameter the chosen kind does not take is refused when the map is made."""
    for name, takers in reversed(settable_params().items()):
        if all(kind.breadth == name for kind, _ in takers):
            continue
        defaults = ", ".join(f"{kind.name} {param.default}" for kind, param in takers)
        flags = PARAM_FLAGS.get(name, (f"--{name.replace('_', '-')}",))
        described = f"{takers[0][1].help[0].upper()}{takers[0][1].help[1:]} (default: {defaults})."
        command = click.option(*flags, name, type=click.IntRange(*RANGES[name]), default=None,
                               help=described)(command)  # fmt: skip
    return command


@click.group()
def index() -> None:
    """Build, extend, compact and inspect place maps."""


@index.command("build")
@click.argument("model", type=PathArg)
@click.argument("images_dir", metavar="SOURCE", type=PathArg)
@click.option("--out", "-o", "out", type=PathArg, required=True,
              help=f"Place map file to write (a folder ending {TILES_SUFFIX} with --tile-size).")
@click.option("--index", "index_kind", type=click.Choice(list(INDEX_KINDS)),
              default=MAP["index"], show_default=True, help="Index kind.")
@click.option("--storage", default=None,
              help="How the index holds vectors: hnswlib f32; usearch i8, f16, f32; "
              "faiss-ivf sq8, pq, f16; faiss-hnsw sq8, f16, f32 (default: the kind's first).")
@click.option("--pca", type=click.IntRange(0, 65536), default=None,
              help=f"Project descriptors to this many dimensions before indexing ({RULE}).")
@click.option("--whiten", is_flag=True, help="Whitened PCA (centred, renormalised).")
@click.option("--pca-from", type=PathArg, default=None,
              help="Fit the projection on these descriptors (.npy, N x D) instead of the map's.")
@click.option("--store", type=click.Choice(["f32", "f16", "none"]), default=MAP["store"],
              show_default=True,
              help="Full-precision descriptors kept for exact re-ranking (none: smallest map, "
              "the index's own scores).")
@click.option("--rerank", type=click.IntRange(*RANGES["rerank"]), default=MAP["rerank"],
              show_default=True, help="Candidates the index proposes for exact re-ranking.")
@click.option("--ef", type=click.IntRange(1, 1 << 22), default=None,
              help="Search breadth stored in the map: HNSW's ef, faiss-ivf's lists probed "
              f"(default: the kind's, {_breadth_defaults()}).")
@kind_param_options
@click.option("--tile-size", type=click.FloatRange(min=1.0, min_open=False), default=None,
              help="Split the map into square geo tiles of this many metres (see TiledMap).")
@click.option("--ray", "ray_address", default=None,
              help="Embed on a Ray cluster at this address ('local': start one here).")
@click.option("--ray-workers", type=click.IntRange(1, 10_000), default=None,
              help="Embedding workers on Ray (default: one per CPU of the cluster).")
@click.option("--fresh", is_flag=True,
              help="Ignore an interrupted build's embeddings and start over.")
@click.option("--skip-unreadable", is_flag=True,
              help="Warn about and skip unreadable images instead of stopping.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@drive_options
@model_options
def build(
    model: Path, images_dir: Path, out: Path, index_kind: str, storage: str | None,
    pca: int | None, whiten: bool, pca_from: Path | None, store: str, rerank: int,
    ef: int | None, tile_size: float | None, ray_address: str | None, ray_workers: int | None,
    fresh: bool, skip_unreadable: bool, quiet: bool, batch: int | None, threads: int | None,
    providers: tuple[str, ...], **kind_params: Any,
) -> None:  # fmt: skip
    """Embed SOURCE with MODEL (.onnx or TensorRT engine) into a new map.

    SOURCE is a folder of images named with their coordinates (@east@north@...), or a
    recorded drive: a video or a folder of frames with --track, a ROS bag with its position
    topic, a folder of geotagged photos (EXIF GPS, DJI XMP), or any of them with --spacing
    (a route map in metres travelled). A drive keeps a frame every --every metres and
    records its drive and order, so that `index add` can add another drive of the same road.

    Embeddings are checkpointed in OUT.partial: run the same command again after an
    interruption and only the rest is embedded. OUT is written atomically: on any failure
    an existing OUT is left as it was.
    """
    drive_args = DriveArgs.of(kind_params)
    started = time.perf_counter()
    _check_output(out, tile_size)
    if whiten and not pca:
        raise EdgeVPRError("--whiten needs --pca D")
    projection = AUTO if pca is None else pca or None  # --pca 0: none
    with exclusive(out, str(out)):  # nothing else writes OUT or its work folder meanwhile
        drive = is_drive(images_dir, drive_args)
        paths = [] if drive else list_images(images_dir)
        if not drive and not paths:
            raise EdgeVPRError(f"no images in {images_dir}")
        embedder = open_embedder(model, batch, threads, providers)
        params = {name: value for name, value in kind_params.items() if value is not None}
        if ef is not None:
            params[INDEX_KINDS[index_kind].breadth] = ef
        options = MapOptions(index=index_kind, storage=storage, pca=projection, whiten=whiten,
                             fit_on=_descriptors_file(pca_from, embedder), store=store,
                             rerank=rerank, params=params)  # fmt: skip
        skipped: list[Path] = []

        def report(path: Path, exc: EdgeVPRError) -> None:
            skipped.append(path)
            click.echo(f"warning: skipped {exc}", err=True)

        on_unreadable = report if skip_unreadable else None
        checkpoint: EmbeddedPlaces
        if drive:
            if ray_address is not None:
                raise EdgeVPRError("--ray builds maps from folders of images, not drives")
            checkpoint, taught = teach(embedder, images_dir, drive_args, partial_folder(out),
                                       fresh, quiet, on_unreadable)  # fmt: skip
            click.echo(f"drive: {taught.describe()}", err=True)
        else:
            images = _checkpoint(out, embedder, paths, fresh)
            _embed_images(images, embedder, model, ray_address, ray_workers, quiet,
                          on_unreadable)  # fmt: skip
            if not images.done:
                raise EdgeVPRError(f"none of the {len(paths)} images in {images_dir} could be "
                                   "read")  # fmt: skip
            checkpoint = images
        placemap = build_from_checkpoint(checkpoint, embedder, options)
        if tile_size is not None:
            manifest = write_tiles(placemap, out, tile_size)
            what = f"{len(manifest['tiles'])} tiles of {tile_size:g} m"
        else:
            placemap.save(out)
            what = f"{placemap.index_kind} ({placemap.storage})"
        if placemap.projection is not None:
            dims = placemap.projection.dims
            asked = options.pca if isinstance(options.pca, int) else 0
            fewer = f", fewer than --pca {asked}: the map's descriptors span no more" * (
                dims < asked
            )
            chosen = " (the default for wide descriptors; --pca 0: none)" * (options.pca == AUTO)
            what += f", projected to {dims}-d{fewer}{chosen}"
        checkpoint.remove()
        click.echo(
            f"wrote {out}: {len(placemap)} places"
            + (f" ({len(skipped)} unreadable skipped)" if skipped else "")
            + f", {embedder.descriptor_dim}-d, {what}, coordinates: "
            + f"{placemap.coordinate_kind() or 'none'}"
            + without_coordinates(placemap, placemap.ids().tolist())
            + f", {time.perf_counter() - started:.1f} s with {embedder.backend}"
        )


def _embed_images(
    checkpoint: EmbedCheckpoint, embedder: Embedder, model: Path, ray_address: str | None,
    ray_workers: int | None, quiet: bool, on_unreadable: Any,
) -> None:  # fmt: skip
    """Embed a list of images into ``checkpoint``, here or on Ray (a failure with nothing
    embedded leaves no work folder)."""
    try:
        if ray_address is not None:
            from edgevpr.runtime.placemap.build.raycluster import embed_on_ray

            embed_on_ray(model, checkpoint, ray_address, ray_workers, embedder.batch_size,
                         not quiet, on_unreadable)  # fmt: skip
        else:
            embed_here(embedder, checkpoint, not quiet, on_unreadable)
    except BaseException:
        if not checkpoint.done:  # nothing to resume from
            checkpoint.remove()
        raise


def _check_output(out: Path, tile_size: float | None) -> None:
    if tile_size is None:
        if out.exists() and not is_place_map(out):
            raise EdgeVPRError(f"refusing to overwrite {out}: it is not an edgevpr place map")
    elif out.exists() and not is_tiled_map(out):
        raise EdgeVPRError(f"refusing to overwrite {out}: it is not a tiled map")


def _checkpoint(out: Path, embedder: Embedder, paths: list[Path], fresh: bool) -> EmbedCheckpoint:
    folder = partial_folder(out)
    if fresh and folder.exists():
        remove_partial(folder)
    checkpoint = EmbedCheckpoint(folder, embedder.fingerprint, paths, embedder.descriptor_dim)
    if checkpoint.done:
        click.echo(f"resuming: {checkpoint.done} of {len(paths)} images already embedded "
                   f"(in {folder})", err=True)  # fmt: skip
    return checkpoint


def _descriptors_file(path: Path | None, embedder: Embedder) -> np.ndarray | None:
    """Descriptors to fit a projection on (.npy, N x D of this model)."""
    if path is None:
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EdgeVPRError(f"cannot read descriptors from {path}: {exc}") from None
    if array.ndim != 2 or array.shape[1] != embedder.descriptor_dim:
        raise EdgeVPRError(f"{path} holds {array.shape}, not N x {embedder.descriptor_dim}")
    return array.astype(np.float32)


@index.command("add")
@click.argument("map_path", metavar="MAP", type=PathArg)
@click.argument("images", nargs=-1, required=True, type=PathArg)
@click.option(
    "--model", "-m", "model", type=PathArg, required=True, help="The model that built MAP."
)
@click.option("--skip-unreadable", is_flag=True, help="Warn about and skip unreadable images.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--fresh", is_flag=True, help="Drives: ignore an interrupted add and start over.")
@drive_options
@model_options
def add(
    map_path: Path, images: tuple[Path, ...], model: Path, skip_unreadable: bool, quiet: bool,
    fresh: bool, batch: int | None, threads: int | None, providers: tuple[str, ...],
    **given: Any,
) -> None:  # fmt: skip
    """Add IMAGES (files or folders) to MAP, or one recorded drive (a video, a bag, a folder
    of frames or photos, with the same options as `index build`) as a drive of its own.
    MAP is replaced atomically, and locked meanwhile: another command changing it is
    refused in one line."""
    drive_args = DriveArgs.of(given)
    with exclusive(map_path, str(map_path)):
        placemap = PlaceMap.load(map_path)
        embedder = open_embedder(model, batch, threads, providers)
        check_same_model(embedder, placemap)
        if len(images) == 1 and is_drive(images[0], drive_args):
            _add_drive(placemap, map_path, embedder, images[0], drive_args, fresh, quiet,
                       skip_unreadable)  # fmt: skip
            return
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


def _add_drive(
    placemap: PlaceMap, map_path: Path, embedder: Embedder, source: Path, args: DriveArgs,
    fresh: bool, quiet: bool, skip_unreadable: bool,
) -> None:  # fmt: skip
    """Teach ``source`` into the map as a new drive (resumable in MAP.partial)."""
    def report(frame: Any, exc: EdgeVPRError) -> None:
        click.echo(f"warning: skipped {exc}", err=True)

    taken = {d["name"] for d in placemap.drives()}
    checkpoint, taught = teach(embedder, source, args, partial_folder(map_path), fresh, quiet,
                               report if skip_unreadable else None, taken)  # fmt: skip
    added: list[int] = []
    for descriptors, records in checkpoint.places():
        added.extend(placemap.add(descriptors, records,
                                  source=embedder.model_summary()).tolist())  # fmt: skip
    placemap.save(map_path)
    checkpoint.remove()
    click.echo(f"added drive {records[0].drive} to {map_path}: {taught.describe()}; ids "
               f"{added[0]}..{added[-1]}; it now has {len(placemap)} places in "
               f"{len(placemap.drives())} drives")  # fmt: skip


@index.command("remove")
@click.argument("map_path", metavar="MAP", type=PathArg)
@click.argument("ids", nargs=-1, required=True, type=int)
def remove(map_path: Path, ids: tuple[int, ...]) -> None:
    """Remove places by id from MAP (all or none), which is then replaced atomically."""
    with exclusive(map_path, str(map_path)):
        placemap = PlaceMap.load(map_path)
        placemap.remove(list(ids))
        placemap.save(map_path)
    click.echo(f"removed {len(set(ids))} places from {map_path}; it now has {len(placemap)}")


@index.command("info")
@click.argument("map_path", metavar="MAP", type=PathArg)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(map_path: Path, as_json: bool) -> None:
    """Describe MAP (its integrity is verified)."""
    from edgevpr.runtime.describe import describe_place_map, print_description

    if not map_path.exists():
        raise EdgeVPRError(f"place map {map_path} does not exist")
    description = describe_place_map(map_path)
    if as_json:
        click.echo(json.dumps(description, indent=2, sort_keys=True))
    else:
        print_description(description)




@index.command("verify")
@click.argument("maps", nargs=-1, required=True, type=PathArg)
def verify(maps: tuple[Path, ...]) -> None:
    """Check MAPS (place maps or tiled maps) completely: every section's checksum, every
    index structure, the index's places against the records, and every stored descriptor
    against its check value (a query checks only the rows it reads)."""
    for map_path in maps:
        started = time.perf_counter()
        files = ([map_path / t.file for t in TiledMap.load(map_path).tiles.values()]
                 if is_tiled_map(map_path) else [map_path])  # fmt: skip
        places = sum(len(PlaceMap.load(path, verify=True)) for path in files)
        size = sum(path.stat().st_size for path in files)
        click.echo(f"ok: {map_path}: {places} places, {size / 1e6:.1f} MB in {len(files)} "
                   f"file(s) checked in {time.perf_counter() - started:.1f} s")  # fmt: skip


@index.command("compact")
@click.argument("map_path", metavar="MAP", type=PathArg)
def compact(map_path: Path) -> None:
    """Rewrite MAP without its removed places (the index rebuilt over the live ones)."""
    with exclusive(map_path, str(map_path)):
        before = map_path.stat().st_size if map_path.is_file() else 0
        placemap = PlaceMap.load(map_path)
        placemap.compact()
        placemap.save(map_path)
    click.echo(f"compacted {map_path}: {len(placemap)} places, "
               f"{before / 1e6:.1f} -> {map_path.stat().st_size / 1e6:.1f} MB")  # fmt: skip
