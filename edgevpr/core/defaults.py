"""One source of defaults: a command's options show the defaults of the dataclass the
command fills, read from it here, so that a default is changed in one place."""

from __future__ import annotations

import dataclasses
from typing import Any


def defaults_of(cls: type) -> dict[str, Any]:
    """Every field of a dataclass that has a default (or default factory), by name."""
    found: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        if item.default is not dataclasses.MISSING:
            found[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            found[item.name] = item.default_factory()
    return found


def listed(values: tuple[Any, ...] | list[Any]) -> str:
    """(1, 8) -> '1,8': a tuple default as the comma list an option takes."""
    return ",".join(str(v) for v in values)
