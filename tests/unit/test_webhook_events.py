"""calbot.webhook_events: emit hands a well-formed event to the delivery seam and never raises; the
payload builders give the API's own views (the bot as GET /calendar/scheduled_bots shows it, the
connection record), without token, secret or clientState."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import webhook_events
from calbot.models import BotView, Connection, LastRun, ScheduledBot, SubscriptionRef, WebhookEvent
from calbot.services import webhook_delivery

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# What must never reach a receiver: our credential material and anything secret-named.
FORBIDDEN = re.compile(r"(?i)(token|secret|client_?state|credential|password)")


def a_bot(**changes: Any) -> ScheduledBot:
    data: dict[str, Any] = {
        "bot_id": "sb_1",
        "user_id": "usr_1",
        "event_id": "evt_1",
        "series_key": "evt_1",
        "provider": "outlook",
        "account_id": "jane@contoso.example",
        "title": "Weekly",
        "meeting_url": "https://teams.microsoft.com/l/meetup-join/x",
        "meeting_platform": "teams",
        "occurrence_start": T0 + timedelta(days=1),
        "meeting_end": T0 + timedelta(days=1, hours=1),
        "scheduled_join_time": T0 + timedelta(days=1, seconds=-60),
        "status": "Launched",
        "remote_bot_id": "remote-42",
        "bot_config": {"bot_name": "Notetaker"},
        "dedup_key": "k",
        "launch_claim": "claim-secret-ish",
        "created_at": T0,
        "updated_at": T0,
    }
    return ScheduledBot.model_validate(data | changes)


def a_connection() -> Connection:
    return Connection(
        user_id="usr_1",
        provider="outlook",
        account_id="jane@contoso.example",
        webhook_url="https://api.example/api/v1/admin/schedule/users/usr_1/outlook/jane%40contoso.example",
        credential_path="/calbot/dev/users/usr_1/outlook/jane-abc",
        subscriptions=[
            SubscriptionRef(id="sub-1", calendar_id="cal", expires_at=T0, handle={"resource_id": "r"})
        ],
        status="needs_reauth",
        status_reason="invalid_grant",
        created_at=T0,
        updated_at=T0,
    )


def keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys(v)}
    return set()


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, WebhookEvent]]:
    calls: list[tuple[str, WebhookEvent]] = []
    monkeypatch.setattr(
        webhook_delivery, "enqueue_event", lambda user_id, event: calls.append((user_id, event))
    )
    return calls


def test_emit_hands_an_enveloped_event_to_the_delivery_seam(captured: list[tuple[str, WebhookEvent]]) -> None:
    webhook_events.emit("usr_1", "bot.cancelled", {"bot_id": "sb_1", "reason": "event_cancelled"})
    webhook_events.emit("usr_1", "bot.cancelled", {"bot_id": "sb_1", "reason": "event_cancelled"})
    (user_id, event), (_, second) = captured
    assert user_id == "usr_1"
    assert event.type == "bot.cancelled" and event.data["reason"] == "event_cancelled"
    assert re.fullmatch(r"evt_[0-9a-f]{28}", event.id) and second.id != event.id
    body = json.loads(event.model_dump_json())
    assert set(body) == {"id", "type", "timestamp", "data"} and body["timestamp"].endswith("Z")


def test_emit_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(user_id: str, event: WebhookEvent) -> None:
        raise RuntimeError("queue unavailable")

    monkeypatch.setattr(webhook_delivery, "enqueue_event", down)
    webhook_events.emit("usr_1", "bot.updated", {"bot_id": "sb_1"})  # logged, not raised
    webhook_events.emit("usr_1", "not.a.type", {})  # an unknown type is a bug, still not raised
    webhook_events.emit_bot(a_bot(), "bot.updated")


def test_an_unknown_type_is_never_queued(captured: list[tuple[str, WebhookEvent]]) -> None:
    webhook_events.emit("usr_1", "bot.exploded", {})
    assert captured == []


def test_the_bot_payload_is_the_scheduled_bots_view(captured: list[tuple[str, WebhookEvent]]) -> None:
    bot = a_bot()
    webhook_events.emit_bot(bot, "bot.launched")
    ((_, event),) = captured
    assert event.data == json.loads(BotView.of(bot).model_dump_json())
    assert event.data["remote_bot_id"] == "remote-42" and event.data["status"] == "Launched"
    assert not keys(event.data) & {"user_id", "launch_claim", "dedup_key", "launch_generation"}
    assert not [k for k in keys(event.data) if FORBIDDEN.search(k)]


def test_the_connection_payload_is_the_record_without_credentials(
    captured: list[tuple[str, WebhookEvent]],
) -> None:
    webhook_events.emit_connection(a_connection(), "connection.needs_reauth")
    ((_, event),) = captured
    assert event.data["status"] == "needs_reauth" and event.data["account_id"] == "jane@contoso.example"
    assert event.data["watch_setup"]["subscriptions"] == 1
    text = json.dumps(event.data)
    assert "credential_path" not in text and "/calbot/dev/users" not in text and "sub-1" not in text
    assert not [k for k in keys(event.data) if FORBIDDEN.search(k)]


def test_the_auto_schedule_payload_carries_the_runs_counts() -> None:
    data = webhook_events.auto_schedule_payload(
        T0, LastRun(scheduled=3, skipped_existing=2, skipped_no_link=1)
    )
    assert data["run_at"] == "2026-12-01T12:00:00Z"
    assert (data["scheduled"], data["skipped_existing"], data["skipped_no_link"]) == (3, 2, 1)


def test_endpoints_are_read_once_per_user_inside_a_block_and_every_time_outside() -> None:
    reads: list[str] = []

    def read(user_id: str) -> list[str]:
        reads.append(user_id)
        return [f"endpoint of {user_id}"]

    webhook_events.read_endpoints("u1", read)
    webhook_events.read_endpoints("u1", read)
    assert reads == ["u1", "u1"]  # outside a block nothing is kept: a new endpoint counts at once
    reads.clear()
    with webhook_events.endpoints_read_once():
        assert webhook_events.read_endpoints("u1", read) == ["endpoint of u1"]
        with webhook_events.endpoints_read_once():  # nested: shares the outer block's reads
            webhook_events.read_endpoints("u1", read)
            webhook_events.read_endpoints("u2", read)
        webhook_events.read_endpoints("u2", read)
    assert reads == ["u1", "u2"]
    webhook_events.read_endpoints("u1", read)
    assert reads == ["u1", "u2", "u1"]  # the block's reads end with it
