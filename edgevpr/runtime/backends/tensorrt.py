"""Native TensorRT backend for serialized engines (``.engine`` / ``.plan``).

``tensorrt`` and ``cuda-python`` are imported only when an engine is opened; the header and
its checks (``engine_header``) are pure Python and run anywhere.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import weakref
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.core.engine_header import (
    REBUILD,
    check_engine_bytes,
    check_engine_compatibility,
    read_engine_header,
)
from edgevpr.core.errors import EdgeVPRError

MAX_LOGGED_ERRORS = 64
# cudaErrorInsufficientDriver: cuda-python's own CUDA runtime is newer than the driver, as
# the newest cuda-python 12.x is on JetPack 6.1/6.2 (CUDA 12.6)
INSUFFICIENT_DRIVER = 35
INSUFFICIENT_DRIVER_HELP = (
    "CUDA error 35 (cudaErrorInsufficientDriver): this cuda-python is built for a newer CUDA "
    "than the GPU driver runs; install the cuda-python of the driver's CUDA (nvidia-smi "
    "names it; on a Jetson, JetPack's: pip install 'cuda-python==12.6.*' on JetPack 6.1/6.2)"
)
STREAM_NON_BLOCKING = 1  # cudaStreamNonBlocking: no implicit sync with the legacy stream
LOG = logging.getLogger("edgevpr.tensorrt")


class TrtLog:
    """The one TensorRT logger of this process.

    TensorRT keeps a single logger per process: the first one handed to a Builder or Runtime
    receives the messages, and a different logger given later is ignored (with a warning).
    So every build and load here shares this one, and reads the errors logged since it
    started (``mark`` / ``cause``) to name the cause of a failure. Warnings go to Python's
    logging.
    """

    def __init__(self, trt: Any) -> None:
        serious = (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR)
        warning = trt.ILogger.Severity.WARNING
        self._errors: deque[tuple[int, str]] = deque(maxlen=MAX_LOGGED_ERRORS)
        self._count = 0
        self._lock = threading.Lock()
        record = self._record

        class _Logger(trt.ILogger):
            def __init__(inner) -> None:
                trt.ILogger.__init__(inner)

            def log(inner, severity: Any, msg: str) -> None:
                if severity in serious:
                    record(msg)
                elif severity == warning:
                    LOG.warning("TensorRT: %s", msg)

        self.logger = _Logger()

    def _record(self, message: str) -> None:
        with self._lock:
            self._count += 1
            self._errors.append((self._count, message))

    def mark(self) -> int:
        """A point to read errors from (before a build or a load)."""
        with self._lock:
            return self._count

    def cause(self, mark: int) -> str:
        """The last error logged since ``mark``, or a plain statement that there was none."""
        with self._lock:
            found = [message for count, message in self._errors if count > mark]
        return found[-1] if found else "TensorRT logged no error"


_PROCESS_LOG: TrtLog | None = None
_PROCESS_LOG_LOCK = threading.Lock()


def trt_log(trt: Any) -> TrtLog:
    """The process's TensorRT logger, made on first use."""
    global _PROCESS_LOG
    with _PROCESS_LOG_LOCK:
        if _PROCESS_LOG is None:
            _PROCESS_LOG = TrtLog(trt)
        return _PROCESS_LOG


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
        if int(error) == INSUFFICIENT_DRIVER:
            raise EdgeVPRError(INSUFFICIENT_DRIVER_HELP)
        if int(error) != 0:
            _, message = self.rt.cudaGetErrorString(error)
            text = message.decode() if isinstance(message, bytes) else str(message)
            raise EdgeVPRError(f"CUDA {name} failed: {text}")
        return values[0] if len(values) == 1 else values if values else None

    def clear_error(self) -> None:
        """Reset CUDA's last error (a failed capture leaves one for the next call to find)."""
        self.rt.cudaGetLastError()

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
    """A deserialized engine, device buffers sized for the engine's largest batch and pinned
    host buffers, all allocated once (and freed by ``close``, or when the backend is
    collected; a failure part-way through construction frees what it had allocated).

    Each batch size seen a second time gets an execution context of its own (all contexts
    share one block of device memory: one batch runs at a time) whose work is captured as a
    CUDA graph, as trtexec and Triton do it: the shape is set, one plain enqueue runs (its
    result is this call's) and the stream is synchronised, then the same enqueue is captured
    on a non-blocking stream. The graph is replayed from the third call of that size on, and
    no other size ever changes that context's shape. Where capture fails, CUDA's error is
    cleared and that size runs plainly.

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
        self._resources = _Resources(self._cuda)
        self._finalizer = weakref.finalize(self, self._resources.release)
        try:
            self._open(trt, batch_size)
        except BaseException:
            self.close()
            raise

    def _open(self, trt: Any, batch_size: int | None) -> None:
        gpu_name, capability = self._cuda.device()
        check_engine_compatibility(
            self.header, trt.__version__, capability, gpu_name,
            engine=f"TensorRT engine {self.path}")  # fmt: skip
        self._trt = trt
        self._engine = self._deserialize(trt)
        self._find_io()
        self.min_batch = self.header.batch_min
        largest = min(self.header.batch_max, batch_size or self.header.batch_max)
        self.max_batch: int = max(largest, self.min_batch)
        self.description = f"TensorRT {trt.__version__} ({gpu_name}, {self.header.precision})"
        self.device = "cuda"
        self._lock = threading.Lock()
        self._allocate()
        self._context = self._new_context()  # the one for sizes not (yet) captured
        self._graphs: dict[int, Any] = {}  # batch size -> launchable graph, or None: failed
        self._seen: set[int] = set()

    def _deserialize(self, trt: Any) -> Any:
        try:
            blob = self.path.read_bytes()
        except OSError as exc:
            raise EdgeVPRError(f"cannot read TensorRT engine {self.path}: {exc.strerror}") from None
        check_engine_bytes(self.header, blob, f"TensorRT engine {self.path}")
        log = trt_log(trt)
        self._runtime = trt.Runtime(log.logger)
        if self.header.version_compatible:
            # a version-compatible engine carries the lean runtime it runs on
            self._runtime.engine_host_code_allowed = True
        mark = log.mark()
        engine = self._runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise EdgeVPRError(
                f"TensorRT could not deserialize {self.path} ({log.cause(mark)}); {REBUILD}"
            )
        return engine

    def _find_io(self) -> None:
        trt, engine = self._trt, self._engine
        inputs: list[str] = []
        outputs: list[str] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(name)
        if len(inputs) != 1 or len(outputs) != 1:
            raise EdgeVPRError(
                f"TensorRT engine {self.path} has {len(inputs)} inputs and {len(outputs)} "
                "outputs; expected one image batch in, descriptors out"
            )
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.input_name)))
        self.output_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.output_name)))
        spec, dim = self.metadata.preprocess, self.metadata.descriptor_dim
        shape = tuple(engine.get_tensor_shape(self.input_name))
        if len(shape) != 4 or tuple(shape[1:]) != (3, spec.height, spec.width):
            raise EdgeVPRError(
                f"TensorRT engine {self.path} takes {shape}, but its header says "
                f"N x 3 x {spec.height} x {spec.width}"
            )
        out = tuple(engine.get_tensor_shape(self.output_name))
        if len(out) != 2 or out[1] != dim:
            raise EdgeVPRError(
                f"TensorRT engine {self.path} gives {out}, but its header says N x {dim} "
                "descriptors"
            )

    def _allocate(self) -> None:
        spec, dim, batch = self.metadata.preprocess, self.metadata.descriptor_dim, self.max_batch
        in_shape = (batch, 3, spec.height, spec.width)
        out_shape = (batch, dim)
        resources = self._resources
        self._stream = resources.stream(STREAM_NON_BLOCKING)
        self._device_in = resources.device(int(np.prod(in_shape)) * self.input_dtype.itemsize)
        self._device_out = resources.device(int(np.prod(out_shape)) * self.output_dtype.itemsize)
        self._host_in = resources.pinned(in_shape, self.input_dtype)
        self._host_out = resources.pinned(out_shape, self.output_dtype)
        size = getattr(self._engine, "device_memory_size_v2", None)
        if size is None:  # TensorRT before 10.1
            size = self._engine.device_memory_size
        self._scratch = resources.device(max(int(size), 1))  # every context's activations
        self._scratch_size = int(size)

    def _new_context(self) -> Any:
        """An execution context on the shared device memory, bound to the I/O buffers."""
        trt = self._trt
        context = self._engine.create_execution_context(
            trt.ExecutionContextAllocationStrategy.USER_MANAGED)  # fmt: skip
        if context is None:
            raise EdgeVPRError(f"TensorRT could not create an execution context for {self.path}")
        if hasattr(context, "set_device_memory"):  # TensorRT 10.1 on
            context.set_device_memory(self._scratch, self._scratch_size)
        else:
            context.device_memory = self._scratch
        # the addresses never change, so they are bound once (and graphs may replay them)
        context.set_tensor_address(self.input_name, int(self._device_in))
        context.set_tensor_address(self.output_name, int(self._device_out))
        self._resources.contexts.append(context)
        return context

    def _set_batch(self, context: Any, n: int) -> None:
        shape = (n, 3, self.metadata.preprocess.height, self.metadata.preprocess.width)
        if not context.set_input_shape(self.input_name, shape):
            raise EdgeVPRError(
                f"TensorRT engine {self.path} refused input shape {shape} (its profile is "
                f"{self.header.batch_min}..{self.header.batch_max} images)"
            )
        out = tuple(context.get_tensor_shape(self.output_name))
        if out != (n, self.metadata.descriptor_dim):
            raise EdgeVPRError(
                f"TensorRT engine {self.path} would give {out} for {n} images, not "
                f"({n}, {self.metadata.descriptor_dim})"
            )

    def _execute(self, context: Any) -> None:
        if not context.execute_async_v3(int(self._stream)):
            raise EdgeVPRError(f"TensorRT inference failed for {self.path}")

    def _enqueue(self, n: int) -> None:
        """Run batch size ``n``: its graph where captured; the second time a size comes, a
        context of its own is set to it, run once, synchronised and captured."""
        graph = self._graphs.get(n)
        if graph is not None:
            self._cuda.call("cudaGraphLaunch", graph, self._stream)
            return
        if n not in self._seen or n in self._graphs:  # first time, or capture failed
            self._seen.add(n)
            self._set_batch(self._context, n)
            self._execute(self._context)
            return
        context = self._new_context()
        self._set_batch(context, n)
        self._execute(context)  # this call's result; and TensorRT's work after a shape change
        self._cuda.call("cudaStreamSynchronize", self._stream)
        self._graphs[n] = self._capture(context)

    def _capture(self, context: Any) -> Any:
        """``context``'s enqueue as an instantiated CUDA graph, or None where it cannot be
        captured (CUDA's error cleared, the stream left usable)."""
        rt = self._cuda.rt
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        try:
            self._cuda.call("cudaStreamBeginCapture", self._stream, mode)
        except EdgeVPRError:
            self._cuda.clear_error()
            return None
        captured = context.execute_async_v3(int(self._stream))
        try:
            graph = self._cuda.call("cudaStreamEndCapture", self._stream)
        except EdgeVPRError:
            self._cuda.clear_error()  # e.g. cudaErrorStreamCaptureInvalidated
            return None
        try:
            if not captured:
                return None
            instance = self._cuda.call("cudaGraphInstantiate", graph, 0)
        except EdgeVPRError:
            self._cuda.clear_error()
            return None
        finally:
            self._cuda.call("cudaGraphDestroy", graph)
        self._resources.frees.append(("cudaGraphExecDestroy", instance))
        return instance

    def run(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x H x W with min_batch <= N <= max_batch -> N x D float32 (a fresh array)."""
        rt = self._cuda.rt
        n = batch.shape[0]
        with self._lock:
            if self._resources.released:
                raise EdgeVPRError(f"TensorRT engine {self.path} is closed")
            host_in = self._host_in[:n]
            host_in[...] = batch
            self._cuda.call(
                "cudaMemcpyAsync",
                self._device_in,
                host_in.ctypes.data,
                host_in.nbytes,
                rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                self._stream,
            )
            self._enqueue(n)
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
        """Free the engine's GPU and pinned memory (also done when it is collected);
        closing twice is harmless."""
        lock = getattr(self, "_lock", None)
        with lock if lock is not None else threading.Lock():
            self._graphs = {}
            self._context = None
            self._host_in = self._host_out = np.zeros(0)  # no views of freed pinned memory
            self._finalizer()


class _Resources:
    """What a TensorRTBackend allocated, freed once in reverse order (by ``close`` or the
    finaliser; never holding the backend itself, so it can be collected)."""

    def __init__(self, cuda: _Cuda) -> None:
        self.cuda = cuda
        self.frees: list[tuple[str, Any]] = []
        self.contexts: list[Any] = []
        self.released = False

    def stream(self, flags: int) -> Any:
        stream = self.cuda.call("cudaStreamCreateWithFlags", flags)
        self.frees.append(("cudaStreamDestroy", stream))
        return stream

    def device(self, nbytes: int) -> int:
        pointer = int(self.cuda.call("cudaMalloc", nbytes))
        self.frees.append(("cudaFree", pointer))
        return pointer

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        pointer = int(self.cuda.call("cudaMallocHost", nbytes))
        self.frees.append(("cudaFreeHost", pointer))
        raw = (ctypes.c_byte * nbytes).from_address(pointer)
        return np.frombuffer(memoryview(raw), dtype=dtype).reshape(shape)

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.contexts.clear()  # contexts go before the memory they run on
        for free, handle in reversed(self.frees):
            try:
                self.cuda.call(free, handle)
            except EdgeVPRError as exc:  # keep freeing the rest
                LOG.warning("TensorRT cleanup: %s", exc)
        self.frees.clear()
