"""The stack's time: real UTC time plus an offset that only grows.

``virtual=True``: ``sleep`` moves the offset on instead of sleeping, so time jumps only with
``jump_to`` (the clock's advances) and those sleeps. ``install`` makes it ``calbot.timeutil``'s time
source. Listeners (``on_move``) hear every forward jump, so the emulators' clocks can move with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from local.clock.common import ClockLog
from local.invoke import record_virtual_sleep


class TimeSource:
    """See the module docstring. Thread-safe."""

    def __init__(self, *, virtual: bool, log: ClockLog) -> None:
        self.virtual = virtual
        self._log = log
        self._offset = timedelta(0)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[float], object]] = []
        self._advanced_total = 0.0  # seconds the clock jumped other than by virtual sleeps
        self._previous_clock: tuple[Any, Any] | None = None

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    @property
    def offset_seconds(self) -> float:
        return self._offset.total_seconds()

    def sleep(self, seconds: float) -> None:
        """Virtual: move the clock on by `seconds` at once. Real: sleep."""
        if seconds <= 0:
            return
        if self.virtual:
            delta = timedelta(seconds=seconds)
            with self._lock:
                self._offset += delta
            record_virtual_sleep(seconds)  # time passed for the invocation that slept, and for the world
            self._moved(delta)
        else:
            time.sleep(seconds)

    def jump_to(self, moment: datetime) -> None:
        """Move the clock on to `moment` (never backwards)."""
        with self._lock:
            delta = moment - (datetime.now(UTC) + self._offset)
            if delta <= timedelta(0):
                return
            self._offset += delta
            self._advanced_total += delta.total_seconds()
        self._moved(delta)

    def advanced_seconds(self) -> float:
        """How far the clock has jumped by advances (not by virtual sleeps): time that passed for every
        invocation running meanwhile."""
        return self._advanced_total

    def _moved(self, delta: timedelta) -> None:
        for listener in list(self._listeners):
            try:
                listener(delta.total_seconds())
            except Exception as exc:
                self._log(f"[clock] a clock listener failed: {exc!r}")

    def on_move(self, listener: Callable[[float], object]) -> None:
        """Call `listener(seconds)` whenever the clock jumps forward (advance, virtual sleep), so other
        clocks of the stack (the Graph emulator's) can move with it."""
        self._listeners.append(listener)

    def install(self) -> None:
        """Become calbot.timeutil's time source (the previous one comes back on ``uninstall``)."""
        from calbot import timeutil

        self._previous_clock = (getattr(timeutil, "_clock", None), getattr(timeutil, "_sleeper", None))
        timeutil.set_clock(self.now, self.sleep)

    def uninstall(self) -> None:
        if self._previous_clock is None:
            return
        from calbot import timeutil

        if getattr(timeutil, "_clock", None) == self.now:
            timeutil.set_clock(*self._previous_clock)
        self._previous_clock = None
