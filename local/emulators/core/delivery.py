"""Notification delivery, the one engine both emulators push with.

Deliveries run on background threads and never send under the lock. Each waits the configured delay
once, then POSTs; an attempt that fails (no answer, not 2xx, or with `late_answers_fail` an answer
after the deadline) is retried after each wait of its backoff while the emulator says it may be.
`pause`/`resume` hold and release deliveries, `flush` waits for all in flight (batch windows too),
and reset() starts a new generation so that deliveries from before stop quietly. What a delivery
carries, who it is for and what its log entry says are the emulator's (the `_*` hooks below).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests as _http

from local.emulators.core.clock import EmulatorClock
from local.emulators.core.errors import EmulatorError, number

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback_url(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS


@dataclass(kw_only=True)
class Delivery:
    """One notification POST and its retries; emulators subclass it with what the POST is for."""

    id: str
    generation: int  # reset() starts a new generation; older deliveries stop quietly
    backoff: tuple[float, ...]  # waits before attempts 2, 3, ...: at most 1 + len(backoff) attempts
    attempt: int = 0  # attempts made so far
    delayed: bool = False  # notification_delay_seconds already waited


@dataclass(frozen=True)
class Attempt:
    """What one attempt sends (built under the lock, sent without it)."""

    url: str
    body: bytes
    headers: dict[str, str]
    timeout: float
    at: datetime


@dataclass(frozen=True)
class Outcome:
    status: int | None
    error: str | None  # None: delivered (2xx in time)
    duration: float


def post_notification(attempt: Attempt, late_answers_fail: bool) -> Outcome:
    """POST one notification; loopback URLs never go through an HTTP(S)_PROXY."""
    session = _http.Session()
    session.trust_env = not is_loopback_url(attempt.url)
    started = time.monotonic()
    try:
        answer = session.post(
            attempt.url,
            data=attempt.body,
            headers=attempt.headers,
            timeout=attempt.timeout,
            allow_redirects=False,
        )
    except _http.Timeout:
        return Outcome(None, f"timeout: no answer within {attempt.timeout:g} s", time.monotonic() - started)
    except _http.RequestException as exc:
        return Outcome(None, f"connection failed: {type(exc).__name__}", time.monotonic() - started)
    finally:
        session.close()
    duration = time.monotonic() - started
    if late_answers_fail and duration > attempt.timeout:
        late = f"late: answered after {duration:.2f} s (deadline {attempt.timeout:g} s)"
        return Outcome(answer.status_code, late, duration)
    if not 200 <= answer.status_code < 300:
        return Outcome(answer.status_code, f"HTTP {answer.status_code}", duration)
    return Outcome(answer.status_code, None, duration)


class NotificationDelivery(EmulatorClock):
    """Mixin: the delivery engine and its control (config, log, pause/resume/flush)."""

    name: ClassVar[str] = "emulator"  # thread names
    late_answers_fail: ClassVar[bool] = False
    knob_defaults: ClassVar[dict[str, Any]] = {}

    _lock: threading.RLock
    _deliveries_changed: threading.Condition
    _generation: int
    _notification_defaults: dict[str, Any]
    _notification_config: dict[str, Any]
    _notification_log: list[dict[str, Any]]
    _notification_seq: int
    _in_flight: int  # deliveries (incl. their delay and backoff waits) + open windows
    _windows: dict[str, list[Any]]  # open batch / coalescing windows: key -> items waiting
    _delivery_paused: bool
    _queued: list[Any]  # deliveries held while paused

    # -- hooks ---------------------------------------------------------------------------------------

    def _check_knob(self, name: str, raw: object) -> Any:
        """The checked value of one knob other than notification_retry_backoff."""
        raise NotImplementedError

    def _prepare_attempt(self, d: Any) -> tuple[str, bytes, dict[str, str]] | None:
        """(url, body, headers) of the next attempt, or None when there is nothing left to send
        (lock held)."""
        raise NotImplementedError

    def _after_attempt(self, d: Any, outcome: Outcome) -> list[Any]:
        """Account for an attempt's outcome; returns deliveries it causes (lock held)."""
        return []

    def _may_retry(self, d: Any, outcome: Outcome) -> bool:
        """Whether a failed attempt is worth another (lock held)."""
        return True

    def _attempt_entry(self, d: Any, attempt: Attempt, outcome: Outcome, will_retry: bool) -> dict[str, Any]:
        """The notification log entry of one attempt (no bodies)."""
        raise NotImplementedError

    def _window_closed(self, key: str, items: list[Any]) -> list[Any]:
        """The deliveries of a window that closes with `items` (lock held)."""
        raise NotImplementedError

    # -- setup ---------------------------------------------------------------------------------------

    def _init_delivery(self, knobs: dict[str, Any]) -> None:
        """In __init__, after the lock: the knobs reset() goes back to."""
        self._deliveries_changed = threading.Condition(self._lock)
        self._notification_defaults = self._check_knobs(knobs, self.knob_defaults)
        self._generation = 0

    def _reset_delivery(self) -> None:
        self._generation += 1
        self._notification_config = dict(self._notification_defaults)
        self._notification_log = []
        self._notification_seq = 0
        self._in_flight = 0
        self._windows = {}
        self._delivery_paused = False
        self._queued = []
        self._deliveries_changed.notify_all()

    def _check_knobs(self, changes: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        """`base` with `changes` applied, all checked; EmulatorError on unknown names or bad values."""
        unknown = sorted(set(changes) - set(self.knob_defaults))
        if unknown:
            raise EmulatorError(
                f"unknown notification setting(s): {', '.join(unknown)}; "
                f"known: {', '.join(self.knob_defaults)}"
            )
        config = dict(base)
        for name, raw in changes.items():
            if name == "notification_retry_backoff":
                if not isinstance(raw, list | tuple) or len(raw) > 20:
                    raise EmulatorError(f"{name} must be a list of at most 20 waits in seconds, got {raw!r}")
                config[name] = tuple(number(wait, name, minimum=0) for wait in raw)
            else:
                config[name] = self._check_knob(name, raw)
        return config

    # -- control -------------------------------------------------------------------------------------

    def _config_view(self) -> dict[str, Any]:
        config = dict(self._notification_config)
        config["notification_retry_backoff"] = list(config["notification_retry_backoff"])
        return config

    def notification_config(self) -> dict[str, Any]:
        """The current delivery knobs (names as in the emulator's NOTIFICATION_DEFAULTS)."""
        with self._lock:
            return self._config_view()

    def configure_notifications(self, **knobs: Any) -> dict[str, Any]:
        """Change delivery knobs at runtime (all checked before any is applied); returns them all.

        Deliveries already under way keep the retry backoff they started with.
        """
        with self._lock:
            self._notification_config = self._check_knobs(knobs, self._notification_config)
            return self._config_view()

    def notification_status(self) -> dict[str, Any]:
        """{paused, in_flight (deliveries and open windows still running), queued (held by pause)}."""
        with self._lock:
            return {
                "paused": self._delivery_paused,
                "in_flight": self._in_flight,
                "queued": len(self._queued),
            }

    def flush_notifications(self, timeout: float = 10.0) -> bool:
        """Wait until every delivery in flight (delays, windows, retries included) has finished.

        Deliveries held by `pause_notifications` are not waited for. True when all finished, False
        when `timeout` (real seconds) ran out first.
        """
        with self._deliveries_changed:
            return self._deliveries_changed.wait_for(lambda: self._in_flight == 0, timeout=timeout)

    def pause_notifications(self) -> dict[str, Any]:
        """Hold every delivery (new ones and retries) until `resume_notifications`."""
        with self._lock:
            self._delivery_paused = True
            return self.notification_status()

    def resume_notifications(self) -> dict[str, Any]:
        """Release the held deliveries (in order) and deliver normally again."""
        with self._lock:
            self._delivery_paused = False
            held, self._queued = self._queued, []
            self._in_flight += len(held)
            status = self.notification_status()
        for delivery in held:
            self._launch(delivery)
        return {**status, "released": len(held)}

    def clear_notifications(self) -> None:
        with self._lock:
            self._notification_log = []

    # -- the engine ----------------------------------------------------------------------------------

    def _track(self, deliveries: list[Any]) -> list[Any]:
        """Count new deliveries in flight (lock held); start them with _launch."""
        self._in_flight += len(deliveries)
        return deliveries

    def _open_window(self, key: str, items: list[Any], seconds: float) -> list[Callable[[], None]]:
        """Add `items` to the window open for `key`, or open one that closes after `seconds` (lock
        held); returns the thread starter of a new window."""
        window = self._windows.get(key)
        if window is not None:
            window.extend(items)
            return []
        self._windows[key] = list(items)
        self._in_flight += 1
        generation = self._generation

        def start_timer() -> None:
            threading.Thread(
                target=self._close_window,
                args=(key, seconds, generation),
                name=f"{self.name}-window",
                daemon=True,
            ).start()

        return [start_timer]

    def _close_window(self, key: str, seconds: float, generation: int) -> None:
        time.sleep(seconds)
        with self._lock:
            if generation != self._generation:
                return
            deliveries = self._window_closed(key, self._windows.pop(key, []))
            self._in_flight -= 1
            self._deliveries_changed.notify_all()
        for delivery in deliveries:
            self._launch(delivery)

    def _launch(self, delivery: Delivery) -> None:
        """Run a delivery (already counted in flight) on its own thread."""
        threading.Thread(
            target=self._deliver, args=(delivery,), name=f"{self.name}-notify", daemon=True
        ).start()

    def _deliver(self, d: Delivery) -> None:
        try:
            if not d.delayed:
                d.delayed = True
                with self._lock:
                    delay = self._notification_config["notification_delay_seconds"]
                if delay:
                    time.sleep(delay)
            while True:
                with self._lock:
                    if d.generation != self._generation:
                        return
                    if self._delivery_paused:
                        self._queued.append(d)
                        return
                    prepared = self._prepare_attempt(d)
                    if prepared is None:
                        return
                    d.attempt += 1
                    timeout = self._notification_config["notification_timeout_seconds"]
                    attempt = Attempt(*prepared, timeout=timeout, at=self.now())
                outcome = post_notification(attempt, self.late_answers_fail)
                with self._lock:
                    if d.generation != self._generation:
                        return
                    follow_ups = self._after_attempt(d, outcome)
                    will_retry = (
                        outcome.error is not None
                        and d.attempt <= len(d.backoff)
                        and self._may_retry(d, outcome)
                    )
                    self._notification_seq += 1
                    entry = self._attempt_entry(d, attempt, outcome, will_retry)
                    self._notification_log.append({"seq": self._notification_seq, **entry})
                for delivery in follow_ups:
                    self._launch(delivery)
                if not will_retry:
                    return
                time.sleep(d.backoff[d.attempt - 1])
        finally:
            with self._lock:
                if d.generation == self._generation:
                    self._in_flight -= 1
                    self._deliveries_changed.notify_all()
