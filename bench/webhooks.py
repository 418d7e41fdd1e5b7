"""Customer-webhook delivery on the local stack, in real time (no virtual clock).

1. Throughput: events per second ONE delivery worker sustains. N events for a user with one endpoint
   (the stack's receiver sink) are queued by `enqueue_event` on a queue of the bench's own; a single
   loop receives batches of 10 and hands each to the real worker handler (`consume`: fan-out, delivery
   record, signing secret, signed SSRF-checked POST, attempt recorded), as one Lambda instance would.
   The stack's clock never sees that queue, so nothing else consumes it.
2. Latency: the time from a bot change (PATCH /calendar/scheduled_bots/{id} through the gateway) to
   its signed `bot.updated` being received by the sink, through the real path: the handler emits ->
   the webhook queue -> the clock's SQS delivery -> the worker -> the sink. p50 / p95 / max.

The local clock polls its queues every 0.5 s: that tick, not the code, bounds the latency figure here
(deployed, Lambda's SQS event source long-polls instead).

    python bench/webhooks.py [--events 300] [--changes 30] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import add_json_out, write_json

MISSED_AFTER_S = 20.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def register(sink_url: str, user_id: str, path: str) -> str:
    """An endpoint for the user, straight into the store and the credential backend (what POST
    /webhooks does once its URL is checked)."""
    from calbot import store, webhook_secrets
    from calbot.models import WebhookEndpoint
    from calbot.timeutil import now

    webhook_id = f"wh_{uuid.uuid4().hex[:16]}"
    at = now()
    store.create_webhook(
        WebhookEndpoint(
            webhook_id=webhook_id,
            user_id=user_id,
            url=f"{sink_url}{path}",
            event_types=["*"],
            created_at=at,
            updated_at=at,
        )
    )
    webhook_secrets.store_secret(user_id, webhook_id, webhook_secrets.new_secret())
    return webhook_id


def throughput(stack: Any, events: int) -> dict[str, Any]:
    from calbot import aws
    from calbot.admin import create_user
    from calbot.config import get_settings
    from calbot.services import webhook_delivery
    from calbot.webhook_events import build_event
    from tests.conftest import setting

    user = create_user(f"wh-bench-{uuid.uuid4().hex[:6]}@bench.example")
    register(stack.webhooks.url, user.user_id, "/bench/throughput")
    sqs = aws.sqs()
    queue = sqs.create_queue(QueueName=f"webhook-bench-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    sink_before = len(stack.webhooks.deliveries())
    with setting("WEBHOOK_QUEUE_URL", queue):
        assert get_settings().webhook_queue_url == queue
        t0 = time.perf_counter()
        for n in range(events):
            webhook_delivery.enqueue_event(user.user_id, build_event("bot.updated", {"bot_id": f"bot_{n}"}))
        enqueue_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        handled = 0
        while True:
            got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
                "Messages", []
            )
            if not got:
                break
            records = [{"messageId": m["MessageId"], "body": m["Body"]} for m in got]
            failed = {
                f["itemIdentifier"]
                for f in webhook_delivery.consume({"Records": records})["batchItemFailures"]
            }
            for m in got:
                if m["MessageId"] not in failed:
                    sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
            handled += len(got)
        worker_s = time.perf_counter() - t1
    received = len(stack.webhooks.deliveries()) - sink_before
    return {
        "events": events,
        "enqueue_ms_per_event": round(1000 * enqueue_s / events, 2),
        "worker_seconds": round(worker_s, 2),
        "events_per_second_one_worker": round(events / worker_s, 1),
        "delivered": received,
        "messages_handled": handled,
    }


def latency(stack: Any, changes: int) -> dict[str, Any]:
    import requests

    from calbot.admin import create_user
    from calbot.auth import issue_api_key

    graph = stack.graph
    api = stack.info["api_url"]
    graph.add_app("wh-bench-client", "wh-bench-secret")
    user = create_user(f"wh-lat-{uuid.uuid4().hex[:6]}@bench.example")
    key = issue_api_key(user.user_id)[0]
    headers = {"Authorization": f"Token {key}"}
    mail = f"wh.{uuid.uuid4().hex[:6]}@bench.example"
    acct = graph.add_account(client_id="wh-bench-client", mail=mail, user_principal_name=mail)
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=1)
    graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject="Webhook bench",
        start=start,
        end=start + timedelta(minutes=30),
        location="https://acme.zoom.us/j/777000",
    )
    resp = requests.post(
        f"{api}/calendar/create_outlook_calendar",
        headers=headers,
        timeout=60,
        json={
            "microsoft_client_id": "wh-bench-client",
            "microsoft_client_secret": "wh-bench-secret",
            "microsoft_refresh_token": acct["refresh_token"],
        },
    )
    assert resp.status_code == 201, resp.text
    listed = requests.get(f"{api}/calendar/events", headers=headers, timeout=60).json()["results"]
    event_id = next(e["id"] for e in listed if e["meeting_url"])
    bot_id = requests.post(
        f"{api}/calendar/schedule/{event_id}", headers=headers, json={}, timeout=60
    ).json()["bot_id"]
    path = f"/bench/latency/{uuid.uuid4().hex[:8]}"
    register(stack.webhooks.url, user.user_id, path)
    time.sleep(1.5)  # the connect's and the schedule's own events are emitted before the endpoint: none

    def updated_for(name: str) -> bool:
        for d in stack.webhooks.deliveries():
            if (
                d["path"] == path
                and json.loads(d["body"])["data"].get("bot_config", {}).get("bot_name") == name
            ):
                return True
        return False

    latencies: list[float] = []
    missed = 0
    for n in range(changes):
        name = f"Bench {n}"
        t0 = time.perf_counter()
        resp = requests.patch(
            f"{api}/calendar/scheduled_bots/{bot_id}", headers=headers, json={"bot_name": name}, timeout=60
        )
        assert resp.status_code == 200, resp.text
        while not updated_for(name):
            if time.perf_counter() - t0 > MISSED_AFTER_S:
                missed += 1
                break
            time.sleep(0.01)
        else:
            latencies.append(time.perf_counter() - t0)
    return {
        "changes": changes,
        "missed": missed,
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p95_s": round(pct(latencies, 0.95), 3) if latencies else None,
        "latency_max_s": round(max(latencies), 3) if latencies else None,
        "clock_tick_s": 0.5,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--changes", type=int, default=30)
    add_json_out(parser)
    args = parser.parse_args()

    from local.stack import LocalStack

    stack = LocalStack(state_dir=Path(tempfile.mkdtemp(prefix="calbot-webhooks-")), seed=False)
    stack.start()
    try:
        figures = {"throughput": throughput(stack, args.events), "latency": latency(stack, args.changes)}
    finally:
        stack.stop()
    t, lat = figures["throughput"], figures["latency"]
    print(
        f"one delivery worker: {t['events_per_second_one_worker']} events/s ({t['events']} events, "
        f"{t['delivered']} received by the sink; enqueue {t['enqueue_ms_per_event']} ms/event)"
    )
    print(
        f"bot change -> delivery: p50 {lat['latency_p50_s']} s, p95 {lat['latency_p95_s']} s, "
        f"max {lat['latency_max_s']} s ({lat['changes']} changes, {lat['missed']} missed; the local clock "
        f"polls queues every {lat['clock_tick_s']} s)"
    )
    write_json(figures, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
