"""Native TensorRT backend for serialized engines (``.engine`` / ``.plan``).

An engine runs only on the TensorRT version and GPU family that built it, and says nothing
readable about itself, so export writes a JSON header beside it (``<engine>.json``). The header
is checked before TensorRT is even imported: a mismatch is a one-line error asking for a
rebuild instead of a crash deep in the deserializer.

``tensorrt`` and ``cuda-python`` are imported only when an engine is opened; everything else
in this module (the header and its checks) is pure Python and runs anywhere.
"""

from __future__ import annotations

import ctypes
import json
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.errors import EdgeVPRError
from edgevpr.runtime.metadata import ModelMetadata

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


def trt_release(version: str) -> tuple[int, ...]:
    """'10.3.0.26' -> (10, 3, 0): the part that must match for an engine to load (the fourth
    field is a build number)."""
    parts = re.findall(r"\d+", str(version))[:3]
    if not parts:
        raise EdgeVPRError(f"'{version}' is not a TensorRT version")
    return tuple(int(p) for p in parts) + (0,) * (3 - len(parts))


def check_engine_compatibility(
    header: EngineHeader,
    trt_version: str,
    compute_capability: str | tuple[int, int],
    gpu_name: str = "",
    engine: str = "engine",
) -> None:
    """Refuse an engine this machine cannot run, with a one-line reason and the fix."""
    built, here = trt_release(header.trt_version), trt_release(trt_version)
    if built != here:
        raise EdgeVPRError(
            f"{engine} was built with TensorRT {header.trt_version}, but this machine has "
            f"TensorRT {trt_version}; engines only run on the version that built them: {REBUILD}"
        )
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


# ------------------------------------------------------------------------- GPU side
def _import_tensorrt() -> Any:
    try:
        import tensorrt  # optional, heavy, GPU only
    except ImportError:
        raise EdgeVPRError(
            "running a TensorRT engine needs the 'tensorrt' package and an NVIDIA GPU: "
            "pip install 'edgevpr[trt]' (or run the .onnx model instead)"
        ) from None
    return tensorrt


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart as runtime  # older cuda-python
        except ImportError:
            raise EdgeVPRError(
                "running a TensorRT engine needs the 'cuda-python' package: "
                "pip install 'edgevpr[trt]'"
            ) from None
    return runtime


class _Cuda:
    """The few CUDA runtime calls the engine needs, each checked."""

    def __init__(self) -> None:
        self.rt = _import_cudart()

    def call(self, name: str, *args: Any) -> Any:
        result = getattr(self.rt, name)(*args)
        error, values = result[0], result[1:]
        if int(error) != 0:
            _, message = self.rt.cudaGetErrorString(error)
            text = message.decode() if isinstance(message, bytes) else str(message)
            raise EdgeVPRError(f"CUDA {name} failed: {text}")
        return values[0] if len(values) == 1 else values if values else None

    def device(self) -> tuple[str, tuple[int, int]]:
        count = self.call("cudaGetDeviceCount")
        if not count:
            raise EdgeVPRError("no CUDA GPU found: a TensorRT engine needs one")
        props = self.call("cudaGetDeviceProperties", self.call("cudaGetDevice"))
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else props.name
        return name.rstrip("\0").strip(), (int(props.major), int(props.minor))


def local_gpu() -> tuple[str, tuple[int, int]]:
    """(name, compute capability) of the current CUDA device."""
    return _Cuda().device()


class TensorRTBackend:
    """A deserialized engine with one execution context, device buffers sized for the
    engine's largest batch and pinned host buffers, all allocated once.

    A TensorRT execution context is not thread-safe, and one GPU runs one batch at a time
    anyway: concurrent ``run`` calls are serialised by a lock.
    """

    def __init__(
        self,
        path: Path,
        providers: list[Any] | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        """``threads`` is not used: the GPU runs the engine."""
        if providers is not None:
            raise EdgeVPRError(
                "execution providers apply to ONNX models; a TensorRT engine runs natively"
            )
        self.path = path
        self.header = read_engine_header(path)
        self.metadata = self.header.model_metadata(source=f"engine header of {path}")
        trt = _import_tensorrt()
        self._cuda = _Cuda()
        gpu_name, capability = self._cuda.device()
        check_engine_compatibility(
            self.header, trt.__version__, capability, gpu_name, engine=f"TensorRT engine {path}"
        )
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise EdgeVPRError(f"cannot read TensorRT engine {path}: {exc.strerror}") from None
        self._engine = self._runtime.deserialize_cuda_engine(blob)
        if self._engine is None:
            raise EdgeVPRError(f"TensorRT could not deserialize {path}; {REBUILD}")
        self._find_io()
        self.min_batch = self.header.batch_min
        self.max_batch: int | None = min(self.header.batch_max, batch_size or self.header.batch_max)
        self.max_batch = max(self.max_batch, self.min_batch)
        self.description = f"TensorRT {trt.__version__} ({gpu_name}, {self.header.precision})"
        self.device = "cuda"
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EdgeVPRError(f"TensorRT could not create an execution context for {path}")
        self._lock = threading.Lock()
        self._allocations: list[tuple[str, int]] = []
        self._allocate()

    def _find_io(self) -> None:
        trt, engine = self._trt, self._engine
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(name)
        if len(inputs) != 1 or not outputs:
            raise EdgeVPRError(
                f"TensorRT engine {self.path} has {len(inputs)} inputs and {len(outputs)} "
                "outputs; expected one image batch in, descriptors out"
            )
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.input_name)))
        self.output_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.output_name)))
        spec = self.metadata.preprocess
        shape = tuple(engine.get_tensor_shape(self.input_name))
        if len(shape) != 4 or tuple(shape[1:]) != (3, spec.height, spec.width):
            raise EdgeVPRError(
                f"TensorRT engine {self.path} takes {shape}, but its header says "
                f"N x 3 x {spec.height} x {spec.width}"
            )

    def _allocate(self) -> None:
        spec, dim, batch = self.metadata.preprocess, self.metadata.descriptor_dim, self.max_batch
        in_shape = (batch, 3, spec.height, spec.width)
        out_shape = (batch, dim)
        self._stream = self._cuda.call("cudaStreamCreate")
        self._device_in = self._device_alloc(int(np.prod(in_shape)) * self.input_dtype.itemsize)
        self._device_out = self._device_alloc(int(np.prod(out_shape)) * self.output_dtype.itemsize)
        self._host_in = self._pinned(in_shape, self.input_dtype)
        self._host_out = self._pinned(out_shape, self.output_dtype)
        # the addresses never change, so they are bound once
        self._context.set_tensor_address(self.input_name, int(self._device_in))
        self._context.set_tensor_address(self.output_name, int(self._device_out))

    def _device_alloc(self, nbytes: int) -> int:
        pointer = int(self._cuda.call("cudaMalloc", nbytes))
        self._allocations.append(("cudaFree", pointer))
        return pointer

    def _pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        pointer = int(self._cuda.call("cudaMallocHost", nbytes))
        self._allocations.append(("cudaFreeHost", pointer))
        raw = (ctypes.c_byte * nbytes).from_address(pointer)
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x H x W with min_batch <= N <= max_batch -> N x D float32 (a fresh array)."""
        rt = self._cuda.rt
        n = batch.shape[0]
        with self._lock:
            host_in = self._host_in[:n]
            host_in[...] = batch
            self._context.set_input_shape(self.input_name, tuple(host_in.shape))
            self._cuda.call(
                "cudaMemcpyAsync",
                self._device_in,
                host_in.ctypes.data,
                host_in.nbytes,
                rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                self._stream,
            )
            if not self._context.execute_async_v3(int(self._stream)):
                raise EdgeVPRError(f"TensorRT inference failed for {self.path}")
            host_out = self._host_out[:n]
            self._cuda.call(
                "cudaMemcpyAsync",
                host_out.ctypes.data,
                self._device_out,
                host_out.nbytes,
                rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                self._stream,
            )
            self._cuda.call("cudaStreamSynchronize", self._stream)
            return host_out.astype(np.float32, copy=True)

    def close(self) -> None:
        with self._lock:
            self._context = None
            for free, pointer in reversed(self._allocations):
                self._cuda.call(free, pointer)
            self._allocations.clear()
            self._host_in = self._host_out = None  # views of freed pinned memory
            if getattr(self, "_stream", None) is not None:
                self._cuda.call("cudaStreamDestroy", self._stream)
                self._stream = None
