from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from edgevpr.runtime.embedder import Embedder

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real VPR sets beside the repository (../shared/data); skip where absent."""
    if not (SHARED_DATA / "corridor").is_dir() or not (SHARED_DATA / "nordland64").is_dir():
        pytest.skip(f"real VPR data not found at {SHARED_DATA}")
    return SHARED_DATA


# ------------------------------------------------------------------ one small real model
# EfficientNet-Lite0 + MixVPR 512 at 64x64: the real ImageNet weights, cheap enough for two
# CPU cores; exported once per session and shared by the runtime and input tests.
RUNTIME_MODEL_SIZE = 64


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    from edgevpr.export.onnx_export import export_onnx
    from edgevpr.model import build_model, get_preset
    from edgevpr.model.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)  # the head is untrained: the same head whichever test runs first
    folder = tmp_path_factory.mktemp("runtime-model")
    config = get_preset("mixvpr_lite0_512").with_size(RUNTIME_MODEL_SIZE, RUNTIME_MODEL_SIZE)
    save_checkpoint(folder / "lite0.pt", build_model(config, pretrained=True))
    export_onnx(load_checkpoint(folder / "lite0.pt"), folder / "lite0.onnx")
    return {"checkpoint": folder / "lite0.pt", "onnx": folder / "lite0.onnx"}


@pytest.fixture(scope="session")
def torch_model(exported: dict[str, Path]):  # -> Checkpoint (torch stays out of imports)
    from edgevpr.model.checkpoint import load_checkpoint

    return load_checkpoint(exported["checkpoint"])


@pytest.fixture(scope="session")
def embedder(exported: dict[str, Path]) -> Embedder:
    return Embedder(exported["onnx"], providers=["cpu"])




# ------------------------------------------------------------------ shared helpers
class CliResult(NamedTuple):
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capfd: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``cli("index", "build", ...)`` (or one list of arguments): ``edgevpr`` run in this
    process; its exit code and what it printed, caught at the file-descriptor level so that
    anything a native library prints is seen too."""
    from edgevpr.cli import main

    def run(*argv: object) -> CliResult:
        if len(argv) == 1 and isinstance(argv[0], (list, tuple)):
            argv = tuple(argv[0])
        capfd.readouterr()
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capfd.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine two spinning threads are far slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def session_cli() -> Callable[..., CliResult]:
    """``cli`` for session-scoped fixtures: Python-level output only (no file descriptors
    to capture outside a test)."""
    import contextlib
    import io

    from edgevpr.cli import main

    def run(*argv: object) -> CliResult:
        if len(argv) == 1 and isinstance(argv[0], (list, tuple)):
            argv = tuple(argv[0])
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in argv])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        return CliResult(code, out.getvalue(), err.getvalue())

    return run
