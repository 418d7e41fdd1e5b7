"""The midnight auto-schedule job at scale, in-process against moto and the Graph emulator.

Builds N users x 3 accounts x 20 meetings (default 1,000 users: 60,000 meetings), runs the real job
(fan-out to SQS) and the real worker over every message with a pool of threads standing in for Lambda
concurrency, and prints users/s, provider requests per user, DynamoDB read and write units per
scheduled bot, the wall time of the fan-out, and a projection for 100,000 users at midnight.
Figures, not assertions. moto answers a GSI query by walking the whole table, so per-user time here
grows with the data (real DynamoDB's does not): the 1,000-user default takes long; `--users 100` gives
the same per-bot unit figures quickly.

    python bench/auto_schedule.py [--users 1000] [--accounts 3] [--meetings 20] [--workers 8] [--json]
    python bench/auto_schedule.py --users 20 --invite-body   # meetings with a Zoom invitation as body

The default meetings have an empty body, the smallest event a provider sends. `--invite-body` gives each
the invitation text the Zoom add-in writes into an Outlook meeting: its provider payload (with the body
cut to RAW_BODY_LIMIT, as stored) makes the event item, and so its write units, what a real one costs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

READS = {"GetItem", "Query", "BatchGetItem", "Scan"}


class Units:
    """DynamoDB capacity by AWS's rules: writes 1 unit per 1 KB item, reads 1 per 4 KB, half that for an
    eventually consistent read (what the request's ConsistentRead says: `attach` sees the request's
    parameters; without them a GetItem or BatchGetItem counts as consistent, a Query as eventual)."""

    _CONSISTENT = "bench_consistent_read"

    def __init__(self) -> None:
        from tests.conftest import DynamoWrites

        self.writes = DynamoWrites()
        self.read_units = 0.0
        self.read_calls = 0

    def attach(self, events: Any) -> None:
        """Writes (DynamoWrites) and reads, each read by its own consistency."""
        self.writes.attach(events)
        events.register("provide-client-params.dynamodb.*", self.params)
        events.register("after-call.dynamodb.*", self.after)

    def detach(self, events: Any) -> None:
        self.writes.detach(events)
        events.unregister("provide-client-params.dynamodb.*", self.params)
        events.unregister("after-call.dynamodb.*", self.after)

    def params(self, params: dict[str, Any], model: Any, context: Any = None, **_: Any) -> None:
        if context is None or model.name not in READS:
            return
        if model.name == "BatchGetItem":
            tables = params.get("RequestItems", {}).values()
            context[self._CONSISTENT] = all(t.get("ConsistentRead", False) for t in tables)
        else:
            context[self._CONSISTENT] = bool(params.get("ConsistentRead", False))

    def after(
        self, http_response: Any, parsed: dict[str, Any], model: Any, context: Any = None, **_: Any
    ) -> None:
        from tests.conftest import item_size

        if model.name not in READS:
            return
        self.read_calls += 1
        consistent = (context or {}).get(self._CONSISTENT, model.name != "Query")
        per_unit = 1.0 if consistent else 0.5
        if model.name == "GetItem":
            items = [parsed["Item"]] if "Item" in parsed else []
        elif model.name == "BatchGetItem":
            items = [i for rows in parsed.get("Responses", {}).values() for i in rows]
        else:
            items = parsed.get("Items", [])
        if model.name in ("Query", "Scan"):  # billed on the total size it read, rounded once
            self.read_units += max(1, math.ceil(sum(item_size(i) for i in items) / 4096)) * per_unit
        else:
            self.read_units += (sum(max(1, math.ceil(item_size(i) / 4096)) for i in items) or 1) * per_unit


def invite_body(join_url: str) -> str:
    """The HTML body of an Outlook meeting the Zoom add-in created (its usual text, one meeting's
    numbers): what a real event carries where the default bench event has none."""
    meeting_id = join_url.rsplit("/", 1)[-1]
    dial = "".join(
        f"<br>\u2022 +1 {n} US{where}"
        for n, where in (
            ("646 931 3860", ""),
            ("301 715 8592", " (Washington DC)"),
            ("305 224 1968", ""),
            ("309 205 3325", ""),
            ("312 626 6799", " (Chicago)"),
            ("669 900 6833", " (San Jose)"),
            ("689 278 1000", ""),
            ("719 359 4580", ""),
            ("253 205 0468", ""),
            ("253 215 8782", " (Tacoma)"),
        )
    )
    return (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"></head>'
        '<body><div style="font-family:Calibri,Arial,sans-serif;font-size:11pt">'
        "Hi there,<br><br>Alex Morgan is inviting you to a scheduled Zoom meeting.<br><br>"
        f'Join Zoom Meeting<br><a href="{join_url}?pwd=bXlzZWNyZXRwYXNzY29kZQ.1">'
        f"{join_url}?pwd=bXlzZWNyZXRwYXNzY29kZQ.1</a><br><br>"
        f"Meeting ID: {meeting_id}<br>Passcode: 482913<br><br>---<br><br>One tap mobile<br>"
        f"+16469313860,,{meeting_id}#,,,,*482913# US<br>+13017158592,,{meeting_id}#,,,,*482913# US "
        f"(Washington DC)<br><br>---<br><br>Dial by your location{dial}<br><br>Meeting ID: {meeting_id}"
        "<br>Passcode: 482913<br><br>Find your local number: https://acme.zoom.us/u/kdJ3fP9sQ<br><br>"
        f"---<br><br>Join by SIP<br>\u2022 {meeting_id}@zoomcrc.com<br><br>Join by H.323<br>"
        "\u2022 144.195.19.161 (US West)<br>\u2022 206.247.11.121 (US East)<br>"
        "\u2022 115.114.131.7 (India Mumbai)<br><br>Meeting ID: "
        f"{meeting_id}<br>Passcode: 482913<br></div></body></html>"
    )


# us-east-1 list prices (USD) used for the projection; change them here if they move.
PRICES = {
    "dynamodb_per_million_wru": 0.625,  # on-demand write request units
    "dynamodb_per_million_rru": 0.125,  # on-demand read request units
    "lambda_arm_per_gb_second": 0.0000133334,
    "lambda_per_million_requests": 0.20,
    "sqs_per_million_requests": 0.40,  # standard queue; a batch call of up to 10 messages is 1 request
}


def project(figures: dict[str, Any], *, fan_out_s: float, fan_read_units: float) -> dict[str, Any]:
    """The 00:00 UTC job for 100,000 users from this run's per-user figures and the worker's SQS event
    source in template.yaml (BatchSize, MaximumConcurrency) and its memory size."""
    from local.template import load_template

    users, scale = 100_000, 100_000 / figures["users"]
    worker = load_template(ROOT / "template.yaml").functions["AutoScheduleWorkerFunction"]
    source = next(e for e in worker.events if e.type == "SQS")
    concurrency = int(source.properties["ScalingConfig"]["MaximumConcurrency"])
    batch = int(source.properties.get("BatchSize", 10))
    lambda_s = figures["worker_cpu_seconds_per_user"] * users
    bots = figures["bots_scheduled"] * scale
    wru = round(figures["write_units_per_bot"] * bots)
    rru = round(figures["read_units_per_bot"] * bots + fan_read_units * scale)
    minutes = lambda_s / concurrency / 60
    provider = round(figures["provider_requests_per_user"] * users)
    from calbot.services.auto_schedule import USERS_PER_MESSAGE

    messages = math.ceil(users / USERS_PER_MESSAGE)
    invocations = math.ceil(messages / batch)
    # fan-out: one SendMessageBatch per 10 messages; the event source: a receive and a delete per batch.
    sqs_requests = math.ceil(messages / 10) + 2 * invocations
    cost = {
        "dynamodb": round(
            wru / 1e6 * PRICES["dynamodb_per_million_wru"] + rru / 1e6 * PRICES["dynamodb_per_million_rru"], 2
        ),
        "lambda": round(
            lambda_s * worker.memory_size / 1024 * PRICES["lambda_arm_per_gb_second"]
            + invocations / 1e6 * PRICES["lambda_per_million_requests"],
            2,
        ),
        "sqs": round(sqs_requests / 1e6 * PRICES["sqs_per_million_requests"], 3),
    }
    return {
        "users": users,
        "template_max_concurrency": concurrency,
        "template_batch_size": batch,
        "worker_memory_mb": worker.memory_size,
        "users_per_message": USERS_PER_MESSAGE,
        "send_message_batch_calls": math.ceil(messages / 10),
        "fan_out_seconds": round(fan_out_s * scale, 1),
        # The same from AWS round trips: a SendMessageBatch call ~20 ms, a 1 MB index page ~100 ms with
        # index items under 1 KB (assumptions). moto walks the whole table on every index query, which
        # dominates the measured figure above and is no part of DynamoDB's cost.
        "fan_out_seconds_from_round_trips": round(
            math.ceil(messages / 10) * 0.02 + math.ceil(users * 1024 / 1_048_576) * 0.1, 1
        ),
        "worker_lambda_seconds": round(lambda_s),
        "worker_invocations": invocations,
        "minutes_at_template_concurrency": round(minutes, 1),
        "concurrency_for_15_min": math.ceil(lambda_s / 900),
        "bots_scheduled": round(bots),
        "dynamodb_write_units": wru,
        "dynamodb_read_units": rru,
        "provider_requests": provider,
        "provider_requests_per_second": round(provider / max(minutes * 60, 1), 1),
        "sqs_requests": sqs_requests,
        "cost_usd": cost,
        "prices_usd": PRICES,
        "note": "worker time is the measured CPU seconds per user (in-process moto and emulator); real "
        "DynamoDB and Graph round trips are slower (I/O-bound work, which Lambda concurrency scales): a "
        "lower bound on duration. Units, request counts and cost scale linearly with users.",
    }


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
    parser.add_argument(
        "--fan-out-users",
        type=int,
        default=20_000,
        help="enabled users (settings items only) the fan-out is timed over: its projection scales this",
    )
    parser.add_argument(
        "--invite-body",
        action="store_true",
        help="each meeting's body is a Zoom invitation (the default body is empty)",
    )
    parser.add_argument("--json", action="store_true")
    from bench.harness import add_json_out, write_json, write_units_by_share

    add_json_out(parser)
    args = parser.parse_args()

    from bench.harness import in_process_stack, skip_moto_table_backup

    # In this bench no transaction fails (fresh users, one run): see skip_moto_table_backup.
    skip_moto_table_backup()

    with in_process_stack("AutoScheduleWorkerFunction", "AutoScheduleJobFunction") as graph:
        from calbot import aws, store
        from calbot.models import AutoScheduleSettings, User
        from calbot.services import auto_schedule
        from tests.conftest import seed_outlook_connection

        t_setup = time.perf_counter()
        graph.add_app("bench-client", "bench-secret")
        base = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=1)
        at = datetime.now(UTC)
        for u in range(args.users):
            user_id = f"usr_b{u:06d}"
            store.put_user(User(user_id=user_id, created_at=at))
            for a in range(args.accounts):
                mail = f"u{u}.a{a}@bench.example"
                acct = graph.add_account(client_id="bench-client", mail=mail, user_principal_name=mail)
                cal = acct["calendars"][0]["id"]
                for m in range(args.meetings):
                    start = base + timedelta(minutes=(m * 60 + a * 7) % (22 * 60))
                    join_url = f"https://acme.zoom.us/j/{u:04d}{a}{m:03d}"
                    graph.add_event(
                        acct["id"],
                        cal,
                        subject=f"M{m}",
                        start=start,
                        end=start + timedelta(minutes=30),
                        online_meeting_url=join_url,
                        body_html=invite_body(join_url) if args.invite_body else "",
                    )
                seed_outlook_connection(user_id, mail, acct, "bench-client", "bench-secret", limit=200, at=at)
            store.put_auto_settings(
                AutoScheduleSettings(
                    user_id=user_id, enabled=True, updated_at=at, default_bot_config={"bot_name": "Auto"}
                )
            )
        setup_s = time.perf_counter() - t_setup

        units = Units()
        units.attach(aws.dynamodb().meta.events)
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
        batches = [[m] for m in messages]  # the worker's BatchSize (1: a message holds 20 users)

        t1, cpu1 = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(args.workers) as pool:
            results = list(pool.map(lambda b: auto_schedule.consume({"Records": b}), batches))
        work_s, work_cpu_s = time.perf_counter() - t1, time.process_time() - cpu1

        failures = sum(len(r["batchItemFailures"]) for r in results)
        runs = [store.get_auto_settings(f"usr_b{u:06d}").last_run for u in range(args.users)]
        scheduled = sum(r.scheduled for r in runs if r)
        provider_requests = len([r for r in graph.requests() if not r["path"].startswith("/_control")])
        # The run's units, settled now: the fan-out sample below writes 20,000 settings items (and their
        # GSI3 entries) that are setup, not the cost of a bot.
        run_write_units = units.writes.units
        run_table_units = sum(units.writes.table_units.values())
        run_index_units = dict(units.writes.index_units)
        run_record_units = Counter(units.writes.kind_units) + Counter(units.writes.kind_index_units)
        run_read_units = units.read_units
        units.detach(aws.dynamodb().meta.events)

        # The fan-out alone over many more enabled users (settings items only: it reads nothing else).
        for u in range(args.fan_out_users):
            store.put_auto_settings(
                AutoScheduleSettings(
                    user_id=f"usr_f{u:06d}", enabled=True, updated_at=at, default_bot_config={}
                )
            )
        wide = sqs.create_queue(QueueName="bench-auto-schedule-fan-out")["QueueUrl"]
        t2 = time.perf_counter()
        wide_fan = auto_schedule.fan_out(wide)
        wide_s = time.perf_counter() - t2

    per_user_s = work_s * args.workers / args.users  # busy time of one worker per user
    figures = {
        "users": args.users,
        "accounts_per_user": args.accounts,
        "meetings_per_account": args.meetings,
        # the body of a meeting whose link is as long as the bench's (the id appears in it several times)
        "invite_body_chars": len(invite_body(f"https://acme.zoom.us/j/{0:04d}{0}{0:03d}"))
        if args.invite_body
        else 0,
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
        "write_units_per_bot": round(run_write_units / max(scheduled, 1), 2),
        # where those units go: the table's own item writes and each global secondary index's
        "write_units_per_bot_by_target": {
            "table": round(run_table_units / max(scheduled, 1), 2),
            **{
                f"index {name}": round(n / max(scheduled, 1), 2)
                for name, n in sorted(run_index_units.items())
            },
        },
        # ... and by record (the key's first part: the table item, or its entry in an index): the bot's
        # own (its DEDUP guard, its BOT item and that item's GSI1 entry), its event's (written in this
        # run because it is these accounts' first sync: a midnight after the events were synced writes
        # none, bench/day.py), and each account's (token, lock, credentials, sync state, settings).
        "write_units_per_bot_by_record": {
            kind: round(n / max(scheduled, 1), 2) for kind, n in run_record_units.most_common()
        },
        "write_units_per_bot_by_share": write_units_by_share(run_record_units, scheduled),
        "read_units_per_bot": round((run_read_units - fan_read_units) / max(scheduled, 1), 2),
        "worker_seconds_per_user": round(per_user_s, 3),
        # CPU time of this process (our code, moto and the emulator all run in it): unlike wall time it
        # does not grow when other processes load a shared machine, so the projection uses it.
        "worker_cpu_seconds_per_user": round(work_cpu_s / args.users, 3),
    }
    figures["fan_out_sample"] = {
        "users": wide_fan["users_enqueued"],
        "messages": wide_fan["messages"],
        "seconds": round(wide_s, 2),
    }
    # The fan-out projection scales the larger sample (the small run's few calls are mostly noise).
    wide_per_user = wide_s / max(1, wide_fan["users_enqueued"])
    figures["projection_100k"] = project(
        figures, fan_out_s=wide_per_user * args.users, fan_read_units=fan_read_units
    )
    write_json(figures, args.json_out)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(
        f"auto-schedule job: {args.users} users x {args.accounts} accounts x {args.meetings} meetings "
        f"(setup {setup_s:.0f} s)"
        + (
            f", each with a {figures['invite_body_chars']}-character invitation body"
            if args.invite_body
            else ""
        )
    )
    print(
        f"  fan-out: {fan['users_enqueued']} users enqueued in {fan_out_s:.2f} s "
        f"({fan_read_units:.0f} read units, sparse index, no scan); "
        f"{figures['fan_out_sample']['users']} users in {figures['fan_out_sample']['messages']} messages "
        f"in {figures['fan_out_sample']['seconds']} s"
    )
    print(
        f"  workers ({args.workers} threads): {work_s:.1f} s wall, {figures['users_per_second']} users/s, "
        f"{failures} failed users, {scheduled} bots scheduled"
    )
    print(f"  provider requests per user: {figures['provider_requests_per_user']}")
    print(
        f"  DynamoDB per scheduled bot: {figures['write_units_per_bot']} write units, "
        f"{figures['read_units_per_bot']} read units (writes counted as AWS bills them: item size before "
        "and after, every index entry)"
    )
    split = ", ".join(f"{k} {v}" for k, v in figures["write_units_per_bot_by_target"].items())
    print(f"    write units per bot by target: {split}")
    split = ", ".join(f"{k} {v}" for k, v in figures["write_units_per_bot_by_record"].items())
    print(f"    by record: {split}")
    shares = figures["write_units_per_bot_by_share"]
    print(
        f"    the bot's own records {shares['bot']}, its event {shares['event']} (this run is the accounts' "
        f"first sync), the accounts' token, lock, sync and settings writes {shares['account']}"
    )
    p = figures["projection_100k"]
    print(
        f"  100,000 users at 00:00 UTC: fan-out ~{p['fan_out_seconds']} s ({p['users_per_message']} users a "
        f"message, {p['send_message_batch_calls']} SendMessageBatch calls; "
        f"~{p['fan_out_seconds_from_round_trips']} s from AWS round trips) of the job's 300 s timeout; "
        f"{p['worker_lambda_seconds']} "
        f"worker Lambda-seconds -> {p['minutes_at_template_concurrency']} min at the template's "
        f"MaximumConcurrency {p['template_max_concurrency']} (concurrency {p['concurrency_for_15_min']} "
        "would finish in 15 min)"
    )
    print(
        f"  cost per run: DynamoDB ${p['cost_usd']['dynamodb']} ({p['dynamodb_write_units']:,} WRU, "
        f"{p['dynamodb_read_units']:,} RRU), Lambda ${p['cost_usd']['lambda']}, SQS ${p['cost_usd']['sqs']}; "
        f"{p['provider_requests']:,} provider requests (~{p['provider_requests_per_second']}/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
