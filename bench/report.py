"""Assemble bench/REPORT.md from the JSON the bench scripts wrote (`make bench` runs them all first).

Every figure in the report comes from those files; this script only formats them and records the
machine they ran on (CPU model and cores, Python, date, git commit, load average).

    python bench/report.py RESULTS_DIR [-o bench/REPORT.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# local/clock/local_clock.py's TICK_SECONDS, for reports made from JSON written before the bench recorded it.
LOCAL_CLOCK_TICK_S = 0.5


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        # The report itself is rewritten by this run: only other changes make the figures uncommitted.
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/REPORT.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "CPU": models[0] if models else platform.processor() or "unknown",
        "Cores": str(len(models) or os.cpu_count()),
        "Python": platform.python_version(),
        "OS": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "Date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "Git commit": (commit or "unknown") + (" (with uncommitted changes)" if dirty else ""),
        "Load average at report time (1/5/15 min)": load,
    }


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out + [""]


def cold_start(r: dict[str, Any]) -> list[str]:
    if r.get("paired"):
        method = (
            f"each paired with an `import boto3` run just before it (median {r['import_boto3_ms']} ms); "
            "a ratio is the median of the paired ratios. The CPU-time ratio counts only the imports' own "
            "work, not time spent waiting for a core on the shared machine"
        )
        if r.get("stack_depths"):
            method += (
                f". Each round imports at another Python stack depth ({r['stack_depths']} extra frames): "
                "CPython 3.12 is up to ~40 ms slower at some depths, where the regex compiles of urllib3 and "
                "botocore keep crossing a frame-stack chunk boundary (python/cpython#142183), and Lambda "
                "imports a handler from a depth of its own"
            )
    else:
        method = f"rounds interleaved with `import boto3` ({r['import_boto3_ms']} ms)"
    lines = [
        f"Median of {r.get('repeat', '?')} fresh interpreters per module, {method}. "
        f"Target: at most {r['target_ratio']}x boto3 (wall time).",
        "",
    ]
    if "load_average_1min" in r:
        before, after = r["load_average_1min"]
        when = f"Run {r['run_at']} at commit {r['git_commit']}; " if "run_at" in r else ""
        lines += [f"{when}1-minute load average when it started / ended: {before} / {after}.", ""]
    floor = r.get("core_floor")
    cpu = "cpu_ratio_vs_boto3" in r["handlers"][0]

    base = r.get("baseline")

    def cells(name: str, h: dict[str, Any]) -> list[Any]:
        extra = [f"{h['cpu_ratio_vs_boto3']}x"] if cpu else []
        if base:
            extra.append(f"{h['before_ratio_vs_boto3']}x" if "before_ratio_vs_boto3" in h else "")
        return [name, h["import_ms"], f"{h['ratio_vs_boto3']}x", *extra]

    rows = [cells(h["function"], h) for h in r["handlers"]]
    references = r.get("references") or ([{"name": "(core floor)", **floor}] if floor else [])
    rows[:0] = [cells(f"_{ref['name']}_", ref) for ref in references]
    header = ["handler", "import ms", "vs boto3"] + (["CPU time vs boto3"] if cpu else [])
    header += [f"before: {base['rev']} ({base['commit']}) vs boto3"] if base else []
    lines += table(header, rows)
    if base:
        lines += [
            f"The before column is {base['rev']} ({base['commit']}) measured in the same rounds "
            "(`--baseline`): the same pairing and depths, so the two columns compare.",
            "",
        ]
    verdict = "within target" if r["within_target"] else "OVER target"
    lines += [f"Worst ratio: **{r['worst_ratio']}x** ({verdict}).", ""]
    over = [h for h in r["handlers"] if h["ratio_vs_boto3"] > r["target_ratio"]]
    if over:
        names = ", ".join(f"{h['function']} ({h['ratio_vs_boto3']}x)" for h in over)
        lines += [
            f"**The cold-start target is missed**: {len(over)} of {len(r['handlers'])} handlers import in "
            f"more than {r['target_ratio']}x the time of `import boto3`: {names}.",
            "",
        ]
    spreads = sorted(h["ratio_iqr"] for h in r["handlers"] if "ratio_iqr" in h)
    if spreads:
        lines += [
            "A handler's paired ratios spread over the rounds of this run by a median interquartile range "
            f"of {spreads[len(spreads) // 2]}x ({spreads[0]}x to {spreads[-1]}x across handlers). The "
            "medians above move less than that from run to run, but they do move: a difference of one or two "
            "tenths, between handlers or from the before column, is within that spread.",
            "",
        ]
    if floor and floor["ratio_vs_boto3"] > r["target_ratio"]:
        pydantic = next((ref for ref in r.get("references", []) if "pydantic" in ref["name"]), None)
        alone = f"; boto3 with pydantic alone is {pydantic['ratio_vs_boto3']}x" if pydantic else ""
        lines += [
            f"**Why**: the core floor alone is {floor['ratio_vs_boto3']}x boto3{alone}. No handler that "
            "needs the core can meet the target by importing less of its own; only a lighter core can "
            "(fewer models built per handler, no pydantic or Powertools at import), or moving needed "
            "imports into the first invocation, which shortens no real cold start.",
            "",
        ]
    if references:
        lines += [
            "The rows in italics are references measured the same way: "
            + "; ".join(f"_{ref['name']}_ is `{ref['statement']}`" for ref in references)
            + ". The core floor is what every API handler imports whatever it does (boto3, pydantic with "
            "every model of `calbot.models` and the settings model, Powertools' Logger, tenacity); a "
            "handler's own imports are the rest.",
            "",
        ]
    return lines


def sync(r: dict[str, Any]) -> list[str]:
    lines = [
        f"One calendar of {r['events']} events ({r['series']} weekly series, {r['series_occurrences']} "
        "occurrences), in-process against moto and the Graph emulator.",
        "",
    ]
    rows = [
        [
            name.replace("_", " "),
            run["provider_requests"],
            run["delta_pages"],
            run["detail_fetches"],
            run["events_written"],
            run["ddb_write_calls"],
            run["ddb_write_units"],
            run["seconds"],
        ]
        for name, run in (("first_sync", r["first_sync"]), ("unchanged_resync", r["unchanged_resync"]))
    ]
    lines += table(
        [
            "run",
            "provider requests",
            "delta pages",
            "master fetches",
            "events written",
            "DynamoDB write calls",
            "write units",
            "seconds",
        ],
        rows,
    )
    first = r["first_sync"]
    per_page = round(r["events"] / max(first["delta_pages"], 1), 1)
    return lines + [
        f"Requests per page: 1 (~{per_page} events per delta page); requests per event on a full sync: "
        f"{r['requests_per_event_first_sync']} "
        f"(= pages + series masters: {r['requests_expected_first_sync']}). "
        f"Writes for an unchanged re-sync: **{r['unchanged_resync']['ddb_write_units']} write units**.",
        "",
        *write_units_note(first.get("ddb_write_units_by_target"), "the first sync's write units"),
    ]


# What the write-unit figures count (tests/dynamo_units.py); before issue 18 they left out every index
# entry and priced updates and deletes by their key alone.
WRITE_UNITS_RULES = (
    "Write units are counted as DynamoDB bills them (tests/dynamo_units.py): each item by the larger of "
    "its size before and after the write (a delete by the deleted item), 1 KB per unit rounded up per "
    "item, transactions twice, a failed condition still consumed; and every global secondary index "
    "entry the write adds, changes or removes, by the index's projection (entry size = projected "
    "attributes + keys + 100 bytes)."
)


def write_units_note(by_target: dict[str, Any] | None, what: str) -> list[str]:
    if not by_target:
        return []
    split = ", ".join(f"{target} {units}" for target, units in by_target.items())
    return [WRITE_UNITS_RULES, "", f"Where {what} go: {split}.", ""]


WRITE_UNITS_TARGET = 3  # issue 18: per scheduled bot, its event's writes included


def write_units_target(per_bot: float) -> list[str]:
    if per_bot <= WRITE_UNITS_TARGET:
        return [f"Target: at most {WRITE_UNITS_TARGET} write units per scheduled bot: met ({per_bot}).", ""]
    return [
        f"**Target missed**: at most {WRITE_UNITS_TARGET} write units per scheduled bot; measured {per_bot} "
        "(each unit left is one item or index entry the bot and its event need; see README).",
        "",
    ]


def notify(r: dict[str, Any]) -> list[str]:
    return [
        f"{r['changes']} moves of one meeting at the emulator, real time on the local stack (webhook Lambda "
        "-> FIFO queue -> sync worker -> DynamoDB + EventBridge Scheduler).",
        "",
        *table(
            ["figure", "value"],
            [
                ["notification -> bot updated, median", f"{r['latency_median_s']} s"],
                ["p95", f"{r['latency_p95_s']} s"],
                ["max", f"{r['latency_max_s']} s"],
                ["missed (timed out)", r["missed"]],
                ["webhook response, median", f"{r['webhook_response_median_ms']} ms"],
                ["webhook response, p95", f"{r['webhook_response_p95_ms']} ms"],
            ],
        ),
        f"Goal: median under {r['goal_median_s']} s; a {r['peer_polling_s']} s polling design averages "
        f"~{r['peer_polling_s'] // 2} s.",
        "",
        f"What this measures: the local stack's path, where the local clock drains the SQS queue on a "
        f"{r.get('clock_tick_s') or LOCAL_CLOCK_TICK_S} s polling tick, so the latency here is bounded by "
        "that tick (the median is about one tick). Deployed, Lambda's SQS event source mapping "
        "long-polls the queue instead: this figure is not a measurement of the deployed latency.",
        "",
    ]


def launch(r: dict[str, Any]) -> list[str]:
    return [
        f"{r['bots']} bots all joining at 09:00, in-process against moto: each armed by a schedule at "
        "join - its lead (5 to 13 min, from its id) whose firing falls anywhere in Scheduler's minute, "
        "which only sends a delayed "
        "launch-queue message; batches of 10 consumed at the join time, launched in parallel. Create "
        f"Bot latency is assumed ({r['create_bot_latency_assumed_ms']:.0f} ms), not measured.",
        "",
        *table(
            ["figure", "value"],
            [
                ["bots launched", f"{r['launched']} of {r['bots']}"],
                ["arm (schedule -> message), median", f"{r['arm_ms_median']} ms"],
                ["consume a batch of 10, median", f"{r['batch_ms_median']} ms"],
                ["Lambda-seconds per launch", f"{r['lambda_s_per_launch']} s (target <= 1 s)"],
                [
                    "Create Bot lateness p50 / p95 / max",
                    f"{r['late_p50_s']} / {r['late_p95_s']} / {r['late_max_s']} s",
                ],
                ["longest launcher sleep", f"{r['max_virtual_sleep_s']} s"],
                ["old design: sleep per launch (mean)", f"{r['old_design_sleep_s_per_launch']} s"],
                ["concurrency for 10,000 launches at 09:00", r["concurrency_for_10000_at_0900"]],
                *(
                    [
                        [
                            "schedules fired: window, busiest second",
                            f"{r['schedule_fire_window_s']} s, {r['schedule_fires_busiest_second']}",
                        ]
                    ]
                    if "schedule_fire_window_s" in r
                    else []
                ),
            ],
        ),
        f"Lateness target: {r['late_target_s']} s. Each batch is assumed to start when its messages "
        "become visible (enough concurrency); the concurrency row is what 10,000 launches need to finish "
        "within 2 s with the measured batch time plus the assumed Create Bot latency. Lambda's SQS "
        "mapping starts at 5 concurrent batches and adds up to 300 a minute (max 1,000): a cold burst "
        "cannot reach that at once; provisioned pollers (or MaximumConcurrency raised ahead) are needed "
        "to meet 2 s at that scale.",
        "",
    ]


def auto_schedule(r: dict[str, Any]) -> list[str]:
    p = r["projection_100k"]
    cost = p["cost_usd"]
    lines = [
        f"Measured: {r['users']} users x {r['accounts_per_user']} accounts x {r['meetings_per_account']} "
        f"meetings, the real fan-out and the real worker ({r['workers']} worker thread)"
        + (
            f"; each meeting's body is a {r['invite_body_chars']:,}-character Zoom invitation, as Outlook "
            "holds it (its first 1,000 characters stored)."
            if r.get("invite_body_chars")
            else "; the meetings' bodies are empty."
        ),
        "",
        *table(
            ["figure", "value"],
            [
                ["users enqueued by the fan-out", r["users_enqueued"]],
                ["fan-out time", f"{r['fan_out_seconds']} s ({r['fan_out_read_units']} read units)"],
                ["worker throughput", f"{r['users_per_second']} users/s"],
                ["worker time per user (wall)", f"{r['worker_seconds_per_user']} s"],
                [
                    "worker CPU time per user (used for the projection)",
                    f"{r['worker_cpu_seconds_per_user']} s",
                ],
                ["bots scheduled", r["bots_scheduled"]],
                ["failed users", r["failed_users"]],
                ["provider requests per user", r["provider_requests_per_user"]],
                [
                    "DynamoDB write units per bot (with its event; table + every index)",
                    r["write_units_per_bot"],
                ],
                *[
                    [f"- of which {target}", units]
                    for target, units in (r.get("write_units_per_bot_by_target") or {}).items()
                ],
                *[
                    [f"- of which {label}", shares[key]]
                    for shares in [r.get("write_units_per_bot_by_share") or {}]
                    for key, label in (
                        ("bot", "the bot's own records (its dedup guard, its item, its GSI1 entry)"),
                        ("event", "its event (item and index entries: these accounts' first sync)"),
                        ("account", "per-account writes (token cache, locks, sync state, settings)"),
                    )
                    if key in shares
                ],
                ["DynamoDB read units per bot", r["read_units_per_bot"]],
            ],
        ),
        *write_units_note(r.get("write_units_per_bot_by_target"), "the write units per bot"),
        *write_units_target(r["write_units_per_bot"]),
        f"**Projection: the 00:00 UTC job at {p['users']:,} users** (template.yaml: worker SQS BatchSize "
        f"{p['template_batch_size']}, MaximumConcurrency {p['template_max_concurrency']}, "
        f"{p['worker_memory_mb']} MB arm64):",
        "",
        *table(
            ["figure", "value"],
            [
                [
                    "fan-out",
                    f"~{p['fan_out_seconds']} s measured in moto and scaled, "
                    f"~{p.get('fan_out_seconds_from_round_trips', '?')} s from AWS round trips "
                    f"({p.get('users_per_message', 1)} users a message, "
                    f"{p.get('send_message_batch_calls', '?')} SendMessageBatch calls)",
                ],
                ["worker Lambda-seconds", f"{p['worker_lambda_seconds']:,}"],
                [
                    f"duration at MaximumConcurrency {p['template_max_concurrency']}",
                    f"{p['minutes_at_template_concurrency']} min",
                ],
                ["concurrency to finish in 15 min", p["concurrency_for_15_min"]],
                ["bots scheduled", f"{p['bots_scheduled']:,}"],
                [
                    "DynamoDB write / read units",
                    f"{p['dynamodb_write_units']:,} / {p['dynamodb_read_units']:,}",
                ],
                [
                    "provider requests",
                    f"{p['provider_requests']:,} (~{p['provider_requests_per_second']}/s across all tenants)",
                ],
                ["SQS requests", f"{p['sqs_requests']:,}"],
                ["cost per run: DynamoDB (on-demand)", f"${cost['dynamodb']}"],
                ["cost per run: Lambda (arm64)", f"${cost['lambda']}"],
                ["cost per run: SQS", f"${cost['sqs']}"],
            ],
        ),
        "Prices (USD, us-east-1 list): "
        + ", ".join(f"{k.replace('_', ' ')} ${v:.10f}".rstrip("0") for k, v in p["prices_usd"].items())
        + ". Graph and Google charge nothing per request; their limit is throttling per mailbox/app.",
        "",
        f"_{p['note']}_",
        "",
    ]
    return lines


def renewal(r: dict[str, Any]) -> list[str]:
    w, f, p = r["worker"], r["fan_out"], r["projection_300k"]
    return [
        f"Measured in-process (moto + Graph emulator): the renewal worker over {w['subscriptions']} real "
        "Outlook subscriptions with a cold access-token cache, and the 03:00 job's fan-out over "
        f"{f['index_items']:,} due subscriptions in the expiry index.",
        "",
        *table(
            ["figure", "value"],
            [
                ["worker outcomes", w["outcomes"]],
                ["batch item failures", w["batch_item_failures"]],
                ["CPU per subscription", f"{w['cpu_seconds_per_subscription'] * 1000:.1f} ms"],
                [
                    "calls per subscription",
                    f"{w['graph_calls_per_subscription']} Graph, {w['login_calls_per_subscription']} login, "
                    f"{w['dynamodb_calls_per_subscription']} DynamoDB, {w['ssm_calls_per_subscription']} SSM",
                ],
                [
                    "fan-out",
                    f"{f['enqueued']:,} in {f['messages']} messages, {f['seconds']} s ({f['calls']})",
                ],
            ],
        ),
        f"**Projection: {p['subscriptions']:,} subscriptions/channels at 03:00 UTC** (template.yaml: "
        f"{p['subscriptions_per_message']} a message, worker MaximumConcurrency "
        f"{p['template_max_concurrency']}):",
        "",
        *table(
            ["figure", "value"],
            [
                [
                    "fan-out (job)",
                    f"{p['send_message_batch_calls']:,} SendMessageBatch calls; "
                    f"~{p['fan_out_seconds_measured_scaled']} s measured and scaled, "
                    f"~{p['fan_out_seconds_from_round_trips']} s from AWS round trips, "
                    f"of a {p['job_timeout_seconds']} s timeout",
                ],
                ["worker time per subscription", p["worker_seconds_per_subscription"]],
                [
                    "worker Lambda-seconds",
                    f"{p['worker_lambda_seconds']:,} ({p['worker_gb_seconds']:,} GB-s)",
                ],
                [
                    f"time to finish at concurrency {p['template_max_concurrency']}",
                    f"{p['minutes_to_finish_at_template_concurrency']} min",
                ],
                [f"concurrency for a {p['window_minutes']}-min window", p["concurrency_for_window"]],
                [
                    "provider request rates",
                    f"Graph ~{p['graph_requests_per_second_all_outlook']}/s "
                    f"(limit {p['graph_global_limit_per_second']}/s per app), "
                    f"Google ~{p['google_requests_per_second_all_google']}/s "
                    f"(limit {p['google_project_limit_per_second']}/s per project), "
                    f"login ~{p['login_requests_per_second']}/s",
                ],
            ],
        ),
        f"_Round trips assumed (s): {p['assumed_latency_seconds']}. moto walks the whole table per index "
        "query, so the measured fan-out grows faster than DynamoDB's would._",
        "",
    ]


def events_many(r: dict[str, Any]) -> list[str]:
    return [
        f"GET /calendar/events (sync=true) for one user with {r['accounts']} accounts, "
        f"{r['slow_accounts']} of them answering each delta page after {r['slow_delay_seconds']} s "
        "(emulator fault rule), in-process.",
        "",
        *table(
            ["figure", "value"],
            [
                ["response time", f"{r['response_seconds']} s (API budget {r['budget_seconds']} s)"],
                ["accounts synced in the call", r["accounts_synced"]],
                ["accounts deferred (partial_errors)", r["accounts_deferred"]],
                ["messages put on the sync queue", r["messages_on_sync_queue"]],
                ["other errors", r["other_errors"]],
            ],
        ),
        "",
    ]


def notify_burst(r: dict[str, Any]) -> list[str]:
    return [
        f"{r['notifications']:,} meeting moves across {r['accounts']} accounts in {r['burst_seconds']} s, "
        "real time on the local stack (each account's meetings move at once, every meeting has a bot).",
        "",
        *table(
            ["figure", "value"],
            [
                ["move -> bot updated, p50", f"{r['latency_p50_s']} s"],
                ["p95", f"{r['latency_p95_s']} s (goal: within {r['goal_p95_s']} s)"],
                ["max", f"{r['latency_max_s']} s"],
                ["missed (not updated in time)", r["missed"]],
                ["wrong bots at the end", r["wrong_bots"]],
                *(
                    [
                        ["provider syncs (sync worker)", r["syncs"]],
                        ["notifications a later sync already covered", r["coalesced"]],
                        [
                            "stack CPU per notification",
                            f"{r['cpu_ms_per_notification']} ms ({r['stack_cpu_seconds']} s in all)",
                        ],
                    ]
                    if "syncs" in r
                    else []
                ),
                *(
                    [
                        [
                            "webhook invocations at once (local Lambda concurrency limit)",
                            f"{r['webhook_peak_concurrency']} (limit {r['webhook_concurrency_limit']})",
                        ],
                        [
                            "notification POSTs throttled (API Gateway 500), retried by Graph",
                            f"{r['webhook_throttles']} of {r['notification_posts']} POSTs; up to attempt "
                            f"{r['notification_max_attempt']}, {r['notifications_given_up']} given up",
                        ],
                        ["load average (1/5/15 min) after the burst", r["loadavg_after_burst"]],
                    ]
                    if "webhook_throttles" in r
                    else []
                ),
            ],
        ),
        "",
        *(
            [
                "The local stack is one Python process (every Lambda, moto, the emulators): its CPU, not "
                "the queue, sets the pace, so its latency floor is about the CPU per notification times "
                "the notifications on one core. On AWS each batch has its own Lambda instance.",
                "",
            ]
            if "syncs" in r
            else []
        ),
        *(
            [
                f"**Target missed**: p95 within {r['goal_p95_s']} s on the local stack; measured "
                f"{r['latency_p95_s']} s (see README).",
                "",
            ]
            if r["latency_p95_s"] > r["goal_p95_s"]
            else []
        ),
    ]


def read_latency(r: dict[str, Any]) -> list[str]:
    seen = r["seen"]
    lines = [
        f"One user with {r['connections']} connections, {r['events']:,} stored events and {r['bots']:,} "
        "scheduled bots, seeded through `calbot.store`. Each request goes through template.yaml's route, the "
        "Lambda authorizer and the handler, in-process against moto and the Graph emulator.",
        "",
    ]
    rows = [
        [name, row["requests"], row["p50_ms"], row["p99_ms"], row["max_ms"], row["cpu_p50_ms"]]
        for name, row in r["endpoints"].items()
    ]
    lines += table(["endpoint", "requests", "p50 ms", "p99 ms", "max ms", "CPU p50 ms"], rows)
    return lines + [
        f"What the endpoints saw: {seen['connections_listed']} connections listed, "
        f"{seen['calendars_listed']} calendars ({seen['calendar_partial_errors']} partial errors), "
        f"{seen['events_first_page']} events on the first page, {seen['bots_first_page']} bots on the first "
        f"page; {r['cursor_pages_walked']} cursor pages walked.",
        "",
        f"_{r['note']}. moto answers a query by walking every item of the index, so these times grow with "
        "the table; DynamoDB's do not._",
        "",
    ]


def day(r: dict[str, Any]) -> list[str]:
    m, p, model = r["measured"], r["projection"], r["model"]
    crossed = [q for q in p["quotas"] if q["crossed"]]
    lines = [
        f"Measured on the local stack in virtual time: {m['users']} users x {m['accounts_per_user']} "
        f"accounts ({model['google_accounts_per_user']} Google, the rest Outlook) x "
        f"{m['meetings_per_account']} meetings "
        f"per account on {m['day']}, driven through the whole day: the 00:00 auto-schedule job and its "
        f"workers, the 03:00 renewal (connected 5 days before, so every subscription was due: "
        f"{m['subscriptions_renewed']} renewed), {m['changes']} meeting changes through real change "
        f"notifications, the client's polling and manual schedule calls over HTTP, "
        f"{m['bots_launched']} bot launches fired by their schedules, tokens refreshed as the hours passed. "
        f"Every AWS call of calbot's clients, every Lambda invocation, API Gateway request, Scheduler "
        f"invocation, SQS batch and provider request was counted; the figures below scale those counts "
        f"linearly to {p['users']:,} users (x{p['scale_factor']:,}). HTTP errors seen: "
        f"{m['http_errors'] or 'none'}; overruns: {len(m['overruns'])}. Setup {m['setup_seconds']} s, "
        f"the day {m['day_seconds']} s of wall time"
        + (
            f"; run {m['run_at']} at commit {m['git_commit']}, 1-minute load {m['load_average_1min']:.2f}"
            if "run_at" in m
            else ""
        )
        + ".",
        "",
        "Model (assumptions, not measurements): "
        + "; ".join(
            [
                f"changes a day: {', '.join(f'{int(v * 100)}% {k}' for k, v in model['changes'].items())}",
                "polling per user: " + ", ".join(f"{k} x{len(v)}" for k, v in model["polls"].items()),
                model["manual"],
                f"{model['connects_per_account_per_day']:.0%} of accounts connect a day",
                f"a day renews 1/{model['renewal_cycle_days']} of the subscriptions",
            ]
        )
        + ".",
        "",
        f"**Requests per day at {p['users']:,} users**",
        "",
        *table(["service", "requests a day"], [[k, f"{v:,}"] for k, v in p["requests_per_day"].items()]),
        "AWS operations: " + ", ".join(f"{k} {v:,}" for k, v in p["aws_operations_per_day"].items()) + ".",
        "",
        "Provider requests (not AWS): "
        + (", ".join(f"{k} {v:,}" for k, v in p["provider_requests_per_day"].items()) or "none")
        + f"; Create Bot calls {p['bot_api_calls_per_day']:,}.",
        "",
        f"DynamoDB: **{p['dynamodb_units_per_day']['write']:,} write units and "
        f"{p['dynamodb_units_per_day']['read']:,} read units a day**. SSM Get/Put: "
        f"{p['ssm_calls_per_day']:,} a day; KMS: {p['kms_calls_per_day']['direct']:,} direct + "
        f"{p['kms_calls_per_day']['via_ssm_securestring']:,} made by Parameter Store for SecureStrings.",
        "",
        *(
            [
                "Write units a day by record (the key's first part: the table item, or its entry in an "
                "index): "
                + ", ".join(f"{k} {v:,}" for k, v in p["dynamodb_write_units_by_record"].items())
                + ".",
                "",
            ]
            if p.get("dynamodb_write_units_by_record")
            else []
        ),
        *(
            line
            for mid in [p.get("midnight_write_units_per_bot")]
            if mid
            for line in (
                f"The midnight job, its events synced before (none written): "
                f"**{mid['total']} write units per scheduled bot** ({mid['bots']} bots): the bot's own "
                f"records {mid['by_share']['bot']} (its dedup guard, its item, its GSI1 entry), per-account "
                f"writes {mid['by_share']['account']} (token refresh, locks, sync state, settings); "
                f"bench/auto_schedule.py above is the accounts' first sync, which writes the events too.",
                "",
            )
        ),
        f"**Lambda: {p['lambda_seconds_per_day']:,} Lambda-seconds, "
        f"{p['gb_seconds_per_day']:,} GB-seconds a day** "
        "(duration: the process's CPU time during the in-process invocation, nested invocations "
        "subtracted, plus its virtual sleeps: our code plus moto's and the emulators' work standing in "
        "for the AWS and provider round trips, without network latency; the shared machine's other load "
        "does not inflate it as it does the wall time, shown beside it; the handler thread's own CPU is "
        "calbot's code alone, without the threads it starts; see bench/day.py)",
        "",
        *table(
            [
                "function",
                "invocations",
                "Lambda-s",
                "GB-s",
                "MB",
                "measured: mean billed ms",
                "of which slept",
                "handler thread CPU",
                "wall",
            ],
            [
                [
                    fn,
                    f"{x['invocations']:,}",
                    f"{x['lambda_seconds']:,}",
                    f"{x['gb_seconds']:,}",
                    x["memory_mb"],
                    x["measured_mean_billed_ms"],
                    x.get("measured_mean_slept_ms", ""),
                    x.get("measured_mean_own_cpu_ms", ""),
                    x["measured_mean_wall_ms"],
                ]
                for fn, x in sorted(p["lambda"].items(), key=lambda i: -i[1]["lambda_seconds"])
            ],
        ),
    ]
    peaks = p["peaks"]
    launch, burst = peaks["launches_0900"], peaks["notification_burst"]
    rows = [
        [
            "09:00 launches",
            f"{launch['launches']:,} launches, {launch['lambda_seconds_per_launch']} Lambda-s each "
            f"({', '.join(launch['functions'])}), {launch['invocations_per_second']:,} invocations/s; "
            + (
                f"reserved concurrency {launch['reserved_concurrency']} "
                f"(wanted {launch['concurrency_wanted']:,}): "
                f"the peak's Lambda work takes {launch['drain_s_at_reserved']} s at it"
                if launch.get("reserved_concurrency")
                else "no reserved concurrency"
            ),
            launch["concurrency"],
            launch["ssm_per_second"],
            launch["kms_per_second"],
        ],
    ]
    for name in ("midnight", "renewal"):
        w = peaks[name]
        detail = "; ".join(
            f"{fn}: {e['role']}, {e['lambda_seconds']:,} Lambda-s, {e.get('duration_s', '?')} s"
            + (f" [{e['duration_source']}]" if e.get("duration_source") else "")
            + (f" (Timeout {e['timeout_s']} s: **over**)" if e.get("over_timeout") else "")
            + (
                f" at concurrency {e['concurrency']} (MaximumConcurrency {e['maximum_concurrency']})"
                if "concurrency" in e
                else ""
            )
            for fn, e in w["functions"].items()
        )
        rows.append([name, detail, w["peak_concurrency"], w["ssm_per_second"], w["kms_per_second"]])
    rows.append(
        [
            "notification burst",
            "; ".join(
                f"{fn}: {e['lambda_seconds_per_notification']} Lambda-s per notification"
                for fn, e in burst["functions"].items()
            ),
            burst["concurrency"],
            burst["ssm_per_second"],
            burst["kms_per_second"],
        ]
    )
    lines += [
        "**Concurrency peaks**",
        "",
        *table(["peak", "what", "concurrency", "SSM calls/s", "KMS calls/s"], rows),
        f"_{launch['model']}. {burst['model']}. Night jobs: the cron function runs once; its duration at "
        f"scale is its fan-out bench's figure from the same run where one is named in brackets, else "
        f"this run's one invocation scaled linearly (its fixed part too: an overestimate); "
        f"queue workers run at their MaximumConcurrency, or what finishes "
        f"in {model['night_window_s']} s._",
        "",
        *(
            [
                "**Quotas** (defaults, us-east-1) crossed at 100,000 users, and what to raise or change:",
                "",
                *table(
                    ["quota", "limit", "where", "projected", "what to raise / change", "source"],
                    [
                        [
                            q["quota"],
                            f"{q['limit']:,}",
                            q["where"],
                            f"{q['projected']:,}",
                            q["raise"],
                            q["source"],
                        ]
                        for q in crossed
                    ],
                ),
            ]
            if crossed
            else ["**Quotas** (defaults, us-east-1): none of those checked is crossed at 100,000 users.", ""]
        ),
        "Within quota: "
        + "; ".join(
            f"{q['quota']} at {q['where']}: {q['projected']:,} of {q['limit']:,}"
            for q in p["quotas"]
            if not q["crossed"]
        )
        + ".",
        "",
        *(
            [
                f"**Schedules standing**: at most {sched['peak_per_user']} a user at once over the day, "
                f"{sched['projected_peak']:,} at 100,000 users, of Scheduler's {sched['quota']:,} (Number of "
                f"schedules, {sched['quota_per_user']:,.0f} a user). A bot joining more than "
                f"{sched['arm_within_hours']:g} hours ahead holds none (deferred arming: the hourly arming "
                "job has the launcher arm it once within that; tests/service/test_arming.py), so however "
                "far ahead users schedule (a series with all its occurrences: up to 366 bots) at most "
                f"{sched['arm_within_hours']:g} hours of a user's bots hold one: "
                f"{sched['bound_per_user']} a user at this day's rate, {sched['projected_bound']:,} at "
                "100,000 users (an extrapolation of the measured day). Past the quota CreateSchedule "
                "answers ServiceQuotaExceededException (the API: 503): raise 'Number of schedules' first.",
                "",
            ]
            if (sched := p.get("schedules"))
            else []
        ),
        "_In-process, a handler's module-level caches (credentials, the bot API key) persist across "
        "invocations as in one warm container; deployed, each new container pays its first fetch, so "
        "SSM/KMS rates at high concurrency are a lower bound._",
        "",
    ]
    cost = p["monthly_cost_per_1000_users"]
    lines += [
        f"**Monthly cost per 1,000 users: ${cost['total_usd']}** (30 days; SSM Advanced tier: "
        f"{'yes' if cost['ssm_advanced_tier'] else 'no'}, SSM higher throughput: "
        f"{'yes' if cost['ssm_higher_throughput'] else 'no'}; not included: {cost['not_included']})",
        "",
        *table(["service", "USD / month / 1,000 users"], [[k, f"{v:.2f}"] for k, v in cost["usd"].items()]),
        "List prices used (us-east-1, USD):",
        "",
        *table(
            ["price", "USD", "source"],
            [[k, f"{v['usd']:.10f}".rstrip("0").rstrip("."), v["source"]] for k, v in r["prices"].items()],
        ),
    ]
    return lines


def credentials(r: dict[str, Any]) -> list[str]:
    limits = r["limits"]
    lines = [
        f"Bytes stored per account, realistic tokens (PROTOCOLS), against SSM's "
        f"{limits['ssm_standard_bytes']:,} B Standard / {limits['ssm_advanced_bytes']:,} B Advanced values. "
        "`old` is the one value the vault stored before (access token included); now SSM (or the "
        "`CRED#` item) keeps only the long-lived fields and the access token lives in an encrypted "
        "`TOKEN#` item.",
        "",
    ]
    rows = []
    for backend, result in r["backends"].items():
        for case, row in result["sizes"].items():
            stored = row.get("credential_item_blob_bytes", row["long_lived_value_bytes"])
            rows.append(
                [
                    backend,
                    case,
                    row["old_one_value_bytes"],
                    stored,
                    row.get("ssm_tier", "-"),
                    row["token_cache_item_blob_bytes"],
                    f"{row.get('token_cache_item_write_units', '-')} "
                    f"({row.get('token_cache_item_write_units_as_json', '-')})",
                ]
            )
    lines += table(
        ["backend", "provider/tokens", "old B", "stored B", "SSM tier", "TOKEN# blob B", "TOKEN# units"],
        rows,
    )
    lines += [
        "",
        "`TOKEN# units`: the write units of each refresh's write of the cached token, the token packed "
        "(a JWT's parts decoded and deflated, any other token deflated: calbot/tokencache.py); in "
        "brackets, what the same token cost as the JSON stored before. Microsoft's tokens are the "
        "emulator's work-account JWT (grown by a `groups` claim for the worst case), its claim values "
        "random: they pack no better than a real token's.",
    ]
    rows = []
    for backend, result in r["backends"].items():
        c = result["calls"]
        for what in ("sync_warm_container", "sync_cold_container", "refresh", "per_syncs"):
            label = f"{c['syncs']:,} syncs over {c['hours']:g} h (warm)" if what == "per_syncs" else what
            counted = {k: v for k, v in c[what].items() if not k.startswith("dynamodb:")}
            rows.append([backend, label, ", ".join(f"{k} {v}" for k, v in counted.items()) or "none"])
    lines += ["", *table(["backend", "token path of", "SSM and KMS calls"], rows)]
    p = r["projection"]
    return lines + [
        "",
        f"At {p['accounts']:,} accounts each refreshed hourly: the ssm backend needs {p['ssm_ssm_tps']} SSM "
        f"TPS (default quota {p['ssm_default_tps']}: higher throughput needed) and "
        f"{p['ssm_parameters_ssm_backend']:,} parameters (past the 100,000 Advanced ceiling); the dynamodb "
        f"backend needs {p['dynamodb_ssm_tps']} SSM TPS and {p['dynamodb_kms_tps']} KMS TPS. Writing the "
        f"rotated refresh token back once a day instead of on every refresh takes PutParameter from "
        f"{p['ssm_put_tps_if_every_rotation_were_written']} to {p['ssm_put_tps']} TPS.",
        "",
    ]


def webhooks(r: dict[str, Any]) -> list[str]:
    t, lat = r["throughput"], r["latency"]
    return [
        "Customer-webhook deliveries on the local stack, real time: one delivery worker handed the "
        "queue's batches in a loop (fan-out, delivery record, signing secret, signed SSRF-checked POST to "
        "the receiver sink, attempt recorded), and the time from a bot change (PATCH through the gateway) "
        "to its signed `bot.updated` at the sink.",
        "",
        *table(
            ["figure", "value"],
            [
                ["events per second, one worker", t["events_per_second_one_worker"]],
                ["events (received by the sink)", f"{t['events']} ({t['delivered']})"],
                ["enqueue cost per event (the emitting action)", f"{t['enqueue_ms_per_event']} ms"],
                ["bot change -> delivery, p50", f"{lat['latency_p50_s']} s"],
                ["p95", f"{lat['latency_p95_s']} s"],
                ["max", f"{lat['latency_max_s']} s"],
                ["missed (over 20 s)", f"{lat['missed']} of {lat['changes']}"],
            ],
        ),
        f"The local clock polls its queues every {lat['clock_tick_s']} s, which bounds the latency here; "
        "deployed, Lambda's SQS event source long-polls instead.",
        "",
    ]


SECTIONS = [
    ("cold_start", "Cold import per handler vs boto3", cold_start, "bench/cold_start.py"),
    ("sync", "Sync: requests per page, writes for an unchanged re-sync", sync, "bench/sync.py"),
    ("notify_latency", "Notification -> bot update latency", notify, "bench/notify_latency.py"),
    (
        "auto_schedule",
        "Auto-schedule throughput and the 100,000-user projection",
        auto_schedule,
        "bench/auto_schedule.py --users 100 --invite-body",
    ),
    ("read_latency", "Read endpoints: p50/p99 for a heavy user", read_latency, "bench/read_latency.py"),
    ("renewal", "Subscription renewal fan-out and the 300,000 projection", renewal, "bench/renewal.py"),
    ("events_many", "GET /calendar/events with 200 accounts, many slow", events_many, "bench/events_many.py"),
    (
        "notify_burst",
        "Notification burst: 1,000 notifications across 500 accounts",
        notify_burst,
        "bench/notify_latency.py --burst",
    ),
    (
        "credentials",
        "Credentials: value sizes, SSM and KMS calls per backend",
        credentials,
        "bench/credentials.py",
    ),
    ("launch", "Bot launches at the top of the hour", launch, "bench/launch.py --bots 2000"),
    (
        "webhooks",
        "Customer webhooks: one worker's throughput, bot change -> delivery latency",
        webhooks,
        "bench/webhooks.py",
    ),
    ("day", "One day at 100,000 users: requests, Lambda, peaks, quotas, cost", day, "bench/day.py"),
]


def render(results: Path) -> str:
    lines = [
        "# Benchmark report",
        "",
        "Generated by `make bench` (bench/report.py) from the JSON each bench script wrote in this run; "
        "no figure is typed by hand. Benchmarks print figures; nothing asserts on them. The machine is "
        "shared, so absolute times are noisy: compare ratios and counts.",
        "",
        "## Machine",
        "",
        *table(["", ""], [[k, v] for k, v in machine().items()]),
    ]
    for name, title, render_section, command in SECTIONS:
        lines += [f"## {title}", "", f"`{command}`", ""]
        path = results / f"{name}.json"
        if not path.exists():
            lines += ["_Not run in this report._", ""]
            continue
        lines += render_section(json.loads(path.read_text()))
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path, help="directory holding <bench>.json files")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "bench/REPORT.md")
    args = parser.parse_args()
    args.output.write_text(render(args.results))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
