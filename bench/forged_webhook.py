"""What a forged webhook body costs: a 1,000-item Graph notification body POSTed, with no key, to a
real account's webhook URL through the local gateway (the webhook Lambda's real handler, moto as AWS).

999 items name distinct made-up subscriptions and one names the account's real subscription with a
wrong clientState, so nothing is accepted. Prints the answer time per request (median, p95, max) and
the DynamoDB calls the webhook made for one such body. Goal: well under Graph's 3 s (Graph marks an
endpoint slow when over 10% of its answers take more than 10 s, and drops notifications past 15%).

    python bench/forged_webhook.py [--requests 20] [--items 1000] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--items", type=int, default=1000)
    from bench.harness import add_json_out, write_json

    add_json_out(parser)
    args = parser.parse_args()

    from local.stack import LocalStack

    stack = LocalStack(state_dir=Path(tempfile.mkdtemp(prefix="calbot-bench-")), seed=False)
    stack.start()
    try:
        import requests

        from calbot import aws, store
        from calbot.models import Subscription
        from calbot.services.connect import hash_client_state
        from calbot.timeutil import now

        sub = Subscription(
            id="bench-forged-sub",
            user_id="usr_bench_forged",
            provider="outlook",
            account_id="victim@bench.example",
            calendar_id="cal-1",
            client_state_hash=hash_client_state("the-real-secret"),
            expires_at=now() + timedelta(days=2),
            created_at=now(),
        )
        store.put_subscriptions([sub])
        url = f"{stack.info['api_url']}/admin/schedule/users/{sub.user_id}/outlook/victim%40bench.example"
        items = [
            {"subscriptionId": f"forged-{i:06d}", "clientState": "guess", "changeType": "updated"}
            for i in range(args.items - 1)
        ]
        items.append({"subscriptionId": sub.id, "clientState": "wrong", "changeType": "updated"})
        body = json.dumps({"value": items})

        # The webhook runs in this process (the gateway's handler thread): count its DynamoDB calls.
        calls: list[str] = []
        lock = threading.Lock()

        def hook(model: object, **_: object) -> None:
            if threading.current_thread() is not threading.main_thread():
                with lock:
                    calls.append(getattr(model, "name", "?"))

        session = requests.Session()
        times = []
        for n in range(args.requests):
            if n == 0:
                aws.dynamodb().meta.events.register("provide-client-params.dynamodb.*", hook)
            started = time.perf_counter()
            resp = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
            times.append(time.perf_counter() - started)
            if n == 0:
                aws.dynamodb().meta.events.unregister("provide-client-params.dynamodb.*", hook)
            assert resp.status_code == 202, resp.text
        ordered = sorted(times)
        figures = {
            "items_per_body": args.items,
            "requests": args.requests,
            "median_s": round(statistics.median(times), 4),
            "p95_s": round(ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))], 4),
            "max_s": round(max(times), 4),
            "dynamodb_calls_first_request": dict(sorted({c: calls.count(c) for c in calls}.items())),
        }
        print(
            f"forged webhook body of {args.items} items, {args.requests} requests: "
            f"median {figures['median_s'] * 1000:.1f} ms, p95 {figures['p95_s'] * 1000:.1f} ms, "
            f"max {figures['max_s'] * 1000:.1f} ms; DynamoDB calls for one body: "
            f"{figures['dynamodb_calls_first_request']}"
        )
        write_json(figures, args.json_out)
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
