"""The 03:00 subscription renewal at scale: the fan-out job and the renewal worker, in-process against
moto and the Graph emulator, projected to 300,000 subscriptions/channels.

Measured here: (1) the job's fan-out over `--index` due subscriptions in the sparse expiry index (wall
time, Query pages, SendMessageBatch calls), and (2) the worker over `--subscriptions` real Outlook
subscriptions at the emulator with a cold access-token cache (the state at 03:00: tokens live about
an hour): per subscription its CPU time and its calls (Graph, Microsoft login, DynamoDB, SSM). The
projection adds one round trip per call at the latencies below (assumptions, stated in the output)
and uses the worker's MaximumConcurrency from template.yaml. Google channels are renewed by the
recreate path (create + stop = 2 Calendar calls, a token refresh when cold); Graph's PATCH is 1.

    python bench/renewal.py [--subscriptions 200] [--index 20000] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET = 300_000
WINDOW_SECONDS = 2 * 3600  # the night window we hold renewal to (03:00-05:00 UTC; two days of slack)
# Round trips from a Lambda in the provider's region (assumptions: no provider documents a latency).
LATENCY = {
    "graph": 0.25,
    "login": 0.15,
    "google": 0.2,
    "dynamodb": 0.008,
    "dynamodb_page": 0.1,  # a 1 MB Query page
    "ssm": 0.02,
    "sqs": 0.02,
}


def echo_validation(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A notification URL that passes Graph's validation handshake (echoes validationToken)."""
    from urllib.parse import parse_qs

    token = parse_qs(environ.get("QUERY_STRING", "")).get("validationToken", [""])[0]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [token.encode()]


class Calls:
    """AWS calls by service and operation (botocore's before-call event)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, model: Any, **_: Any) -> None:
        self.counts[f"{model.service_model.service_name}:{model.name}"] += 1

    def by_service(self) -> Counter[str]:
        services: Counter[str] = Counter()
        for key, count in self.counts.items():
            services[key.split(":")[0]] += count
        return services


def seed_subscriptions(graph: Any, n: int, url: str) -> list[Any]:
    from calbot import store, tokens, vault
    from calbot.models import CalendarInfo, Connection, Credentials, SubscriptionRef, User
    from calbot.providers import get_provider
    from calbot.services.connect import subscription_record

    provider = get_provider("outlook")
    at = datetime.now(UTC)
    conns = []
    for i in range(n):
        user_id = f"usr_r{i:06d}"
        mail = f"r{i}@bench.example"
        store.put_user(User(user_id=user_id, created_at=at))
        acct = graph.add_account(client_id="bench-client", mail=mail, user_principal_name=mail)
        cal = acct["calendars"][0]["id"]
        path = vault.credential_path(user_id, "outlook", mail)
        creds = Credentials(
            provider="outlook",
            client_id="bench-client",
            client_secret="bench-secret",
            refresh_token=acct["refresh_token"],
            scopes=provider.scopes,
        )
        vault.put(path, creds)
        conn = Connection(
            user_id=user_id,
            provider="outlook",
            account_id=mail,
            credential_path=path,
            webhook_url=url,
            calendars=[CalendarInfo(id=cal, name="Calendar", is_primary=True)],
            created_at=at,
            updated_at=at,
        )
        store.create_connection(conn, limit=200)
        state = secrets.token_urlsafe(48)
        made = provider.create_subscription(
            tokens.access_token(conn), calendar_id=cal, notification_url=url, client_state=state
        )
        sub = subscription_record(made, state, user_id, "outlook", mail)
        # Due tomorrow: in the renewal window.
        sub = sub.model_copy(update={"expires_at": at + timedelta(hours=20)})
        store.put_subscriptions([sub])
        store.save_connection(conn.model_copy(update={"subscriptions": [SubscriptionRef.of(sub)]}))
        tokens.forget_access_token(conn)  # 03:00: the hour-long access tokens have expired
        conns.append(conn)
    return conns


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from bench.harness import in_process_stack, skip_moto_table_backup

    skip_moto_table_backup()
    with in_process_stack("RenewalWorkerFunction", "RenewalJobFunction") as graph:
        from calbot import aws, store
        from calbot.models import RenewalMessage, Subscription
        from calbot.services import subscriptions
        from local.servers import serve

        echo = serve(echo_validation, name="echo")
        try:
            graph.add_app("bench-client", "bench-secret")
            t_setup = time.perf_counter()
            seed_subscriptions(graph, args.subscriptions, echo.url)
            setup_s = time.perf_counter() - t_setup
        finally:
            echo.server.shutdown()
        sqs = aws.sqs()
        calls = Calls()
        for client in (aws.dynamodb(), aws.ssm(), sqs):
            client.meta.events.register("before-call.*.*", calls)
        graph.clear_requests()

        # (2) the worker over the real subscriptions, message by message as Lambda hands them over
        queue = sqs.create_queue(QueueName="bench-renewal")["QueueUrl"]
        job = subscriptions.run_renewal(queue)
        messages = []
        while got := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
            messages += [{"messageId": m["MessageId"], "body": m["Body"]} for m in got]
        calls.counts.clear()
        outcomes: Counter[str] = Counter()
        failures = 0
        t0, cpu0 = time.perf_counter(), time.process_time()
        for record in messages:
            failed, counted = subscriptions.renew_batch({"Records": [record]})
            failures += len(failed)
            outcomes.update(counted)
        work_s, work_cpu = time.perf_counter() - t0, time.process_time() - cpu0
        worker_calls = calls.by_service()
        requests = [r for r in graph.requests() if not r["path"].startswith("/_control")]
        login = sum(1 for r in requests if "/oauth2/" in r["path"])
        n = max(1, sum(len(RenewalMessage.model_validate_json(m["body"]).subscription_ids) for m in messages))

        # (1) the fan-out over a larger index: synthetic due subscriptions (the job reads only ids)
        at = datetime.now(UTC)
        fakes = [
            Subscription(
                id=f"fake-{i:07d}-{secrets.token_hex(8)}",
                user_id=f"usr_f{i:06d}",
                provider="outlook",
                account_id=f"f{i}@bench.example",
                calendar_id="AAMk-fake",
                client_state_hash="0" * 64,
                expires_at=at + timedelta(hours=20),
                created_at=at,
            )
            for i in range(args.index)
        ]
        store.put_subscriptions(fakes)
        big = sqs.create_queue(QueueName="bench-renewal-fanout")["QueueUrl"]
        calls.counts.clear()
        t1 = time.perf_counter()
        fan = subscriptions.run_renewal(big)
        fan_s = time.perf_counter() - t1
        fan_calls = dict(calls.counts)

    per_sub_cpu = work_cpu / n
    graph_calls = (len(requests) - login) / n
    login_calls = login / n
    ddb = worker_calls.get("dynamodb", 0) / n
    ssm = worker_calls.get("ssm", 0) / n
    sqs_calls = worker_calls.get("sqs", 0) / n
    return {
        "subscriptions": args.subscriptions,
        "setup_seconds": round(setup_s, 1),
        "job_enqueued": job["subscriptions_enqueued"],
        "worker": {
            "subscriptions": n,
            "outcomes": dict(outcomes),
            "batch_item_failures": failures,
            "wall_seconds": round(work_s, 2),
            "cpu_seconds_per_subscription": round(per_sub_cpu, 4),
            "graph_calls_per_subscription": round(graph_calls, 2),
            "login_calls_per_subscription": round(login_calls, 2),
            "dynamodb_calls_per_subscription": round(ddb, 2),
            "ssm_calls_per_subscription": round(ssm, 2),
            "sqs_calls_per_subscription": round(sqs_calls, 3),
        },
        "fan_out": {
            "index_items": args.index,
            "enqueued": fan["subscriptions_enqueued"],
            "messages": fan["messages"],
            "seconds": round(fan_s, 2),
            "calls": fan_calls,
            "per_subscription_ms": round(fan_s / max(1, fan["subscriptions_enqueued"]) * 1000, 4),
        },
    }


def project(figures: dict[str, Any]) -> dict[str, Any]:
    from calbot.services.subscriptions import SUBSCRIPTIONS_PER_MESSAGE
    from local.template import load_template

    template = load_template(ROOT / "template.yaml")
    job_fn = template.functions["RenewalJobFunction"]
    worker = template.functions["RenewalWorkerFunction"]
    concurrency = int(template.data["Parameters"]["RenewalMaxConcurrency"]["Default"])
    w, f = figures["worker"], figures["fan_out"]
    messages = math.ceil(TARGET / SUBSCRIPTIONS_PER_MESSAGE)
    batch_calls = math.ceil(messages / 10)
    # DynamoDB hands a Query at most 1 MB a page; an index item is under 1 KB (assumption).
    query_pages = max(f["calls"].get("dynamodb:Query", 1), math.ceil(TARGET * 1024 / 1_048_576))
    # Fan-out: the measured in-process time scaled, and the same from AWS round trips alone.
    fan_measured = f["seconds"] * TARGET / max(1, f["enqueued"])
    fan_aws = batch_calls * LATENCY["sqs"] + query_pages * LATENCY["dynamodb_page"]
    outlook_busy = (
        w["cpu_seconds_per_subscription"]
        + w["graph_calls_per_subscription"] * LATENCY["graph"]
        + w["login_calls_per_subscription"] * LATENCY["login"]
        + w["dynamodb_calls_per_subscription"] * LATENCY["dynamodb"]
        + w["ssm_calls_per_subscription"] * LATENCY["ssm"]
        + w["sqs_calls_per_subscription"] * LATENCY["sqs"]
    )
    # A Google channel: recreate = create + stop at Google, a token refresh, and the same store work.
    google_busy = outlook_busy - w["graph_calls_per_subscription"] * LATENCY["graph"] + 2 * LATENCY["google"]
    busy = max(outlook_busy, google_busy)  # per subscription, whichever provider
    lambda_s = TARGET * busy
    finish_s = lambda_s / concurrency
    rate = concurrency / busy  # subscriptions a second across the worker fleet
    return {
        "subscriptions": TARGET,
        "subscriptions_per_message": SUBSCRIPTIONS_PER_MESSAGE,
        "messages": messages,
        "send_message_batch_calls": batch_calls,
        "fan_out_seconds_measured_scaled": round(fan_measured, 1),
        "fan_out_seconds_from_round_trips": round(fan_aws, 1),
        "job_timeout_seconds": job_fn.timeout,
        "worker_timeout_seconds": worker.timeout,
        "worker_seconds_per_subscription": {
            "outlook": round(outlook_busy, 3),
            "google": round(google_busy, 3),
        },
        "worker_lambda_seconds": round(lambda_s),
        "worker_gb_seconds": round(lambda_s * worker.memory_size / 1024),
        "template_max_concurrency": concurrency,
        "minutes_to_finish_at_template_concurrency": round(finish_s / 60, 1),
        "concurrency_for_window": math.ceil(lambda_s / WINDOW_SECONDS),
        "window_minutes": WINDOW_SECONDS // 60,
        "graph_requests_per_second_all_outlook": round(rate * w["graph_calls_per_subscription"], 1),
        "google_requests_per_second_all_google": round(rate * 2, 1),
        "login_requests_per_second": round(rate * w["login_calls_per_subscription"], 1),
        "graph_global_limit_per_second": 13_000,  # 130,000 requests per 10 s per app, all tenants
        "google_project_limit_per_second": round(10_000 / 60, 1),  # 10,000 a minute per project (default)
        "assumed_latency_seconds": LATENCY,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=200, help="real Outlook subscriptions renewed")
    parser.add_argument("--index", type=int, default=20_000, help="due index items the fan-out reads")
    parser.add_argument("--json", action="store_true")
    from bench.harness import add_json_out, write_json

    add_json_out(parser)
    args = parser.parse_args()
    figures = measure(args)
    figures["projection_300k"] = project(figures)
    write_json(figures, args.json_out)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    w, f, p = figures["worker"], figures["fan_out"], figures["projection_300k"]
    print(
        f"renewal: {w['subscriptions']} Outlook subscriptions, cold token cache "
        f"(setup {figures['setup_seconds']} s)"
    )
    print(
        f"  worker: {w['outcomes']}, {w['batch_item_failures']} batch item failures; per subscription "
        f"{w['cpu_seconds_per_subscription'] * 1000:.1f} ms CPU, {w['graph_calls_per_subscription']} Graph, "
        f"{w['login_calls_per_subscription']} login, {w['dynamodb_calls_per_subscription']} DynamoDB, "
        f"{w['ssm_calls_per_subscription']} SSM calls"
    )
    print(
        f"  fan-out: {f['enqueued']} due subscriptions in {f['messages']} messages in {f['seconds']} s "
        f"({f['per_subscription_ms']} ms each; calls {f['calls']})"
    )
    print(
        f"  300,000 at 03:00: fan-out {p['send_message_batch_calls']} SendMessageBatch calls, "
        f"~{p['fan_out_seconds_measured_scaled']} s measured-scaled "
        f"(~{p['fan_out_seconds_from_round_trips']} s from round trips) of the job's "
        f"{p['job_timeout_seconds']} s timeout"
    )
    print(
        f"  worker: {p['worker_seconds_per_subscription']} s per subscription -> "
        f"{p['worker_lambda_seconds']:,} Lambda-seconds ({p['worker_gb_seconds']:,} GB-s); "
        "at MaximumConcurrency "
        f"{p['template_max_concurrency']}: {p['minutes_to_finish_at_template_concurrency']} min "
        f"(concurrency {p['concurrency_for_window']} fits a {p['window_minutes']}-min window)"
    )
    print(
        f"  request rates at that concurrency: Graph ~{p['graph_requests_per_second_all_outlook']}/s (all "
        f"Outlook), Google ~{p['google_requests_per_second_all_google']}/s (all Google), login "
        f"~{p['login_requests_per_second']}/s (limits: Graph {p['graph_global_limit_per_second']}/s per app, "
        f"Google Calendar {p['google_project_limit_per_second']}/s per project); assumed round trips "
        f"{p['assumed_latency_seconds']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
