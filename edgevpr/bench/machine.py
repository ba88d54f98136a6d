"""Name the machine a benchmark ran on: numbers without a machine are not numbers.

Torch is never imported here (its version comes from the installed package metadata), so the
header can be written on a torch-free robot.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from typing import Any

from edgevpr.core.cpus import usable_cores

# ISA extensions that decide what the CPU does fast: FP32 (AVX2/AVX-512), INT8 (VNNI, AMX), BF16.
ISA_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "i8mm",
    "bf16",
    "sve",
)

# distribution name -> label; GPU builds of onnxruntime and OpenCV ship under other names.
PACKAGES = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu11"),
    "torch": ("torch",),
    "numpy": ("numpy",),
    "hnswlib": ("hnswlib",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless"),
    "onnx": ("onnx",),
}


def cpu_info() -> dict[str, Any]:
    """Model name, logical cores usable by this process, and the ISA flags that matter."""
    model = ""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    usable = usable_cores()
    return {
        "model": model or platform.processor() or platform.machine() or "unknown",
        "cores": usable,
        "cores_total": os.cpu_count() or usable,
        "arch": platform.machine(),
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
    }


def gpu_info() -> list[dict[str, str]]:
    """GPUs as nvidia-smi reports them; empty where there is no nvidia-smi or no GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    query = "--query-gpu=name,driver_version,memory.total"
    try:
        out = subprocess.run(
            [smi, query, "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def package_version(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def versions() -> dict[str, str | None]:
    found = {label: package_version(*dists) for label, dists in PACKAGES.items()}
    found["python"] = platform.python_version()
    found["edgevpr"] = package_version("edgevpr")
    return found


def ort_providers() -> list[str]:
    """Execution providers this onnxruntime build offers (not whether a device is present)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def memory_total_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    """Everything the header says, as plain data (it also goes into the JSON report)."""
    return {
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu_info(),
        "memory_gib": memory_total_gib(),
        "gpus": gpu_info(),
        "versions": versions(),
        "ort_providers": ort_providers(),
    }


def describe_cpu(info: dict[str, Any]) -> str:
    cpu = info["cpu"]
    cores = f"{cpu['cores']} cores" if cpu["cores"] == cpu["cores_total"] else (
        f"{cpu['cores']} of {cpu['cores_total']} cores"
    )
    isa = f", {' '.join(cpu['isa'])}" if cpu["isa"] else ""
    return f"{cpu['model']} ({cores}, {cpu['arch']}{isa})"


def describe_gpus(info: dict[str, Any]) -> str:
    if not info["gpus"]:
        return "none"
    return "; ".join(f"{g['name']} ({g['memory']}, driver {g['driver']})" for g in info["gpus"])


def header_lines(info: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs naming the machine, for the report's header."""
    v = info["versions"]
    memory = f", {info['memory_gib']} GiB RAM" if info.get("memory_gib") else ""
    software = ", ".join(
        f"{label} {v[label] or 'not installed'}"
        for label in ("onnxruntime", "tensorrt", "torch", "numpy", "hnswlib", "opencv")
    )
    return [
        ("CPU", describe_cpu(info) + memory),
        ("GPU", describe_gpus(info)),
        ("OS", f"{info['os']}, Python {v['python']}, edgevpr {v['edgevpr'] or 'unknown'}"),
        ("Software", software),
        ("ORT providers", ", ".join(info.get("ort_providers") or []) or "none"),
    ]


def one_line(info: dict[str, Any]) -> str:
    """A short machine name for CSV rows and chart titles."""
    gpu = describe_gpus(info)
    return describe_cpu(info) + ("" if gpu == "none" else f" + {gpu}")
