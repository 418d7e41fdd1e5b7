"""Graph change and lifecycle notifications: who is notified of a change (every live subscription
covering the calendar; `/me/events` = the default calendar only), the Graph JSON they get, and the
Graph rules of delivery (duplicates, batching per URL, a 3 s deadline, subscriptions removed after
failing too often). The delivery itself (threads, delays, retries, pause/resume/flush) is the shared
engine's (local/emulators/core/delivery.py)."""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from local.emulators.core.clock import iso
from local.emulators.core.delivery import Attempt, Delivery, Outcome
from local.emulators.core.errors import EmulatorError, number, positive_int
from local.emulators.core.service import Emulator
from local.emulators.graph.events import _parse_occurrence_id
from local.emulators.graph.models import (
    _NOTIFICATION_EVENT_TYPE,
    LIFECYCLE_EVENTS,
    TENANT_ID,
    Account,
    Subscription,
    _graph_offset_dt,
    _new_change_key,
)

log = logging.getLogger(__name__)


# Change-notification delivery knobs (GraphEmulator keyword arguments, POST /_control/notifications/config).
NOTIFICATION_DEFAULTS: dict[str, Any] = {
    "notification_delay_seconds": 0.0,  # real seconds waited before a POST is first sent
    "notification_duplicates": 1,  # copies of every POST (Graph may deliver the same change twice)
    "notification_batch_window_seconds": 0.0,  # items for one URL within this window share a POST
    "notification_timeout_seconds": 3.0,  # Graph's answer deadline; later or non-2xx = failed attempt
    "notification_retry_backoff": (1.0, 2.0, 4.0),  # waits between attempts: 1 + len() attempts at most
    "notification_max_consecutive_failures": 10,  # unanswered attempts in a row that remove a subscription
    # Emulator-clock seconds change notifications keep flowing after a reauthorizationRequired
    # challenge before they pause (changes in the pause are lost); None: never pause.
    "notification_reauthorization_grace_seconds": 600.0,
}


@dataclass(kw_only=True)
class GraphDelivery(Delivery):
    """One notification POST (one copy of it when duplicates are configured) and its retries."""

    kind: str  # "change" | "lifecycle"
    url: str
    items: list[dict[str, Any]]  # the "value" items; change items are dropped once their subscription dies
    copy: int  # 1..notification_duplicates
    lifecycle_event: str | None = None

    def subscription_ids(self) -> list[str]:
        return list(dict.fromkeys(item["subscriptionId"] for item in self.items))


class GraphNotifications(Emulator):
    """Graph's notifications on the shared delivery engine."""

    name = "graph"
    late_answers_fail = True  # Graph counts an answer after its deadline as a failure
    knob_defaults = NOTIFICATION_DEFAULTS
    notification_filters = ("subscription_id", "kind")
    _accounts: dict[str, Account]
    _subscriptions: dict[str, Subscription]

    def _check_knob(self, name: str, raw: object) -> Any:
        if name in ("notification_delay_seconds", "notification_batch_window_seconds"):
            return number(raw, name, minimum=0)
        if name == "notification_timeout_seconds":
            return number(raw, name, minimum=0, strict=True)
        if name in ("notification_duplicates", "notification_max_consecutive_failures"):
            return positive_int(raw, name, 1000)
        return None if raw is None else number(raw, name, minimum=0)  # the reauthorization grace

    def _new_deliveries(
        self, kind: str, url: str, items: list[dict[str, Any]], event: str | None = None
    ) -> list[GraphDelivery]:
        """One delivery per configured copy, counted in flight (lock held); start them with _launch."""
        config = self._notification_config
        delivery_id = uuid.uuid4().hex[:12]
        copies = [
            GraphDelivery(
                id=delivery_id,
                generation=self._generation,
                kind=kind,
                url=url,
                items=list(items),  # the dicts are never changed once built; retries filter the list
                copy=copy,
                backoff=tuple(config["notification_retry_backoff"]),
                lifecycle_event=event,
            )
            for copy in range(1, config["notification_duplicates"] + 1)
        ]
        return self._track(copies)

    def _queue_change_items(self, url: str, items: list[dict[str, Any]]) -> list[Callable[[], None]]:
        """Send now, or add to the URL's open batch (opening one if needed); lock held."""
        window = self._notification_config["notification_batch_window_seconds"]
        if window <= 0:
            return [functools.partial(self._launch, d) for d in self._new_deliveries("change", url, items)]
        return self._open_window(url, items, window)

    def _window_closed(self, key: str, items: list[Any]) -> list[Any]:
        return self._new_deliveries("change", key, items) if items else []

    def _prepare_attempt(self, d: GraphDelivery) -> tuple[str, bytes, dict[str, str]] | None:
        if d.kind == "change":
            now = self.now()
            d.items = [
                item
                for item in d.items
                if (sub := self._subscriptions.get(item["subscriptionId"])) is not None
                and sub.expiration > now
            ]
            if not d.items:
                return None  # every subscription it was for is gone or expired
        return d.url, json.dumps({"value": d.items}).encode(), {"Content-Type": "application/json"}

    def _after_attempt(self, d: GraphDelivery, outcome: Outcome) -> list[Any]:
        """Count a change delivery's outcome against its subscriptions; remove those whose endpoint
        stopped answering too often and return their subscriptionRemoved deliveries. An answer in time,
        even an error (a throttled webhook's 500, a 503), is not counted: Graph keeps retrying such an
        endpoint with exponential backoff for up to 4 hours; only slow or silent endpoints lose
        notifications (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks)."""
        if d.kind != "change":
            return []  # lifecycle deliveries never count against a subscription
        limit = self._notification_config["notification_max_consecutive_failures"]
        removals: list[GraphDelivery] = []
        for sub_id in d.subscription_ids():
            sub = self._subscriptions.get(sub_id)
            if sub is None:
                continue
            if outcome.error is None:
                sub.consecutive_failures = 0
            elif outcome.status is None:  # no answer in time (a timeout, a refused connection)
                sub.consecutive_failures += 1
            if sub.consecutive_failures >= limit:
                del self._subscriptions[sub.id]
                log.info("subscription %s removed after %d failed deliveries", sub.id, limit)
                removals += self._lifecycle_deliveries(sub, "subscriptionRemoved")
        return removals

    def _may_retry(self, d: GraphDelivery, outcome: Outcome) -> bool:
        return d.kind == "lifecycle" or any(s in self._subscriptions for s in d.subscription_ids())

    def _attempt_entry(
        self, d: GraphDelivery, attempt: Attempt, outcome: Outcome, will_retry: bool
    ) -> dict[str, Any]:
        return {
            "delivery_id": d.id,
            "kind": d.kind,
            "lifecycle_event": d.lifecycle_event,
            "time": iso(attempt.at),
            "url": d.url,
            "subscription_id": d.items[0]["subscriptionId"],
            "subscription_ids": d.subscription_ids(),
            "items": len(d.items),
            "copy": d.copy,
            "attempt": d.attempt,
            "max_attempts": 1 + len(d.backoff),
            "ok": outcome.error is None,
            "status": outcome.status,
            "error": outcome.error,
            "duration_seconds": round(outcome.duration, 3),
            "will_retry": will_retry,
        }

    def notifications(
        self, subscription_id: str | None = None, kind: str | None = None
    ) -> list[dict[str, Any]]:
        """Every delivery attempt, oldest first (never bodies): `kind` "change" or "lifecycle"."""
        with self._lock:
            return [
                dict(entry, subscription_ids=list(entry["subscription_ids"]))
                for entry in self._notification_log
                if (subscription_id is None or subscription_id in entry["subscription_ids"])
                and (kind is None or entry["kind"] == kind)
            ]

    def send_lifecycle_notification(self, subscription_id: str, event: str) -> dict[str, Any]:
        """Send a lifecycle notification (`event` one of LIFECYCLE_EVENTS) and apply what it means.

        subscriptionRemoved removes the subscription; reauthorizationRequired flags it until a PATCH
        renew or POST /subscriptions/{id}/reauthorize (notifications pause after the grace knob);
        missed only tells the client to resync. Without a lifecycleNotificationUrl nothing is sent
        (as in Graph) but the effect still applies.
        """
        if event not in LIFECYCLE_EVENTS:
            raise EmulatorError(f"event must be one of {', '.join(LIFECYCLE_EVENTS)}, got {event!r}")
        with self._lock:
            sub = self._subscriptions.get(subscription_id)
            if sub is None:
                raise EmulatorError(f"no subscription {subscription_id!r}", 404)
            if event == "subscriptionRemoved":
                del self._subscriptions[sub.id]
            elif event == "reauthorizationRequired" and sub.reauthorization_required_at is None:
                sub.reauthorization_required_at = self.now()
            deliveries = self._lifecycle_deliveries(sub, event)
        for delivery in deliveries:
            self._launch(delivery)
        return {
            "subscription_id": sub.id,
            "lifecycle_event": event,
            "lifecycle_notification_url": sub.lifecycle_notification_url,
            "sent": bool(deliveries),
        }

    def _on_change(self, account: str, calendar_id: str, event_ids: list[str], change_type: str) -> None:
        """Called (without the lock held by the control method) after every control change.

        `account` is the account id, `change_type` one of created / updated / deleted (cancellations
        are "updated": the item still exists with isCancelled; DELETE is "deleted"). Queues a change
        notification for every live subscription covering the calendar: `/me/calendars/{id}/events`
        for that calendar, `/me/events` for the account's default calendar only (as Graph does). Ids
        of a series' occurrences/exceptions changed together with their master collapse onto the
        master (a series edit or delete is one item for the master id).
        """
        starters: list[Callable[[], None]] = []
        with self._lock:
            acc = self._accounts.get(account)
            cal = acc.calendars.get(calendar_id) if acc is not None else None
            if acc is None or cal is None:
                return
            masters = set(event_ids)
            ids = [
                eid
                for eid in dict.fromkeys(event_ids)
                if (parsed := _parse_occurrence_id(eid)) is None or parsed[0] not in masters
            ]
            now = self.now()
            by_url: dict[str, list[dict[str, Any]]] = {}
            for sub in self._subscriptions.values():
                if (
                    sub.account_id != acc.id
                    or sub.expiration <= now
                    or change_type not in sub.change_type.split(",")
                    or not (sub.calendar_id == cal.id if sub.calendar_id is not None else cal.is_default)
                ):
                    continue
                if self._paused_for_reauthorization(sub, now):
                    sub.lost_notifications += len(ids)
                    continue
                items = by_url.setdefault(sub.notification_url, [])
                for eid in ids:
                    stored = cal.events.get(eid)
                    change_key = stored.change_key if stored is not None else _new_change_key()
                    resource = f"Users/{acc.id}/Events/{eid}"
                    items.append(
                        {
                            "subscriptionId": sub.id,
                            "subscriptionExpirationDateTime": _graph_offset_dt(sub.expiration),
                            "changeType": change_type,
                            "resource": resource,
                            "resourceData": {
                                "@odata.type": _NOTIFICATION_EVENT_TYPE,
                                "@odata.id": resource,
                                "@odata.etag": f'W/"{change_key}"',
                                "id": eid,
                            },
                            "clientState": sub.client_state,
                            "tenantId": TENANT_ID,
                        }
                    )
            for url, items in by_url.items():
                if items:
                    starters += self._queue_change_items(url, items)
        for start in starters:
            start()

    def _paused_for_reauthorization(self, sub: Subscription, now: datetime) -> bool:
        grace = self._notification_config["notification_reauthorization_grace_seconds"]
        since = sub.reauthorization_required_at
        return since is not None and grace is not None and now >= since + timedelta(seconds=grace)

    def _lifecycle_deliveries(self, sub: Subscription, event: str) -> list[GraphDelivery]:
        if not sub.lifecycle_notification_url:
            return []
        item = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": _graph_offset_dt(sub.expiration),
            "tenantId": TENANT_ID,
            "clientState": sub.client_state,
            "lifecycleEvent": event,
        }
        return self._new_deliveries("lifecycle", sub.lifecycle_notification_url, [item], event)
