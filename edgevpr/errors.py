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
