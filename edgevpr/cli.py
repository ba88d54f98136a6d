"""The ``edgevpr`` command: a thin dispatcher that calls the stages.

Subcommands are imported lazily so that the runtime commands (``query``, ``index``) never
import torch, and a missing optional dependency only affects the command that needs it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

import click

from edgevpr import __version__
from edgevpr.core.errors import EdgeVPRError, Interrupted
from edgevpr.core.extras import EXTRA_FOR_MODULE

# command name -> "module:attribute"; each stage owns its own click commands.
COMMANDS = {
    "demo": ("edgevpr.demo:demo", "Run the whole pipeline on built-in synthetic data."),
    "info": ("edgevpr.info:info", "Describe a checkpoint, ONNX model, engine or place map."),
    "synth": ("edgevpr.data.cli:synth", "Generate a synthetic VPR dataset."),
    "record": ("edgevpr.data.cli:record", "Record named images as a drive (bag, video, photos)."),
    "train": ("edgevpr.train.cli:train", "Train a VPR model."),
    "eval": ("edgevpr.eval.cli:evaluate", "Recall@N of a checkpoint or exported model."),
    "export": ("edgevpr.export.cli:export", "Export to ONNX / INT8 / TensorRT with parity gates."),
    "index": ("edgevpr.runtime.commands.index:index", "Build, compact and inspect place maps."),
    "query": ("edgevpr.runtime.commands.query:query", "Recognise places in query images."),
    "localize": (
        "edgevpr.runtime.commands.localize:localize",
        "Track a position over frames, a video or a ROS bag.",
    ),
    "bench": ("edgevpr.bench.cli:bench", "Latency tables per backend, precision and batch."),
}



class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # From the table, so that --help imports no stage (and no torch).
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in sorted(COMMANDS)])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[name][0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            extra = EXTRA_FOR_MODULE.get(missing)
            if extra is None:
                raise
            raise EdgeVPRError(
                f"'edgevpr {name}' needs the '{missing}' package: pip install 'edgevpr[{extra}]'"
            ) from exc
        return getattr(module, attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgevpr")
def cli() -> None:
    """Visual place recognition from training to the edge."""


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread while a command runs
    (SIGTERM would otherwise end the process on the spot, leaving temporary files)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def quiet_video_backends() -> None:
    """Keep FFmpeg's and OpenCV's own log lines off stderr (read when OpenCV loads, so set
    before any command imports it); EDGEVPR_DEBUG=1 or the variables set by hand keep them."""
    if not os.environ.get("EDGEVPR_DEBUG"):
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit."""
    quiet_video_backends()
    try:
        with signals_interrupt():
            code = cli.main(args=argv, prog_name="edgevpr", standalone_mode=False)
    except EdgeVPRError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:  # click's name for a KeyboardInterrupt inside it
        cause = exc.__cause__
        if isinstance(cause, Interrupted):
            click.echo(f"interrupted ({cause.name})", err=True)
            sys.exit(cause.exit_code)
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        # One line, like every other error; the command's --help has the usage.
        command = exc.ctx.command_path if exc.ctx else "edgevpr"
        click.echo(f"error: {exc.format_message()} (see '{command} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except Interrupted as exc:
        click.echo(f"interrupted ({exc.name})", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("EDGEVPR_DEBUG"):
            raise
        click.echo(
            f"internal error: {type(exc).__name__}: {exc} (set EDGEVPR_DEBUG=1 for a traceback)",
            err=True,
        )
        sys.exit(3)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
