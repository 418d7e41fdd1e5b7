"""The delivery pipeline's logic (calbot.services.webhook_delivery) on in-memory records and queue:
emitting costs one read for a user with no endpoint and one message otherwise; the worker fans out,
POSTs, records every attempt, reschedules failures by delays of at most 900 s per hop (SQS's cap) on
the 5 s ... 10 h schedule, ends in `failed` and the dead-letter queue, reports each result to the
endpoint, and drops stale messages. The receiver's side of the POST is faked here (tests/unit/
test_webhook_http.py has the real client; tests/e2e/test_webhooks.py the whole stack)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import timeutil, webhook_http
from calbot.config import Settings
from calbot.errors import Conflict, NotFound
from calbot.models import DeliveriesQuery, WebhookDelivery, WebhookEndpoint, WebhookEvent
from calbot.services import webhook_delivery as wd

START = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SECRET = "whsec_" + "a" * 43 + "="


@dataclass
class World:
    moment: list[datetime]
    endpoints: dict[tuple[str, str], WebhookEndpoint] = field(default_factory=dict)
    deliveries: dict[tuple[str, str, str], WebhookDelivery] = field(default_factory=dict)
    queue: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    dlq: list[dict[str, Any]] = field(default_factory=list)
    posts: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    answers: list[webhook_http.PostResult] = field(default_factory=list)
    results: list[tuple[str, bool, datetime]] = field(default_factory=list)
    reads: int = 0

    def now(self) -> datetime:
        return self.moment[0]

    def run_queue(self, until: datetime) -> None:
        """Hand every message due by `until` to the worker, in due order, moving the clock with them."""
        while True:
            due = sorted(
                ((self.sent_at[id(m)] + timedelta(seconds=d), i) for i, (m, d) in enumerate(self.queue)),
                key=lambda x: x[0],
            )
            if not due or due[0][0] > until:
                self.moment[0] = max(self.moment[0], until)
                return
            when, index = due[0]
            message, _ = self.queue.pop(index)
            self.moment[0] = max(self.moment[0], when)
            out = wd.consume({"Records": [{"messageId": "m", "body": json.dumps(message)}]})
            assert out == {"batchItemFailures": []}

    sent_at: dict[int, datetime] = field(default_factory=dict)


class FakeSqs:
    def __init__(self, world: World) -> None:
        self.world = world

    def send_message(self, QueueUrl: str, MessageBody: str, DelaySeconds: int = 0) -> dict[str, Any]:
        assert 0 <= DelaySeconds <= 900, "SQS refuses a message timer over 900 s"
        body = json.loads(MessageBody)
        if QueueUrl == "dlq":
            self.world.dlq.append(body)
        else:
            self.world.queue.append((body, DelaySeconds))
            self.world.sent_at[id(body)] = self.world.now()
        return {"MessageId": "x"}


@pytest.fixture
def world(background_off: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    w = World(moment=[START])
    timeutil.set_clock(w.now)
    settings = Settings(
        table_name="t", ssm_prefix="/calbot/test", webhook_queue_url="q", webhook_dlq_url="dlq"
    )
    monkeypatch.setattr(wd, "get_settings", lambda: settings)
    monkeypatch.setattr(wd.aws, "sqs", lambda: FakeSqs(w))

    def list_webhooks(user_id: str) -> list[WebhookEndpoint]:
        w.reads += 1
        return [e for (u, _), e in w.endpoints.items() if u == user_id]

    def put_delivery(d: WebhookDelivery) -> bool:
        key = (d.user_id, d.webhook_id, d.delivery_id)
        if key in w.deliveries:
            return False
        w.deliveries[key] = d
        return True

    def save_delivery(d: WebhookDelivery, *, expected_token: str) -> bool:
        key = (d.user_id, d.webhook_id, d.delivery_id)
        if key not in w.deliveries or w.deliveries[key].token != expected_token:
            return False
        w.deliveries[key] = d
        return True

    def deliveries_page(user_id: str, webhook_id: str, *, limit: int, after: str | None = None) -> Any:
        rows = sorted(
            (d for (u, h, _), d in w.deliveries.items() if u == user_id and h == webhook_id),
            key=lambda d: d.delivery_id,
            reverse=True,
        )
        if after:
            rows = [d for d in rows if d.delivery_id < after]
        page = rows[:limit]
        return page, (page[-1].delivery_id if len(rows) > limit else None)

    def mark(user_id: str, webhook_id: str, *, ok: bool, at: datetime) -> WebhookEndpoint | None:
        w.results.append((webhook_id, ok, at))
        return w.endpoints.get((user_id, webhook_id))

    def post(url: str, body: bytes, headers: dict[str, str], **_: Any) -> webhook_http.PostResult:
        w.posts.append((url, body, headers))
        return w.answers.pop(0) if w.answers else webhook_http.PostResult(200, None, 0.01)

    store = wd.store
    monkeypatch.setattr(store, "list_webhooks", list_webhooks)
    monkeypatch.setattr(store, "get_webhook", lambda u, h: w.endpoints.get((u, h)))
    monkeypatch.setattr(store, "put_delivery", put_delivery)
    monkeypatch.setattr(store, "get_delivery", lambda u, h, d: w.deliveries.get((u, h, d)))
    monkeypatch.setattr(store, "save_delivery", save_delivery)
    monkeypatch.setattr(store, "deliveries_page", deliveries_page)
    monkeypatch.setattr(store, "mark_webhook_delivery_result", mark)
    monkeypatch.setattr(wd.webhook_secrets, "signing_secrets", lambda u, h, version=None: [SECRET])
    monkeypatch.setattr(wd.webhook_http, "post", post)
    try:
        yield w
    finally:
        timeutil.set_clock()


def endpoint(
    w: World,
    webhook_id: str = "wh_1",
    *,
    user: str = "usr_1",
    types: list[str] | None = None,
    enabled: bool = True,
) -> WebhookEndpoint:
    e = WebhookEndpoint(
        webhook_id=webhook_id,
        user_id=user,
        url=f"https://receiver.example/{webhook_id}",
        event_types=types or ["*"],
        enabled=enabled,
        created_at=START,
        updated_at=START,
    )
    w.endpoints[(user, webhook_id)] = e
    return e


def event(type_: str = "bot.updated", event_id: str = "evt_1") -> WebhookEvent:
    return WebhookEvent(id=event_id, type=type_, timestamp=timeutil.now(), data={"bot_id": "bot_1"})  # type: ignore[arg-type]


def failing(status: int | None = 503) -> webhook_http.PostResult:
    return webhook_http.PostResult(status, "connect_failed" if status is None else f"http_{status}", 0.01)


def test_a_user_without_endpoints_costs_one_read_and_no_message(world: World) -> None:
    wd.enqueue_event("usr_1", event())
    assert world.reads == 1 and world.queue == []
    endpoint(world, types=["bot.cancelled"])
    endpoint(world, "wh_off", enabled=False)
    wd.enqueue_event("usr_1", event())  # subscribed to another type; the other one is disabled
    assert world.reads == 2 and world.queue == []


def test_an_event_is_one_message_then_one_signed_delivery_per_subscribed_endpoint(world: World) -> None:
    endpoint(world, "wh_1")
    endpoint(world, "wh_2", types=["bot.updated"])
    endpoint(world, "wh_3", types=["bot.cancelled"])
    wd.enqueue_event("usr_1", event())
    assert len(world.queue) == 1 and world.posts == []  # the caller never POSTs
    world.run_queue(START)
    assert sorted(url for url, _, _ in world.posts) == [
        "https://receiver.example/wh_1",
        "https://receiver.example/wh_2",
    ]
    _, body, headers = world.posts[0]
    assert json.loads(body) == {
        "id": "evt_1",
        "type": "bot.updated",
        "timestamp": "2026-12-06T12:00:00Z",
        "data": {"bot_id": "bot_1"},
    }
    assert headers["webhook-id"] == "evt_1" and headers["webhook-signature"].startswith("v1,")
    assert {d.state for d in world.deliveries.values()} == {"delivered"}
    assert [(h, ok) for h, ok, _ in sorted(world.results)] == [("wh_1", True), ("wh_2", True)]


def test_a_redelivered_fan_out_message_makes_no_second_delivery(world: World) -> None:
    endpoint(world)
    wd.enqueue_event("usr_1", event())
    message = world.queue[0][0]
    world.run_queue(START)
    wd.consume({"Records": [{"messageId": "m", "body": json.dumps(message)}]})
    assert len(world.deliveries) == 1 and len(world.posts) == 1


def test_failures_follow_the_schedule_over_more_than_24_hours_then_fail_into_the_dlq(world: World) -> None:
    endpoint(world)
    world.answers = [failing(None)] * wd.MAX_ATTEMPTS
    wd.enqueue_event("usr_1", event())
    world.run_queue(START + timedelta(days=3))
    (delivery,) = world.deliveries.values()
    times = [a.at for a in delivery.history]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    assert gaps == list(wd.RETRY_DELAYS)
    assert times[-1] - times[0] >= timedelta(hours=24)
    assert delivery.state == "failed" and delivery.attempts == wd.MAX_ATTEMPTS == 8
    assert delivery.next_attempt_at is None and delivery.last_error == "connect_failed"
    assert [m["delivery_id"] for m in world.dlq] == [delivery.delivery_id]
    assert [ok for _, ok, _ in world.results] == [False] * 8  # every failure reported to the endpoint


def test_a_receiver_down_for_hours_gets_the_event_afterwards(world: World) -> None:
    endpoint(world)
    world.answers = [failing(None)] * 4  # 0 s, 5 s, 5 min 5 s, 35 min 5 s: still down
    wd.enqueue_event("usr_1", event())
    world.run_queue(START + timedelta(hours=1))
    (delivery,) = world.deliveries.values()
    assert delivery.state == "pending" and delivery.attempts == 4
    assert delivery.next_attempt_at == START + timedelta(seconds=5 + 300 + 1800 + 7200)
    world.run_queue(START + timedelta(hours=3))
    (delivery,) = world.deliveries.values()
    assert delivery.state == "delivered" and delivery.attempts == 5 and delivery.last_status == 200
    assert len({h["webhook-id"] for _, _, h in world.posts}) == 1  # the same webhook-id on every retry
    assert world.results[-1][1] is True


def test_a_stale_attempt_message_is_dropped(world: World) -> None:
    endpoint(world)
    world.answers = [failing(500)]
    wd.enqueue_event("usr_1", event())
    world.run_queue(START)
    (delivery,) = world.deliveries.values()
    assert wd.attempt("usr_1", "wh_1", delivery.delivery_id, "not-its-token") == "stale"
    assert len(world.posts) == 1


def test_a_disabled_or_deleted_endpoint_fails_its_pending_deliveries_without_a_post(world: World) -> None:
    e = endpoint(world)
    world.answers = [failing(500)]
    wd.enqueue_event("usr_1", event())
    world.run_queue(START)
    world.endpoints[("usr_1", "wh_1")] = e.model_copy(update={"enabled": False})
    world.run_queue(START + timedelta(minutes=1))
    (delivery,) = world.deliveries.values()
    assert delivery.state == "failed" and delivery.last_error == "endpoint_disabled"
    assert len(world.posts) == 1 and len(world.dlq) == 1


def test_retry_attempts_again_now_and_the_test_event_goes_to_that_endpoint_alone(world: World) -> None:
    endpoint(world, "wh_1", types=["bot.cancelled"])
    endpoint(world, "wh_2")
    world.answers = [failing(None)] * wd.MAX_ATTEMPTS
    sent = wd.send_test("usr_1", "wh_1")
    assert sent.state == "pending" and sent.type == "webhook.test"
    world.run_queue(START + timedelta(days=2))
    assert world.deliveries[("usr_1", "wh_1", sent.id)].state == "failed"
    assert {url for url, _, _ in world.posts} == {"https://receiver.example/wh_1"}
    retried = wd.retry_delivery("usr_1", "wh_1", sent.id)
    assert retried.state == "pending"
    world.run_queue(world.now())
    after = world.deliveries[("usr_1", "wh_1", sent.id)]
    assert after.state == "delivered" and after.attempts == wd.MAX_ATTEMPTS
    body = json.loads(world.posts[-1][1])
    assert body["type"] == "webhook.test" and body["data"]["webhook_id"] == "wh_1"


def test_another_users_ids_are_404_and_a_disabled_endpoint_409(world: World) -> None:
    endpoint(world, "wh_1", user="usr_1")
    endpoint(world, "wh_off", user="usr_1", enabled=False)
    world.run_queue(START)
    sent = wd.send_test("usr_1", "wh_1")
    with pytest.raises(NotFound):
        wd.send_test("usr_2", "wh_1")
    with pytest.raises(NotFound):
        wd.retry_delivery("usr_2", "wh_1", sent.id)
    with pytest.raises(NotFound):
        wd.retry_delivery("usr_1", "wh_1", "whd_0000000000000nope")
    with pytest.raises(NotFound):
        wd.list_deliveries("usr_2", "wh_1", DeliveriesQuery())
    with pytest.raises(Conflict):
        wd.send_test("usr_1", "wh_off")


def test_deliveries_are_listed_newest_first_a_page_at_a_time(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wd.cursor, "_key", b"k" * 32)
    endpoint(world)
    for n in range(5):
        world.moment[0] = START + timedelta(minutes=n)
        wd.enqueue_event("usr_1", event(event_id=f"evt_{n}"))
        world.run_queue(world.now())
    first = wd.list_deliveries("usr_1", "wh_1", DeliveriesQuery(limit=3))
    assert [v.event_id for v in first.page.results] == ["evt_4", "evt_3", "evt_2"]
    assert first.page.has_more and first.next_cursor
    second = wd.list_deliveries("usr_1", "wh_1", DeliveriesQuery(limit=3, cursor=first.next_cursor))
    assert [v.event_id for v in second.page.results] == ["evt_1", "evt_0"]
    assert not second.page.has_more
    view = first.page.results[0]
    assert (view.attempts, view.last_status, view.state) == (1, 200, "delivered")


def test_a_test_event_that_cannot_be_queued_is_not_left_pending(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint(world)

    class Down:
        def send_message(self, **_: Any) -> None:
            raise RuntimeError("SQS unavailable")

    monkeypatch.setattr(wd.aws, "sqs", lambda: Down())
    with pytest.raises(RuntimeError):
        wd.send_test("usr_1", "wh_1")
    (delivery,) = world.deliveries.values()
    assert delivery.state == "failed" and delivery.last_error == "not_queued"
