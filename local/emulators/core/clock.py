"""The emulators' time source: real UTC time plus an offset that only moves forward when told to.

The local stack's LocalClock moves it (`advance_clock`) whenever virtual time moves.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


def iso(value: datetime) -> str:
    """UTC ISO 8601 with a `Z`, as the control API and the logs show times."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class EmulatorClock:
    """Mixin: the emulator's clock. `_reset_clock()` belongs in the emulator's reset()."""

    _lock: threading.RLock
    _clock_offset: timedelta

    def _reset_clock(self) -> None:
        self._clock_offset = timedelta(0)

    def now(self) -> datetime:
        """The emulator's clock (real UTC time plus any `advance_clock` offset)."""
        return datetime.now(UTC) + self._clock_offset

    def advance_clock(self, seconds: float) -> datetime:
        """Move the clock forward: tokens, codes, subscriptions and channels age with it."""
        with self._lock:
            self._clock_offset += timedelta(seconds=seconds)
            return self.now()
