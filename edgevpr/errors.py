"""Where code written for edgevpr 0.1 finds the one exception type; it lives in
``edgevpr.core.errors``."""

from edgevpr.core.errors import EdgeVPRError, GateFailure

__all__ = ["EdgeVPRError", "GateFailure"]
