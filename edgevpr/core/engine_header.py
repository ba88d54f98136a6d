"""The JSON header export writes beside a TensorRT engine (``<engine>.json``), and the checks
made with it before an engine is loaded.

An engine runs only on the TensorRT version and GPU family that built it, and says nothing
readable about itself, so the header records both (and the engine's sha256). It is checked
before TensorRT is even imported: a mismatch is a one-line error asking for a rebuild instead
of a crash deep in the deserializer. Pure Python: runs anywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.metadata import ModelMetadata

HEADER_FORMAT = "edgevpr.tensorrt-engine"
HEADER_VERSION = 1
REBUILD = "rebuild it on this machine with 'edgevpr export CKPT --trt'"
# TensorRT's hardware-compatibility levels: "none" ties an engine to one compute capability;
# "ampere_plus" runs on any GPU from compute capability 8.0 on.
HARDWARE_COMPATIBILITY = ("none", "ampere_plus")


@dataclass(frozen=True)
class EngineHeader:
    """What export records beside an engine (``<engine>.json``)."""

    trt_version: str
    gpu_name: str
    compute_capability: str  # "8.9"
    precision: str  # fp32 | fp16 | int8
    batch_min: int
    batch_opt: int
    batch_max: int
    onnx_sha256: str
    metadata: dict[str, str]  # ModelMetadata.to_props()
    hardware_compatibility: str = "none"
    # built with VERSION_COMPATIBLE: runs on later TensorRT releases of the same major version
    version_compatible: bool = False
    engine_sha256: str = ""  # of the engine file; empty in headers written before it was kept
    format: str = HEADER_FORMAT
    format_version: int = HEADER_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.batch_min <= self.batch_opt <= self.batch_max:
            raise EdgeVPRError(
                f"engine header batch range {self.batch_min}/{self.batch_opt}/{self.batch_max} "
                "is not min <= opt <= max"
            )
        if self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            raise EdgeVPRError(
                f"engine header hardware_compatibility '{self.hardware_compatibility}' is unknown"
            )
        parse_compute_capability(self.compute_capability)

    def model_metadata(self, source: str = "engine") -> ModelMetadata:
        return ModelMetadata.from_props(self.metadata, source=source)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineHeader:
        if data.get("format", HEADER_FORMAT) != HEADER_FORMAT:
            raise EdgeVPRError(f"not an edgevpr engine header (format {data.get('format')!r})")
        version = data.get("format_version", HEADER_VERSION)
        if isinstance(version, bool) or not isinstance(version, int):
            raise EdgeVPRError(f"engine header format_version {version!r} is not a number")
        if version > HEADER_VERSION:
            raise EdgeVPRError(f"engine header version {version} is newer than this edgevpr reads")
        extra = data.get("extra", {})
        if not isinstance(extra, dict):
            raise EdgeVPRError("engine header field extra is not an object")
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        values["extra"] = {**extra, **{k: v for k, v in data.items() if k not in known}}
        try:
            for key in ("batch_min", "batch_opt", "batch_max"):
                values[key] = int(values[key])
            values["compute_capability"] = str(values["compute_capability"])
            values["version_compatible"] = values.get("version_compatible", False) is True
            values["engine_sha256"] = str(values.get("engine_sha256", ""))
            values["metadata"] = {str(k): str(v) for k, v in dict(values["metadata"]).items()}
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgeVPRError(f"engine header is missing or has a bad field ({exc})") from None


def header_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_engine_header(engine_path: str | Path) -> EngineHeader:
    engine_path = Path(engine_path)
    path = header_path(engine_path)
    if not path.is_file():
        raise EdgeVPRError(
            f"TensorRT engine {engine_path} has no header {path.name} beside it, so its "
            f"TensorRT version and GPU are unknown; {REBUILD}"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgeVPRError(f"cannot read engine header {path}: {exc}") from None
    if not isinstance(data, dict):
        raise EdgeVPRError(f"engine header {path} is not a JSON object")
    try:
        return EngineHeader.from_dict(data)
    except EdgeVPRError as exc:
        raise EdgeVPRError(f"{path}: {exc}") from None


def parse_compute_capability(value: str | tuple[int, int]) -> tuple[int, int]:
    """'8.9', '89', 'sm_89' or (8, 9) -> (8, 9)."""
    if isinstance(value, tuple):
        return int(value[0]), int(value[1])
    text = str(value).strip().lower().removeprefix("sm_").removeprefix("sm")
    match = re.fullmatch(r"(\d+)\.(\d+)", text) or re.fullmatch(r"(\d+)(\d)", text)
    if not match:
        raise EdgeVPRError(f"'{value}' is not a compute capability (e.g. 8.9)")
    return int(match.group(1)), int(match.group(2))


VERSION_FIELDS = ("major", "minor", "patch", "build")


def trt_version_fields(version: str) -> tuple[int, ...]:
    """'10.3.0.26' -> (10, 3, 0, 26); missing fields are 0. An engine loads only on the very
    version that built it, build number included (a serialisation tag is checked)."""
    parts = re.findall(r"\d+", str(version))[:4]
    if not parts:
        raise EdgeVPRError(f"'{version}' is not a TensorRT version")
    return tuple(int(p) for p in parts) + (0,) * (4 - len(parts))


def check_engine_compatibility(
    header: EngineHeader,
    trt_version: str,
    compute_capability: str | tuple[int, int],
    gpu_name: str = "",
    engine: str = "engine",
) -> None:
    """Refuse an engine this machine cannot run, with a one-line reason and the fix."""
    _check_version(header, trt_version, engine)
    built_cc = parse_compute_capability(header.compute_capability)
    here_cc = parse_compute_capability(compute_capability)
    if header.hardware_compatibility == "ampere_plus":
        compatible = here_cc >= (8, 0)
    else:
        compatible = built_cc == here_cc
    if not compatible:
        here_name = f"{gpu_name} " if gpu_name else ""
        raise EdgeVPRError(
            f"{engine} was built for {header.gpu_name} (compute capability "
            f"{built_cc[0]}.{built_cc[1]}), but this GPU is {here_name}(compute capability "
            f"{here_cc[0]}.{here_cc[1]}); engines only run on the GPU family that built them: "
            f"{REBUILD}"
        )


def _check_version(header: EngineHeader, trt_version: str, engine: str) -> None:
    built, here = trt_version_fields(header.trt_version), trt_version_fields(trt_version)
    if header.version_compatible:
        if built[0] == here[0] and here >= built:
            return
        raise EdgeVPRError(
            f"{engine} is version-compatible from TensorRT {header.trt_version} on, within "
            f"TensorRT {built[0]}, but this machine has TensorRT {trt_version}: {REBUILD}"
        )
    if built != here:
        first = next(i for i, (a, b) in enumerate(zip(built, here, strict=True)) if a != b)
        field = VERSION_FIELDS[first]
        raise EdgeVPRError(
            f"{engine} was built with TensorRT {header.trt_version}, but this machine has "
            f"TensorRT {trt_version} (the {field} number differs); an engine runs only on the "
            f"exact version that built it: {REBUILD}"
        )


def check_engine_bytes(header: EngineHeader, blob: bytes, engine: str) -> None:
    """The engine file is the one its header describes (export writes the header first)."""
    if header.engine_sha256 and hashlib.sha256(blob).hexdigest() != header.engine_sha256:
        raise EdgeVPRError(
            f"{engine} is not the engine its header describes (an interrupted or mixed-up "
            f"export): {REBUILD}"
        )
