"""Google push notifications: `sync` when a channel opens, `exists` on every change to its calendar
(changes within the coalescing window share one message), `not_exists` when the calendar goes;
body-less POSTs with the X-Goog-* headers, retried only on 5xx or no answer as Google does. The
delivery itself (threads, delays, retries, pause/resume/flush) is the shared engine's
(local/emulators/core/delivery.py)."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any

from local.emulators.core.clock import iso
from local.emulators.core.delivery import Attempt, Delivery, Outcome
from local.emulators.core.errors import number
from local.emulators.core.service import Emulator
from local.emulators.google.models import _Channel

log = logging.getLogger(__name__)


# Change-notification delivery knobs (GoogleEmulator keyword arguments, POST /_control/notifications/config).
NOTIFICATION_DEFAULTS: dict[str, Any] = {
    "notification_delay_seconds": 0.0,  # real seconds waited before a message is first sent
    "notification_coalesce_seconds": 0.1,  # changes to one channel within this window share one message
    "notification_timeout_seconds": 3.0,  # no answer within this = failed attempt
    "notification_retry_backoff": (1.0, 2.0, 4.0),  # waits between attempts (5xx / no answer only)
}


@dataclass(kw_only=True)
class GoogleDelivery(Delivery):
    channel_id: str
    state: str  # sync | exists | not_exists
    message_number: int = 0


class GoogleNotifications(Emulator):
    """Google's channel messages on the shared delivery engine."""

    name = "google"
    knob_defaults = NOTIFICATION_DEFAULTS
    notification_filters = ("channel_id", "state")
    _channels: dict[str, _Channel]

    def _check_knob(self, name: str, raw: object) -> Any:
        return number(raw, name, minimum=0, strict=name == "notification_timeout_seconds")

    def _queue_state(self, account_id: str, calendar_id: str, state: str) -> list[Callable[[], None]]:
        """Queue `state` for every live channel on the calendar (lock held); returns thread starters.

        `exists` messages for one channel coalesce within the configured window.
        """
        starters: list[Callable[[], None]] = []
        window = self._notification_config["notification_coalesce_seconds"]
        for channel in self._channels.values():
            if (channel.account_id, channel.calendar_id) != (account_id, calendar_id):
                continue
            if not self._channel_live(channel):
                continue
            if state == "exists" and window > 0:
                # An `exists` already on its way for this channel covers this change too.
                starters += self._open_window(channel.id, [], window)
            else:
                starters.append(functools.partial(self._launch, self._new_delivery(channel, state)))
            if state == "not_exists":
                channel.stopped = True  # the resource is gone: nothing after this message
        return starters

    def _new_delivery(self, channel: _Channel, state: str) -> GoogleDelivery:
        delivery = GoogleDelivery(
            id=uuid.uuid4().hex[:12],
            generation=self._generation,
            channel_id=channel.id,
            state=state,
            backoff=tuple(self._notification_config["notification_retry_backoff"]),
        )
        return self._track([delivery])[0]

    def _window_closed(self, key: str, items: list[Any]) -> list[Any]:
        channel = self._channels.get(key)
        return [self._new_delivery(channel, "exists")] if channel is not None else []

    def _prepare_attempt(self, d: GoogleDelivery) -> tuple[str, bytes, dict[str, str]] | None:
        channel = self._channels.get(d.channel_id)
        if channel is None or channel.expiration <= self.now():
            return None  # expired channels deliver nothing
        if channel.stopped and d.state != "not_exists":
            return None
        if d.message_number == 0:
            channel.message_number += 1
            d.message_number = channel.message_number
        headers = {
            "X-Goog-Channel-ID": channel.id,
            "X-Goog-Channel-Expiration": format_datetime(channel.expiration, usegmt=True),
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-URI": channel.resource_uri,
            "X-Goog-Resource-State": d.state,
            "X-Goog-Message-Number": str(d.message_number),
        }
        if channel.token:
            headers["X-Goog-Channel-Token"] = channel.token
        return channel.address, b"", headers

    def _may_retry(self, d: GoogleDelivery, outcome: Outcome) -> bool:
        # Google retries only server errors and missing answers, with exponential backoff.
        return outcome.status is None or outcome.status in (500, 502, 503, 504)

    def _attempt_entry(
        self, d: GoogleDelivery, attempt: Attempt, outcome: Outcome, will_retry: bool
    ) -> dict[str, Any]:
        return {
            "delivery_id": d.id,
            "time": iso(attempt.at),
            "channel_id": d.channel_id,
            "url": attempt.url,
            "headers": attempt.headers,
            "resource_state": d.state,
            "message_number": d.message_number,
            "attempt": d.attempt,
            "ok": outcome.error is None,
            "status": outcome.status,
            "error": outcome.error,
            "will_retry": will_retry,
        }

    def notifications(self, channel_id: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        """Every delivery attempt, oldest first: url, headers sent, state, message number, status."""
        with self._lock:
            return [
                dict(entry, headers=dict(entry["headers"]))
                for entry in self._notification_log
                if channel_id in (None, entry["channel_id"]) and state in (None, entry["resource_state"])
            ]

    def _channel_live(self, channel: _Channel) -> bool:
        return not channel.stopped and channel.expiration > self.now()
