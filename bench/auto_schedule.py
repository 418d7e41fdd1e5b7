"""The midnight auto-schedule job at scale, in-process against moto and the Graph emulator.

Builds N users x 3 accounts x 20 meetings (default 1,000 users: 60,000 meetings), runs the real job
(fan-out to SQS) and the real worker over every message with a pool of threads standing in for Lambda
concurrency, and prints users/s, provider requests per user, DynamoDB read and write units per
scheduled bot, the wall time of the fan-out, and a projection for 100,000 users at midnight.
Figures, not assertions. moto answers a GSI query by walking the whole table, so per-user time here
grows with the data (real DynamoDB's does not): the 1,000-user default takes long; `--users 100` gives
the same per-bot unit figures quickly.

    python bench/auto_schedule.py [--users 1000] [--accounts 3] [--meetings 20] [--workers 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

READS = {"GetItem", "Query", "BatchGetItem", "Scan"}


class Units:
    """DynamoDB capacity by AWS's rules: writes 1 unit per 1 KB item, reads 1 per 4 KB (half if eventual)."""

    def __init__(self) -> None:
        from tests.conftest import DynamoWrites

        self.writes = DynamoWrites()
        self.read_units = 0.0
        self.read_calls = 0

    def after(self, http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        from tests.conftest import item_size

        if model.name not in READS:
            return
        self.read_calls += 1
        if model.name == "GetItem":
            items = [parsed["Item"]] if "Item" in parsed else []
        elif model.name == "BatchGetItem":
            items = [i for rows in parsed.get("Responses", {}).values() for i in rows]
        else:
            items = parsed.get("Items", [])
        if model.name == "Query":  # a query is billed on the total size it read, rounded once
            self.read_units += max(1, math.ceil(sum(item_size(i) for i in items) / 4096)) * 0.5
        else:
            self.read_units += sum(max(1, math.ceil(item_size(i) / 4096)) for i in items) or 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=3)
    parser.add_argument("--meetings", type=int, default=20, help="per account, all in the next 24 hours")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="threads standing in for Lambda concurrency (in-process moto is not thread-safe: "
        "keep 1; the projection uses per-user busy time)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import moto.dynamodb.models as moto_ddb

    from bench.harness import in_process_stack

    # moto backs up the WHOLE table (deepcopy) before every transaction, so a 100k-item table makes each
    # transaction cost O(table). Real DynamoDB does not work that way. In this bench no transaction
    # fails (fresh users, one run), so the rollback copy is skipped for tables only.
    class _NoTableBackup:
        @staticmethod
        def deepcopy(value: Any) -> Any:
            import copy

            return value if isinstance(value, moto_ddb.Table) else copy.deepcopy(value)

    moto_ddb.copy = _NoTableBackup  # type: ignore[assignment]

    with in_process_stack("AutoScheduleWorkerFunction", "AutoScheduleJobFunction") as graph:
        from calbot import aws, store, vault
        from calbot.models import AutoScheduleSettings, CalendarInfo, Connection, Credentials, User
        from calbot.providers import get_provider
        from calbot.services import auto_schedule

        t_setup = time.perf_counter()
        graph.add_app("bench-client", "bench-secret")
        base = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=1)
        at = datetime.now(UTC)
        scopes = get_provider("outlook").scopes
        for u in range(args.users):
            user_id = f"usr_b{u:06d}"
            store.put_user(User(user_id=user_id, created_at=at))
            for a in range(args.accounts):
                mail = f"u{u}.a{a}@bench.example"
                acct = graph.add_account(client_id="bench-client", mail=mail, user_principal_name=mail)
                cal = acct["calendars"][0]["id"]
                for m in range(args.meetings):
                    start = base + timedelta(minutes=(m * 60 + a * 7) % (22 * 60))
                    graph.add_event(
                        acct["id"],
                        cal,
                        subject=f"M{m}",
                        start=start,
                        end=start + timedelta(minutes=30),
                        online_meeting_url=f"https://acme.zoom.us/j/{u:04d}{a}{m:03d}",
                    )
                path = vault.credential_path(user_id, "outlook", mail)
                vault.put(
                    path,
                    Credentials(
                        provider="outlook",
                        client_id="bench-client",
                        client_secret="bench-secret",
                        refresh_token=acct["refresh_token"],
                        scopes=scopes,
                    ),
                )
                store.create_connection(
                    Connection(
                        user_id=user_id,
                        provider="outlook",
                        account_id=mail,
                        credential_path=path,
                        webhook_url="-",
                        calendars=[CalendarInfo(id=cal, name="Calendar", is_primary=True)],
                        created_at=at,
                        updated_at=at,
                    ),
                    limit=200,
                )
            store.put_auto_settings(
                AutoScheduleSettings(
                    user_id=user_id, enabled=True, updated_at=at, default_bot_config={"bot_name": "Auto"}
                )
            )
        setup_s = time.perf_counter() - t_setup

        units = Units()
        events = aws.dynamodb().meta.events
        events.register("provide-client-params.dynamodb.*", units.writes)
        events.register("after-call.dynamodb.*", units.after)
        graph.clear_requests()

        t0 = time.perf_counter()
        fan = auto_schedule.fan_out(os.environ["AUTO_SCHEDULE_QUEUE_URL"])
        fan_out_s = time.perf_counter() - t0
        fan_read_units = units.read_units

        sqs = aws.sqs()
        messages: list[dict[str, Any]] = []
        while True:
            got = sqs.receive_message(QueueUrl=os.environ["AUTO_SCHEDULE_QUEUE_URL"], MaxNumberOfMessages=10)
            batch = got.get("Messages", [])
            if not batch:
                break
            messages += [{"messageId": m["MessageId"], "body": m["Body"]} for m in batch]
        batches = [messages[i : i + 5] for i in range(0, len(messages), 5)]  # the worker's BatchSize

        t1 = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            results = list(pool.map(lambda b: auto_schedule.consume({"Records": b}), batches))
        work_s = time.perf_counter() - t1

        failures = sum(len(r["batchItemFailures"]) for r in results)
        runs = [store.get_auto_settings(f"usr_b{u:06d}").last_run for u in range(args.users)]
        scheduled = sum(r.scheduled for r in runs if r)
        provider_requests = len([r for r in graph.requests() if not r["path"].startswith("/_control")])

    per_user_s = work_s * args.workers / args.users  # busy time of one worker per user
    figures = {
        "users": args.users,
        "accounts_per_user": args.accounts,
        "meetings_per_account": args.meetings,
        "setup_seconds": round(setup_s, 1),
        "users_enqueued": fan["users_enqueued"],
        "fan_out_seconds": round(fan_out_s, 3),
        "fan_out_read_units": round(fan_read_units, 1),
        "worker_wall_seconds": round(work_s, 1),
        "workers": args.workers,
        "failed_users": failures,
        "users_per_second": round(args.users / work_s, 1),
        "bots_scheduled": scheduled,
        "provider_requests_per_user": round(provider_requests / args.users, 2),
        "write_units_per_bot": round(units.writes.units / max(scheduled, 1), 2),
        "read_units_per_bot": round((units.read_units - fan_read_units) / max(scheduled, 1), 2),
        "worker_seconds_per_user": round(per_user_s, 3),
    }
    # 100,000 users at midnight: Lambda-seconds of worker time, and the concurrency that finishes in 15 min.
    total_lambda_s = per_user_s * 100_000
    figures["projection_100k"] = {
        "fan_out_seconds": round(fan_out_s * 100_000 / args.users, 1),
        "worker_lambda_seconds": round(total_lambda_s),
        "concurrency_for_15_min": math.ceil(total_lambda_s / 900),
        "minutes_at_concurrency_100": round(total_lambda_s / 100 / 60, 1),
        "note": "in-process moto and emulator latencies; real DynamoDB and Graph round trips are slower "
        "(I/O-bound work, which Lambda concurrency scales): a lower bound on duration",
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(
        f"auto-schedule job: {args.users} users x {args.accounts} accounts x {args.meetings} meetings "
        f"(setup {setup_s:.0f} s)"
    )
    print(
        f"  fan-out: {fan['users_enqueued']} users enqueued in {fan_out_s:.2f} s "
        f"({fan_read_units:.0f} read units, sparse index, no scan)"
    )
    print(
        f"  workers ({args.workers} threads): {work_s:.1f} s wall, {figures['users_per_second']} users/s, "
        f"{failures} failed users, {scheduled} bots scheduled"
    )
    print(f"  provider requests per user: {figures['provider_requests_per_user']}")
    print(
        f"  DynamoDB per scheduled bot: {figures['write_units_per_bot']} write units, "
        f"{figures['read_units_per_bot']} read units"
    )
    p = figures["projection_100k"]
    print(
        f"  100,000 users at midnight: fan-out ~{p['fan_out_seconds']} s; {p['worker_lambda_seconds']} "
        f"worker Lambda-seconds -> concurrency {p['concurrency_for_15_min']} to finish in 15 min, "
        f"or {p['minutes_at_concurrency_100']} min at concurrency 100 (the template's MaximumConcurrency)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
