"""``edgevpr info FILE``: what a checkpoint, exported model, engine or place map is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def describe_file(path: Path) -> dict[str, Any]:
    """What the file is, as its format describes it (torch only for checkpoints)."""
    from edgevpr.runtime.describe import describe_artifact

    return describe_artifact(path)


def print_description(info: dict[str, Any]) -> None:
    width = max(len(k) for k in info)
    for key, value in info.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        click.echo(f"{key:<{width}}  {value}")


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(file: Path, as_json: bool) -> None:
    """Describe a checkpoint (.pt/.ckpt), ONNX model, TensorRT engine or place map."""
    description = describe_file(file)
    if as_json:
        click.echo(json.dumps(description, indent=2, sort_keys=True, default=str))
    else:
        print_description(description)
