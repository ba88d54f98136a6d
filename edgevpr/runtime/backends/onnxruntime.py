"""ONNX Runtime backend: the best execution provider available, reused I/O buffers.

Providers are tried best first: TensorRT, then CUDA, then CPU (each only where this
onnxruntime build has it). Every thread gets its own IOBinding with input and output buffers
allocated once per batch shape on the provider's device, so steady-state inference allocates
nothing and concurrent callers never share a buffer (``run_with_iobinding`` on one session is
thread-safe).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgevpr.core.errors import EdgeVPRError, first_line
from edgevpr.core.metadata import ModelMetadata
from edgevpr.runtime.backends import (
    CPU_EP,
    GPU_PROVIDERS,
    PROVIDER_ALIASES,
    PROVIDERS,
    TENSORRT_EP,
    ProviderRequest,
    provider_request,
)
from edgevpr.runtime.backends.onnx_external import check_external_data
from edgevpr.runtime.backends.trt_provider import provider_options

ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
# Buffers kept per thread: the full batch plus a couple of tail sizes.
MAX_CACHED_SHAPES = 3
LOG = logging.getLogger("edgevpr.onnxruntime")
# ONNX Runtime drops a provider it cannot start and runs on the next: the best available was
# TensorRT, whose pip-installed libraries are not on ONNX Runtime's loader path
# (LD_LIBRARY_PATH must name the tensorrt_libs folder), or CUDA without its libraries.
FALLBACK_WARNING = "%s could not start for %s: running on %s (check the CUDA/TensorRT libraries)"
# The largest batch of the TensorRT provider's optimisation profile when none is asked for
# (the embedder's default batch size).
PROFILE_BATCH = 16


def resolve_providers(
    requested: list[ProviderRequest] | None, available: list[str]
) -> list[tuple[str, dict[str, Any]]]:
    """Requested providers (names, short aliases or (name, options)) -> ORT's list, checked
    against what this onnxruntime build offers; None picks the best available, in order."""
    if requested is None:
        best: list[tuple[str, dict[str, Any]]] = [
            (p.name, {}) for p in PROVIDERS if p.automatic and p.name in available]  # fmt: skip
        return best or [(CPU_EP, {})]
    if not requested:
        raise EdgeVPRError("no execution provider given")
    chosen: list[tuple[str, dict[str, Any]]] = []
    for item in requested:
        name, options = provider_request(item)
        name = PROVIDER_ALIASES.get(name.lower(), name)
        if name not in available:
            raise EdgeVPRError(
                f"execution provider {name} is not available in this onnxruntime "
                f"(available: {', '.join(available)}); GPU providers need 'onnxruntime-gpu'"
            )
        chosen.append((name, options))
    return chosen


@dataclass
class _Buffers:
    binding: Any
    input: Any
    output: Any


class OnnxBackend:
    """One ONNX Runtime session for one exported model."""

    def __init__(
        self,
        path: Path,
        providers: list[ProviderRequest] | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.path = path
        batch_size = batch_size or PROFILE_BATCH
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: provider fallbacks are reported by us
        if threads is not None:
            if threads < 1:
                raise EdgeVPRError(f"threads must be at least 1, got {threads}")
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        chosen = resolve_providers(providers, ort.get_available_providers())
        check_external_data(path, "load")
        self.session = self._open(path, options, chosen, batch_size)
        active = self.session.get_providers()
        if providers is not None and chosen[0][0] not in active:
            raise EdgeVPRError(
                f"{chosen[0][0]} could not be started for {path} (running on {active[0]}); "
                "check the CUDA/TensorRT libraries, or choose another provider"
            )
        self.provider = active[0]
        if chosen[0][0] != self.provider:
            LOG.warning(FALLBACK_WARNING, chosen[0][0], path, self.provider)
        self.device = "cuda" if self.provider in GPU_PROVIDERS else "cpu"
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = ModelMetadata.from_props(props, source=f"ONNX model {path}")
        self._check_io()
        self._local = threading.local()

    @property
    def description(self) -> str:
        return f"onnxruntime {ort.__version__} ({self.provider})"

    @staticmethod
    def _open(
        path: Path,
        options: ort.SessionOptions,
        chosen: list[tuple[str, dict[str, Any]]],
        batch_size: int,
    ) -> ort.InferenceSession:
        providers: list[tuple[str, dict[str, Any]]] = []
        for name, user_options in chosen:
            defaults: dict[str, Any] = {}
            if name == TENSORRT_EP:
                defaults = OnnxBackend._trt_defaults(path, batch_size)
            providers.append((name, {**defaults, **user_options}))
        try:
            return ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises many pybind types
            raise EdgeVPRError(f"cannot load ONNX model {path}: {first_line(exc)}") from None

    @staticmethod
    def _trt_defaults(path: Path, batch_size: int) -> dict[str, Any]:
        """The TensorRT provider's settings; the input's shape comes from a quick
        unoptimised CPU session."""
        model_input = open_cpu_session(path).get_inputs()[0]
        return provider_options(model_input.name, list(model_input.shape), batch_size)

    def _check_io(self) -> None:
        io = model_io(self.session, self.metadata, self.path)
        self.input_name, self.output_name = io.input_name, io.output_name
        self.input_dtype, self.output_dtype = io.input_dtype, io.output_dtype
        self.min_batch, self.max_batch = io.min_batch, io.max_batch

    def _buffers(self, batch: int) -> _Buffers:
        cache: dict[int, _Buffers] = self._local.__dict__.setdefault("buffers", {})
        buffers = cache.get(batch)
        if buffers is None:
            if len(cache) >= MAX_CACHED_SHAPES:
                cache.clear()
            spec = self.metadata.preprocess
            in_shape = (batch, 3, spec.height, spec.width)
            out_shape = (batch, self.metadata.descriptor_dim)
            make = ort.OrtValue.ortvalue_from_shape_and_type
            buffers = _Buffers(
                binding=self.session.io_binding(),
                input=make(in_shape, self.input_dtype, self.device, 0),
                output=make(out_shape, self.output_dtype, self.device, 0),
            )
            buffers.binding.bind_ortvalue_input(self.input_name, buffers.input)
            buffers.binding.bind_ortvalue_output(self.output_name, buffers.output)
            cache[batch] = buffers
        return buffers

    def run(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x H x W (already checked) -> N x D float32, a fresh array."""
        buffers = self._buffers(batch.shape[0])
        try:
            buffers.input.update_inplace(np.ascontiguousarray(batch, dtype=self.input_dtype))
            self.session.run_with_iobinding(buffers.binding)
        except Exception as exc:  # noqa: BLE001 - ORT raises many pybind types
            raise EdgeVPRError(f"inference failed for {self.path}: {first_line(exc)}") from None
        # .numpy() of a CPU buffer is a view that the next run overwrites: copy it out
        return np.array(buffers.output.numpy(), dtype=np.float32, copy=True)

    def close(self) -> None:
        self._local = threading.local()


@dataclass(frozen=True)
class ModelIO:
    """The image input and descriptor output of an exported model, as the runtime uses them."""

    input_name: str
    output_name: str
    input_dtype: Any
    output_dtype: Any
    min_batch: int
    max_batch: int | None


def model_io(session: ort.InferenceSession, metadata: ModelMetadata, path: Path) -> ModelIO:
    """The model's input and output, checked against what its metadata says."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        raise EdgeVPRError(f"ONNX model {path} has {len(inputs)} inputs; expected one image batch")
    model_input, model_output = inputs[0], outputs[0]
    spec = metadata.preprocess
    expected = (3, spec.height, spec.width)
    shape = list(model_input.shape)
    if len(shape) != 4 or any(
        isinstance(got, int) and got != want for got, want in zip(shape[1:], expected, strict=True)
    ):
        raise EdgeVPRError(
            f"ONNX model {path} takes input {shape}, but its metadata says "
            f"N x 3 x {spec.height} x {spec.width}"
        )
    out_shape = list(model_output.shape)
    if len(out_shape) != 2 or (
        isinstance(out_shape[1], int) and out_shape[1] != metadata.descriptor_dim
    ):
        raise EdgeVPRError(
            f"ONNX model {path} gives output {out_shape}, but its metadata says "
            f"N x {metadata.descriptor_dim}"
        )
    if model_input.type not in ORT_TYPES or model_output.type not in ORT_TYPES:
        raise EdgeVPRError(
            f"ONNX model {path} has {model_input.type} input / {model_output.type} "
            "output; expected float or float16"
        )
    fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    return ModelIO(
        input_name=model_input.name,
        output_name=model_output.name,
        input_dtype=ORT_TYPES[model_input.type],
        output_dtype=ORT_TYPES[model_output.type],
        min_batch=fixed or 1,
        max_batch=fixed,
    )


def open_cpu_session(path: Path) -> ort.InferenceSession:
    """A quick unoptimised CPU session, for reading what a model is (external data checked
    first: nothing outside the model's folder is opened)."""
    check_external_data(path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=[CPU_EP])
    except Exception as exc:  # noqa: BLE001 - ORT raises many pybind types
        raise EdgeVPRError(f"cannot read ONNX model {path}: {first_line(exc)}") from None


def read_onnx_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """The edgevpr metadata of an exported ONNX model, checked as the runtime would check it
    (external data inside its folder, metadata readable and matching the graph)."""
    path = Path(path)
    if not path.is_file():
        raise EdgeVPRError(f"ONNX model {path} does not exist or is not a file")
    session = open_cpu_session(path)
    props = session.get_modelmeta().custom_metadata_map
    metadata = ModelMetadata.from_props(props, source=f"ONNX model {path}")
    model_io(session, metadata, path)
    return metadata
