"""UTC time helpers: every stored and returned time is timezone-aware UTC, written with a `Z`.

`now()` and `sleep()` are the one source of time for the core, so tests and the local stack's virtual
clock can move time (like freezegun) without any "local mode" in production code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

_clock: Callable[[], datetime] | None = None
_sleeper: Callable[[float], None] | None = None


def now() -> datetime:
    return _clock() if _clock is not None else datetime.now(UTC)


def sleep(seconds: float) -> None:
    if seconds > 0:
        (_sleeper or time.sleep)(seconds)


def set_clock(
    clock: Callable[[], datetime] | None = None, sleeper: Callable[[float], None] | None = None
) -> None:
    """Replace the time source (None restores the real one)."""
    global _clock, _sleeper
    _clock, _sleeper = clock, sleeper


def iso_z(value: datetime) -> str:
    """2026-11-25T10:00:00Z (microseconds kept only when present)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    text = value.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def parse_iso(value: str) -> datetime:
    """Parse ISO 8601 with `Z` or an offset, and Graph's 7-digit fractions; naive means UTC."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Graph writes 7 fractional digits; Python takes at most 6.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
