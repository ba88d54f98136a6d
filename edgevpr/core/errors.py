"""The one exception type a user sees: its message is printed as a single line."""


class EdgeVPRError(Exception):
    """A problem with the user's input or environment, explained in one line.

    The CLI prints ``error: <message>`` and exits with ``exit_code`` instead of a traceback.
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class GateFailure(EdgeVPRError):
    """An exported artifact failed its parity gate (exit 1, as a failed check)."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread by the CLI's handler, so that every
    ``finally`` and atomic write runs as for Ctrl-C (nothing temporary is left behind) and
    a long run can keep what it has done. ``name``: the signal's name."""

    def __init__(self, name: str = "SIGINT") -> None:
        super().__init__(name)
        self.name = name

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended."""
        return 143 if self.name == "SIGTERM" else 130


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type's name if it has none), cut to
    ``limit`` characters: what a one-line error quotes of a library's long complaint."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
