"""When something was made: the UTC timestamp every written artifact records (checkpoints,
place maps, engine headers, parity reports)."""

from __future__ import annotations

import datetime as _dt


def utc_now() -> str:
    """The current time in UTC, ISO 8601 to the second: '2026-11-29T20:15:03+00:00'."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
