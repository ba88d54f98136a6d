"""OpenVINO backend for ONNX models (``--provider openvino`` / ``openvino-bf16``): FP32,
BF16 by its precision hint where the CPU has AMX or AVX-512 BF16, and INT8 from the Q/DQ
model ``export --int8`` writes (OpenVINO runs the quantised graph as it is), on the CPU
(GPU and NPU devices where OpenVINO finds them: ``("openvino", {"device": "GPU"})``).

Compiled models are cached (``CACHE_DIR`` under edgevpr's cache folder), so the second start
imports instead of compiling. The model's metadata and input/output are read as for ONNX
Runtime (the same checks, external data included).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.core.errors import EdgeVPRError, first_line
from edgevpr.core.extras import install_hint
from edgevpr.core.files import cache_root
from edgevpr.core.metadata import ModelMetadata
from edgevpr.runtime.backends import PROVIDER_ALIASES, provider_named, provider_request
from edgevpr.runtime.backends.onnx_external import check_external_data
from edgevpr.runtime.backends.onnxruntime import model_io, open_cpu_session

DEVICE_KEY = "device"  # a provider option of ours: the OpenVINO device (CPU, GPU, NPU)


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise EdgeVPRError(f"the OpenVINO provider needs openvino: {install_hint('openvino')}"
                           ) from None
    return openvino


class OpenVINOBackend:
    """One compiled OpenVINO model and its infer request (runs serialised by a lock)."""

    def __init__(self, path: Path, providers: list[Any] | None = None,
                 threads: int | None = None, batch_size: int | None = None) -> None:  # fmt: skip
        """``batch_size`` is not used: the model keeps its dynamic batch."""
        ov = import_openvino()
        self.path = Path(path)
        name, given = provider_request((providers or ["openvino"])[0])
        row = provider_named(PROVIDER_ALIASES.get(name.lower(), name))
        assert row is not None  # the dispatcher chose this backend by the row
        options = {**dict(row.options), **given}
        device = str(options.pop(DEVICE_KEY, "CPU"))
        if threads is not None:
            options["INFERENCE_NUM_THREADS"] = int(threads)
        options.setdefault("PERFORMANCE_HINT", "LATENCY")
        check_external_data(self.path, "load")
        session = open_cpu_session(self.path)  # the same reading and checks as ONNX Runtime
        props = session.get_modelmeta().custom_metadata_map
        self.metadata = ModelMetadata.from_props(props, source=f"ONNX model {self.path}")
        io = model_io(session, self.metadata, self.path)
        self.min_batch, self.max_batch = io.min_batch, io.max_batch
        self._input_dtype = np.dtype(io.input_dtype)
        core = ov.Core()
        cache = cache_root() / "openvino"
        cache.mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(cache)})
        if device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices}:
            raise EdgeVPRError(f"OpenVINO has no {device} device here (it has "
                               f"{', '.join(core.available_devices)})")  # fmt: skip
        try:
            self._compiled = core.compile_model(str(self.path), device, options)
        except RuntimeError as exc:
            raise EdgeVPRError(f"OpenVINO cannot compile {self.path}: {first_line(exc)}") from None
        self._request = self._compiled.create_infer_request()
        self._output = self._compiled.output(0)
        precision = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = str(precision).lower().replace("<type: '", "").rstrip("'>")
        self.device = "cpu" if device.upper().startswith("CPU") else device.lower()
        version = ov.__version__.split("-")[0]
        self.description = f"openvino {version} ({device}, {self.precision})"
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x H x W -> N x D float32 (a fresh array)."""
        with self._lock:
            if self._request is None:
                raise EdgeVPRError(f"the OpenVINO model {self.path.name} is closed")
            feed = np.ascontiguousarray(batch, dtype=self._input_dtype)
            result = self._request.infer({0: feed})[self._output]
            return np.array(result, dtype=np.float32, copy=True)

    def close(self) -> None:
        with self._lock:
            self._request = None
            self._compiled = None
