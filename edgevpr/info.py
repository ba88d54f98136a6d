"""``edgevpr info FILE``: what a checkpoint, exported model, engine or place map is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def describe_file(path: Path) -> dict[str, Any]:
    """What the file is, as its format describes it (torch only for checkpoints); a name
    that is no file but a preset describes the preset's model."""
    from edgevpr.runtime.describe import describe_artifact

    if not path.exists() and path.suffix == "" and len(path.parts) == 1:
        preset = describe_preset(str(path))
        if preset is not None:
            return preset
    return describe_artifact(path)


def describe_preset(name: str) -> dict[str, Any] | None:
    """A preset's model (freshly initialised) as ``edgevpr info`` prints a checkpoint, with
    its GFLOP per image; None where ``name`` is no preset (or torch is missing)."""
    try:
        from edgevpr.model import PRESETS, build_model
        from edgevpr.model.checkpoint import Checkpoint, describe
        from edgevpr.model.vpr import flops_per_image
    except ImportError:
        return None
    if name not in PRESETS:
        return None
    model = build_model(name).eval()
    facts = describe(Checkpoint(model=model, source="preset", provenance={"preset": name}))
    del facts["sha256"]
    facts["kind"] = f"preset {name} (a freshly initialised model: no trained weights)"
    return {**facts, "gflop_per_image": round(flops_per_image(model) / 1e9, 2)}


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(file: Path, as_json: bool) -> None:
    """Describe a checkpoint (.pt/.ckpt), ONNX model, TensorRT engine, place map or preset
    (e.g. boq_dinov2_12288)."""
    from edgevpr.runtime.describe import print_description

    description = describe_file(file)
    if as_json:
        click.echo(json.dumps(description, indent=2, sort_keys=True, default=str))
    else:
        print_description(description)
