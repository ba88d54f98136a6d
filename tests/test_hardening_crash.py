"""A process killed with SIGKILL while it writes a place map, an ONNX export or a checkpoint
leaves the file it was replacing loadable: the old version or the new one, whole.

A child process saves two versions to one target in turn; the parent kills it, some rounds
exactly inside a save (the child says when it reaches fsync, its data written but not yet
renamed into place: the widest window for a torn file) and some at a random moment. After
every kill the target must load and be one of the two versions, and nothing but the
writer's own temporary files may have appeared beside it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from corpus import GoodFiles, good_files

from edgevpr.runtime.placemap import PlaceMap

pytestmark = [pytest.mark.slow,  # kills real subprocesses mid-write
              pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")]

# The child: save version A and version B to TARGET in turn, forever. The files the writers
# open with os.fdopen are slowed down and announce their first write, and fsync announces
# itself and takes a while (a slow disk): the parent can kill in the middle of the data or
# between the data and the rename.
CHILD = r"""
import os, sys, time
kind, target, a, b = sys.argv[1:5]
real_fsync, real_fdopen = os.fsync, os.fdopen
def slow_fsync(fd):
    print("fsync", flush=True)
    time.sleep(0.05)
    real_fsync(fd)
class SlowFile:
    def __init__(self, f):
        self._f, self._writes = f, 0
    def __getattr__(self, name):
        return getattr(self._f, name)
    def write(self, data):
        if self._writes == 0:
            print("writing", flush=True)
        if self._writes < 10:  # the first writes of each file are slow
            time.sleep(0.005)
        self._writes += 1
        return self._f.write(data)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self._f.close()
os.fsync = slow_fsync
os.fdopen = lambda *args, **kw: SlowFile(real_fdopen(*args, **kw))
if kind == "map":
    from edgevpr.runtime.placemap import PlaceMap
    versions = [PlaceMap.load(a), PlaceMap.load(b)]
    save = lambda version, path: version.save(path)
elif kind == "onnx":
    import onnx
    from edgevpr.export.onnx_io import save_onnx_atomic
    versions = [onnx.load(a), onnx.load(b)]
    save = lambda version, path: save_onnx_atomic(version, path)
else:
    from edgevpr.model.checkpoint import load_checkpoint, save_checkpoint
    versions = [load_checkpoint(a).model, load_checkpoint(b).model]
    save = lambda version, path: save_checkpoint(path, version)
print("ready", flush=True)
i = 0
while True:
    save(versions[i % 2], target)
    print("saved", i, flush=True)
    i += 1
"""


@pytest.fixture(scope="session")
def good(tmp_path_factory: pytest.TempPathFactory) -> GoodFiles:
    return good_files(tmp_path_factory.mktemp("hardening-good"))


MOMENTS = ("writing", "fsync", "random")


def kill_while_saving(kind: str, target: Path, a: Path, b: Path, moment: str) -> None:
    """Start the child, let it finish one save, then SIGKILL it at ``moment`` of a later one:
    in the middle of its data, at its fsync (data written, not renamed), or at random."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, kind, str(target), str(a), str(b)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert child.stdout is not None
        saves = 0
        for line in child.stdout:
            if line.startswith("saved"):
                saves += 1
                if moment == "random":
                    break
            elif saves and line.startswith(moment):
                break
        else:
            pytest.fail(f"the {kind} writer exited with {child.wait()}")
        if moment == "random":  # somewhere in the next saves (each takes >= 50 ms here)
            time.sleep(random.uniform(0.0, 0.2))
        elif moment == "writing":  # a few slowed writes into the data
            time.sleep(random.uniform(0.0, 0.02))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL


def only_temporary_files_beside(target: Path, before: set[str]) -> None:
    appeared = {p.name for p in target.parent.iterdir()} - before - {target.name}
    # a kill may leave the writer's temporary files and its (then unheld) lock file
    leftovers = (f".{target.name}.lock",)
    torn = [n for n in appeared if n not in leftovers
            and not (n.startswith(f".{target.name}.") and n.endswith(".tmp"))]  # fmt: skip
    assert not torn, f"files other than the writer's temporary ones appeared: {torn}"


def crash_rounds(
    kind: str, target: Path, a: Path, b: Path, check: Callable[[Path], None], rounds: int = 6
) -> int:
    """Kill the writer ``rounds`` times, at each moment in turn; returns how many kills left
    a temporary file behind (proof that they came inside a save)."""
    before = {p.name for p in target.parent.iterdir()}
    interrupted = 0
    for round_ in range(rounds):
        temporaries = set(target.parent.glob(f".{target.name}.*.tmp"))
        kill_while_saving(kind, target, a, b, MOMENTS[round_ % len(MOMENTS)])
        check(target)
        only_temporary_files_beside(target, before)
        interrupted += len(set(target.parent.glob(f".{target.name}.*.tmp")) - temporaries) > 0
    return interrupted


def test_killed_while_saving_a_map(good: GoodFiles, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    versions = []
    for name, count in (("a.vprmap", 3000), ("b.vprmap", 2000)):  # a few MB each
        placemap = PlaceMap.create(256, "f" * 64, index="hnswlib", ef_construction=16)
        placemap.add(rng.standard_normal((count, 256)).astype(np.float32))
        placemap.save(tmp_path / name)
        versions.append(placemap)
    target = tmp_path / "live" / "places.vprmap"
    target.parent.mkdir()
    versions[0].save(target)
    probe = rng.standard_normal((4, 256)).astype(np.float32)
    answers = {len(v): v.search(probe, k=3)[0].tolist() for v in versions}

    def check(path: Path) -> None:
        loaded = PlaceMap.load(path)
        assert len(loaded) in answers
        assert loaded.search(probe, k=3)[0].tolist() == answers[len(loaded)]

    interrupted = crash_rounds("map", target, tmp_path / "a.vprmap", tmp_path / "b.vprmap", check)
    assert interrupted >= 4  # the kills while writing and at fsync at least


def test_killed_while_writing_an_onnx_export(good: GoodFiles, tmp_path: Path) -> None:
    import onnx

    from edgevpr.runtime.backends.onnxruntime import read_onnx_metadata

    other = onnx.load(str(good.onnx))
    for prop in other.metadata_props:
        if prop.key == "edgevpr.version":
            prop.value = "crash-test"
    (tmp_path / "b.onnx").write_bytes(other.SerializeToString())
    target = tmp_path / "live" / "model.onnx"
    target.parent.mkdir()
    target.write_bytes(good.onnx.read_bytes())
    versions = {good.onnx.read_bytes(), (tmp_path / "b.onnx").read_bytes()}

    def check(path: Path) -> None:
        assert path.read_bytes() in versions
        assert read_onnx_metadata(path).descriptor_dim == 512

    interrupted = crash_rounds("onnx", target, good.onnx, tmp_path / "b.onnx", check)
    assert interrupted >= 4  # the kills while writing and at fsync at least


@pytest.mark.slow
def test_killed_while_saving_a_checkpoint(good: GoodFiles, tmp_path: Path) -> None:
    import torch

    from edgevpr.model.checkpoint import load_checkpoint, save_checkpoint

    model = load_checkpoint(good.checkpoint).model
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_checkpoint(tmp_path / "b.pt", model)
    first = {
        name: next(load_checkpoint(p).model.parameters()).sum().item()
        for name, p in (("a", good.checkpoint), ("b", tmp_path / "b.pt"))
    }
    target = tmp_path / "live" / "last.pt"
    target.parent.mkdir()
    target.write_bytes(good.checkpoint.read_bytes())

    def check(path: Path) -> None:
        loaded = next(load_checkpoint(path).model.parameters()).sum().item()
        assert loaded in first.values()

    interrupted = crash_rounds(
        "checkpoint", target, good.checkpoint, tmp_path / "b.pt", check, rounds=3
    )
    assert interrupted >= 2  # the kills while writing and at fsync at least
