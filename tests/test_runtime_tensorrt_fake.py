"""The native TensorRT backend's control flow against stand-in ``tensorrt`` and
``cuda.bindings.runtime`` modules (neither can be installed here). The stand-ins behave like
the real ones where the backend depends on it: CUDA calls return (error, values...),
``set_input_shape`` returns False for a shape outside the profile, the engine reports its own
output shape, a stream being captured records work instead of running it, and a graph replays
what was captured against the memory as it is at launch. They refuse what the real ones
refuse: an enqueue captured on a context whose shape changed since its last plain enqueue
invalidates the capture (TensorRT's first enqueue after a shape change may allocate or
synchronise), and an error a failed capture leaves is returned by the next CUDA call until
``cudaGetLastError`` clears it. "Device" memory is host memory here, so the bytes really
travel through the backend's buffers.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edgevpr.core.engine_header import header_path
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.metadata import ModelMetadata
from edgevpr.core.preprocess import PreprocessSpec
from edgevpr.runtime.backends import tensorrt as tensorrt_backend
from edgevpr.runtime.embedder import Embedder

DIM, SIZE = 8, 16
BLOB = b"serialized engine"


class FakeCuda:
    """cuda.bindings.runtime: every call returns (error, values...)."""

    def __init__(self, capture_fails: bool) -> None:
        self.memory: dict[int, ctypes.Array] = {}
        self.capturing: list | None = None
        self.capture_fails = capture_fails
        self.launches = 0
        self.invalidated = False
        self.sticky = 0  # an error the next call returns, until cudaGetLastError
        self.stream_flags: int | None = None
        self.driver_error = 0
        self.cudaMemcpyKind = types.SimpleNamespace(
            cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2
        )
        self.cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)

    def _alloc(self, nbytes: int) -> tuple[int, int]:
        buffer = ctypes.create_string_buffer(nbytes)
        self.memory[ctypes.addressof(buffer)] = buffer
        return 0, ctypes.addressof(buffer)

    cudaMalloc = cudaMallocHost = _alloc

    def cudaFree(self, pointer: int) -> tuple[int]:
        del self.memory[pointer]
        return (0,)

    cudaFreeHost = cudaFree

    def cudaGetLastError(self) -> tuple[int]:
        error, self.sticky = self.sticky, 0
        return (error,)

    def _checked(self) -> int:
        return self.sticky or self.driver_error

    def cudaGetDeviceCount(self) -> tuple[int, int]:
        if self.driver_error:
            return self.driver_error, 0
        return 0, 1

    def cudaGetDevice(self) -> tuple[int, int]:
        return 0, 0

    def cudaGetDeviceProperties(self, _device: int) -> tuple[int, types.SimpleNamespace]:
        return 0, types.SimpleNamespace(name=b"NVIDIA L4\x00", major=8, minor=9)

    def cudaGetErrorString(self, error: int) -> tuple[int, bytes]:
        return 0, f"cuda error {error}".encode()

    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[int, int]:
        self.stream_flags = flags
        return 0, 77

    def cudaStreamDestroy(self, _stream: int) -> tuple[int]:
        return (0,)

    def cudaStreamSynchronize(self, _stream: int) -> tuple[int]:
        return (self._checked(),)

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, _kind: int, _s: int) -> tuple:
        if self._checked():
            return (self._checked(),)
        ctypes.memmove(dst, src, nbytes)
        return (0,)

    def cudaStreamBeginCapture(self, _stream: int, _mode: int) -> tuple[int]:
        if self.capture_fails:
            return (900,)  # cudaErrorStreamCaptureUnsupported
        self.capturing = []
        return (0,)

    def cudaStreamEndCapture(self, _stream: int) -> tuple[int, list | None]:
        work, self.capturing = self.capturing, None
        if self.invalidated:
            self.invalidated, self.sticky = False, 901  # cudaErrorStreamCaptureInvalidated
            return 901, None
        return 0, work

    def cudaGraphInstantiate(self, graph: list, _flags: int) -> tuple[int, list]:
        return 0, list(graph)

    def cudaGraphDestroy(self, _graph: list) -> tuple[int]:
        return (0,)

    def cudaGraphExecDestroy(self, _graph: list) -> tuple[int]:
        return (0,)

    def cudaGraphLaunch(self, graph: list, _stream: int) -> tuple[int]:
        self.launches += 1
        for work in graph:
            work()
        return (0,)


class FakeContext:
    """Descriptors = the first DIM input values of each image (enough to follow the bytes)."""

    def __init__(self, cuda: FakeCuda, max_batch: int) -> None:
        self.cuda, self.max_batch = cuda, max_batch
        self.addresses: dict[str, int] = {}
        self.batch = 0
        self.executed = 0
        self.reshaped = False  # shape set since the last plain enqueue
        self.memory: tuple[int, int] | None = None

    def set_tensor_address(self, name: str, address: int) -> None:
        self.addresses[name] = address

    def set_device_memory(self, address: int, size: int) -> None:
        self.memory = (address, size)

    def set_input_shape(self, _name: str, shape: tuple) -> bool:
        if not 1 <= shape[0] <= self.max_batch:
            return False
        self.reshaped = self.reshaped or shape[0] != self.batch
        self.batch = shape[0]
        return True

    def get_tensor_shape(self, _name: str) -> tuple[int, int]:
        return (self.batch, DIM)

    def _compute(self, n: int) -> None:
        pixels = 3 * SIZE * SIZE
        images = np.ctypeslib.as_array(
            (ctypes.c_float * (n * pixels)).from_address(self.addresses["images"])
        ).reshape(n, pixels)
        out = np.ctypeslib.as_array(
            (ctypes.c_float * (n * DIM)).from_address(self.addresses["descriptors"])
        ).reshape(n, DIM)
        out[...] = images[:, :DIM]

    def execute_async_v3(self, _stream: int) -> bool:
        assert self.memory is not None, "a USER_MANAGED context runs without device memory"
        n = self.batch
        if self.cuda.capturing is not None:
            if self.reshaped:  # TensorRT would allocate or synchronise: the capture breaks
                self.cuda.invalidated = True
            self.cuda.capturing.append(lambda: self._compute(n))
            return True
        self.executed += 1
        self.reshaped = False
        self._compute(n)
        return True


def fake_tensorrt(cuda: FakeCuda, engine_dim: int, made: dict) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0.26"
    trt.TensorIOMode = types.SimpleNamespace(INPUT=0, OUTPUT=1)
    trt.nptype = lambda _dtype: np.float32

    class ILogger:
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO = 0, 1, 2, 3

        def __init__(self) -> None:
            pass

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i: int) -> str:
            return ("images", "descriptors")[i]

        def get_tensor_mode(self, name: str) -> int:
            return 0 if name == "images" else 1

        def get_tensor_dtype(self, _name: str) -> str:
            return "float32"

        def get_tensor_shape(self, name: str) -> tuple:
            return (-1, 3, SIZE, SIZE) if name == "images" else (-1, engine_dim)

        device_memory_size_v2 = 4096

        def create_execution_context(self, strategy: str = "STATIC") -> FakeContext:
            assert strategy == "USER_MANAGED"
            made.setdefault("contexts", []).append(FakeContext(cuda, 4))
            made["context"] = made["contexts"][0]
            return made["contexts"][-1]

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, blob: bytes) -> Engine | None:
            return Engine() if blob == BLOB else None

    trt.ILogger, trt.Runtime = ILogger, Runtime
    trt.ExecutionContextAllocationStrategy = types.SimpleNamespace(
        STATIC="STATIC", ON_PROFILE_CHANGE="ON_PROFILE_CHANGE", USER_MANAGED="USER_MANAGED")
    return trt


def write_engine(folder: Path) -> Path:
    metadata = ModelMetadata(DIM, PreprocessSpec(SIZE, SIZE), {"backbone": "x"}, "ab" * 32,
                             "fp16", "0.1.0")  # fmt: skip
    header = {
        "trt_version": "10.3.0.26", "gpu_name": "NVIDIA L4", "compute_capability": "8.9",
        "precision": "fp16", "batch_min": 1, "batch_opt": 2, "batch_max": 4,
        "onnx_sha256": "cd" * 32, "metadata": metadata.to_props(),
        "engine_sha256": hashlib.sha256(BLOB).hexdigest(),
    }  # fmt: skip
    engine = folder / "m.engine"
    engine.write_bytes(BLOB)
    header_path(engine).write_text(json.dumps(header))
    return engine


def backend_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine_dim: int = DIM,
    capture_fails: bool = False,
) -> tuple[tensorrt_backend.TensorRTBackend, FakeCuda, dict]:  # fmt: skip
    cuda, made = FakeCuda(capture_fails), {}
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cuda
    package = types.ModuleType("cuda")
    package.bindings = bindings
    monkeypatch.setitem(sys.modules, "cuda", package)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(cuda, engine_dim, made))
    monkeypatch.setattr(tensorrt_backend, "_PROCESS_LOG", None)
    backend = tensorrt_backend.TensorRTBackend(write_engine(tmp_path))
    return backend, cuda, made


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, SIZE, SIZE), dtype=np.float32)


def executed(made: dict) -> int:
    return sum(context.executed for context in made["contexts"])


def test_batches_travel_through_the_buffers_and_repeat_sizes_replay_a_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, cuda, made = backend_with(tmp_path, monkeypatch)
    assert cuda.stream_flags == 1  # a non-blocking stream
    for step in range(4):  # batch 3: plain, then run once more and captured, then replayed
        batch = images(3, step)
        np.testing.assert_array_equal(backend.run(batch), batch.reshape(3, -1)[:, :DIM])
    assert executed(made) == 2 and cuda.launches == 2
    batch = images(1, 9)  # a new size starts plain again
    np.testing.assert_array_equal(backend.run(batch), batch.reshape(1, -1)[:, :DIM])
    assert executed(made) == 3
    backend.close()
    backend.close()  # twice: harmless
    assert not cuda.memory  # every buffer freed
    with pytest.raises(EdgeVPRError, match="is closed"):
        backend.run(images(1, 0))


def test_sizes_alternating_each_replay_their_own_graph(tmp_path, monkeypatch) -> None:
    """The embedder's tail batch changes the size between calls: each captured size has a
    context of its own, so no capture follows a shape change and every graph stays valid."""
    backend, cuda, made = backend_with(tmp_path, monkeypatch)
    for step in range(6):
        n = 4 if step % 2 == 0 else 1
        batch = images(n, step)
        np.testing.assert_array_equal(backend.run(batch), batch.reshape(n, -1)[:, :DIM])
    assert cuda.sticky == 0 and not cuda.invalidated
    assert len(made["contexts"]) == 3 and cuda.launches == 2
    memories = {context.memory for context in made["contexts"]}
    assert len(memories) == 1  # one block of device memory for all contexts


def test_a_stream_that_cannot_be_captured_runs_plainly(tmp_path, monkeypatch) -> None:
    backend, cuda, made = backend_with(tmp_path, monkeypatch, capture_fails=True)
    for step in range(3):
        batch = images(2, step)
        np.testing.assert_array_equal(backend.run(batch), batch.reshape(2, -1)[:, :DIM])
    assert executed(made) == 3 and cuda.launches == 0


def test_an_invalidated_capture_clears_cudas_error(tmp_path, monkeypatch) -> None:
    backend, cuda, made = backend_with(tmp_path, monkeypatch)
    original = backend._new_context

    def reshaped_context():  # a context TensorRT would still have to set up when captured
        context = original()
        context.set_input_shape("images", (4, 3, SIZE, SIZE))
        context.execute_async_v3 = _reshape_first(context)
        return context

    def _reshape_first(context):
        plain = type(context).execute_async_v3

        def run(stream):
            if cuda.capturing is not None:
                context.reshaped = True
            return plain(context, stream)

        return run

    monkeypatch.setattr(backend, "_new_context", reshaped_context)
    for step in range(4):
        batch = images(2, step)
        np.testing.assert_array_equal(backend.run(batch), batch.reshape(2, -1)[:, :DIM])
    assert backend._graphs[2] is None and cuda.launches == 0 and cuda.sticky == 0


def test_a_driver_older_than_cuda_python_is_one_line(tmp_path, monkeypatch) -> None:
    cuda = FakeCuda(False)
    cuda.driver_error = 35
    monkeypatch.setattr(tensorrt_backend, "_import_cudart", lambda: cuda)
    with pytest.raises(EdgeVPRError, match=r"error 35 .*cuda-python==12\.6"):
        tensorrt_backend.local_gpu()


def test_a_failure_while_opening_frees_what_was_allocated(tmp_path, monkeypatch) -> None:
    backend, cuda, _ = backend_with(tmp_path, monkeypatch)
    backend.close()

    def refuse(*args):
        raise EdgeVPRError("no context")

    monkeypatch.setattr(tensorrt_backend.TensorRTBackend, "_new_context", refuse)
    with pytest.raises(EdgeVPRError, match="no context"):
        tensorrt_backend.TensorRTBackend(tmp_path / "m.engine")
    assert not cuda.memory


def test_a_collected_backend_frees_its_memory(tmp_path, monkeypatch) -> None:
    import gc

    backend, cuda, _ = backend_with(tmp_path, monkeypatch)
    backend.run(images(2, 0))
    assert cuda.memory
    del backend
    gc.collect()
    assert not cuda.memory


def test_a_shape_the_engine_refuses_is_one_line(tmp_path, monkeypatch) -> None:
    backend, _, made = backend_with(tmp_path, monkeypatch)
    made["context"].max_batch = 2  # as if its profile stopped short of the header's
    with pytest.raises(EdgeVPRError, match=r"refused input shape \(3, 3, 16, 16\)"):
        backend.run(images(3, 0))


def test_an_engine_whose_output_differs_from_its_header_is_refused(
    tmp_path, monkeypatch
) -> None:
    with pytest.raises(EdgeVPRError, match=r"gives \(-1, 16\), but its header says N x 8"):
        backend_with(tmp_path, monkeypatch, engine_dim=16)


def test_the_embedder_runs_an_engine_end_to_end(tmp_path, monkeypatch) -> None:
    backend_with(tmp_path, monkeypatch)  # installs the stand-ins
    with Embedder(tmp_path / "m.engine") as embedder:
        found = embedder.embed_images([np.full((SIZE, SIZE, 3), 200, np.uint8)] * 5)
    red = (200 / 255 - 0.485) / 0.229  # the first values of each image: preprocessed red
    assert found.shape == (5, DIM) and np.allclose(found, red, atol=1e-4)
