"""Control-API errors and the checks every emulator's control API applies to its inputs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class EmulatorError(ValueError):
    """Misuse of the control API (Python or HTTP); `status` is the HTTP status /_control answers."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_fields(body: dict[str, Any], allowed: set[str], required: Iterable[str] = ()) -> None:
    """EmulatorError naming any field of `body` not in `allowed`, or any `required` one missing."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise EmulatorError(f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    missing = [name for name in required if body.get(name) in (None, "")]
    if missing:
        raise EmulatorError(f"missing field(s): {', '.join(missing)}")


def number(raw: object, name: str, *, minimum: float, strict: bool = False) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise EmulatorError(f"{name} must be a number, got {raw!r}")
    if raw < minimum or (strict and raw == minimum):
        raise EmulatorError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {raw!r}")
    return float(raw)


def positive_int(raw: object, name: str, upper: int | None = None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1 or (upper is not None and raw > upper):
        bound = f" and at most {upper}" if upper is not None else ""
        raise EmulatorError(f"{name} must be an integer of at least 1{bound}, got {raw!r}")
    return raw
