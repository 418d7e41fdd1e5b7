"""Customer webhook events: what happened to a user's bots and connections, told to their endpoints.

The services call `emit(user_id, type, data)` where a change really happened, after it is stored.
Emitting hands the event to calbot.services.webhook_delivery.enqueue_event (which queues a delivery
per subscribed endpoint: nothing here waits on an HTTP POST) and never raises: a failure to emit is
logged (type and ids only, never the data) and the action that caused it goes on as if nothing
happened. The payload builders give `data` exactly as the API shows the thing (API.md "Customer
webhooks"): the bot as GET /calendar/scheduled_bots shows it, the connection record. Neither view
carries a token, secret or clientState.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from calbot.log import logger
from calbot.models import (
    AutoScheduleCompletedData,
    BotView,
    Connection,
    LastRun,
    ScheduledBot,
    WebhookEvent,
)
from calbot.timeutil import now

BOT_SCHEDULED = "bot.scheduled"
BOT_UPDATED = "bot.updated"
BOT_CANCELLED = "bot.cancelled"
BOT_LAUNCHED = "bot.launched"
BOT_FAILED = "bot.failed"
CONNECTION_CREATED = "connection.created"
CONNECTION_NEEDS_REAUTH = "connection.needs_reauth"
CONNECTION_DISCONNECTED = "connection.disconnected"
AUTO_SCHEDULE_COMPLETED = "auto_schedule.completed"
WEBHOOK_TEST = "webhook.test"


# user id -> that user's endpoints, while a bulk action runs (see endpoints_read_once)
_endpoints_memo: ContextVar[dict[str, Any] | None] = ContextVar("webhook_endpoints_memo", default=None)


@contextmanager
def endpoints_read_once() -> Iterator[None]:
    """Within the block, each user's webhook endpoints are read once, however many events it emits:
    a bulk action (an auto-schedule run placing 20 bots, a sync moving a series, a disconnect
    cancelling an account's bots) emits one event per bot, and each emit read them again. An endpoint
    created while the block runs gets the events emitted after the block (the block is one action of
    one invocation). Nested blocks share the outer one's reads. The memo is per context: a thread
    started inside the block reads for itself."""
    if _endpoints_memo.get() is not None:
        yield
        return
    token = _endpoints_memo.set({})
    try:
        yield
    finally:
        _endpoints_memo.reset(token)


def read_endpoints[T](user_id: str, read: Callable[[str], T]) -> T:
    """`read(user_id)`, or what it returned earlier in the current endpoints_read_once block."""
    memo = _endpoints_memo.get()
    if memo is None:
        return read(user_id)
    if user_id not in memo:
        memo[user_id] = read(user_id)
    return memo[user_id]


def new_event_id() -> str:
    """`evt_` + the time in milliseconds (hex, so ids sort by creation) + 64 random bits."""
    return f"evt_{int(now().timestamp() * 1000):012x}{secrets.token_hex(8)}"


def build_event(event_type: str, data: dict[str, Any]) -> WebhookEvent:
    return WebhookEvent.model_validate(
        {"id": new_event_id(), "type": event_type, "timestamp": now(), "data": data}
    )


def emit(user_id: str, type: str, data: dict[str, Any]) -> None:
    """Queue `type` with `data` for the user's subscribed endpoints. Never raises."""
    try:
        event = build_event(type, data)
        # Looked up on the module at each call: part B's delivery pipeline owns it (and tests replace it).
        from calbot.services import webhook_delivery

        webhook_delivery.enqueue_event(user_id, event)
    except Exception as err:  # emitting must never fail (or change) the action that caused it
        logger.warning(
            "webhook event not queued",
            extra={"user_id": user_id, "event_type": type, "error": type_name(err)},
        )


def type_name(err: BaseException) -> str:
    return type(err).__name__


def bot_payload(bot: ScheduledBot) -> dict[str, Any]:
    """The bot exactly as GET /calendar/scheduled_bots shows it (its `reason`, `remote_bot_id`)."""
    return BotView.of(bot).model_dump(mode="json")


def connection_payload(conn: Connection) -> dict[str, Any]:
    """The connection record as the API shows it (no credential path, no subscription secrets)."""
    from calbot.services.connections import connection_view

    return connection_view(conn).model_dump(mode="json")


def auto_schedule_payload(run_at: datetime, run: LastRun) -> dict[str, Any]:
    """An auto-schedule run's counts."""
    return AutoScheduleCompletedData.model_validate({"run_at": run_at, **run.model_dump()}).model_dump(
        mode="json"
    )


def _emit_built(user_id: str, type: str, build: Callable[[], dict[str, Any]]) -> None:
    try:
        data = build()
    except Exception as err:
        logger.warning("webhook event not built", extra={"event_type": type, "error": type_name(err)})
        return
    emit(user_id, type, data)


def emit_bot(bot: ScheduledBot, type: str) -> None:
    """emit(`type`) for a bot whose change is stored: its data is the bot as the API shows it."""
    _emit_built(bot.user_id, type, lambda: bot_payload(bot))


def emit_connection(conn: Connection, type: str) -> None:
    """emit(`type`) for a connection whose change is stored: its data is the connection record."""
    _emit_built(conn.user_id, type, lambda: connection_payload(conn))


def emit_auto_schedule(user_id: str, run_at: datetime, run: LastRun) -> None:
    """emit(`auto_schedule.completed`) for a stored run: its counts."""
    _emit_built(user_id, AUTO_SCHEDULE_COMPLETED, lambda: auto_schedule_payload(run_at, run))
