"""p50/p99 latency of the main read endpoints for one heavy user: 200 connections, 10,000 stored events.

Requests go through template.yaml's routes, the Lambda authorizer (ReauthorizeEvery 0: it runs on
every request) and the real handlers, in-process against moto and the Graph emulator (no sockets
between the gateway and the handlers, so the figures are our code plus moto, not network). The user's
data is seeded directly through calbot.store (200 real OAuth connects would only slow the setup):
200 Outlook connections whose credentials are in SSM and whose accounts exist at the emulator (so
GET /calendar/calendars really asks 200 accounts), 10,000 events spread over the default window, and
scheduled bots on a tenth of them. Figures, not assertions.

    python bench/read_latency.py [--connections 200] [--events 10000] [--requests 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

API = "/api/v1/calendar"


def summarise(samples_ms: list[float]) -> dict[str, Any]:
    ordered = sorted(samples_ms)
    p99 = statistics.quantiles(ordered, n=100, method="inclusive")[98] if len(ordered) > 1 else ordered[0]
    return {
        "requests": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(ordered[-1], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--bots", type=int, default=1_000, help="bots, on the earliest future events")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per endpoint")
    parser.add_argument(
        "--filtered-requests",
        type=int,
        default=0,
        help="timed get_events scoped to one account (0: skip; under moto each takes minutes here)",
    )
    parser.add_argument(
        "--calendar-requests", type=int, default=8, help="timed GET /calendar/calendars (live: 200 accounts)"
    )
    parser.add_argument("--json", action="store_true")
    from bench.harness import (
        add_json_out,
        in_process_gateway,
        skip_moto_table_backup,
        speed_up_moto_queries,
        write_json,
    )

    add_json_out(parser)
    args = parser.parse_args()

    speed_up_moto_queries()
    skip_moto_table_backup()  # seeding writes bot transactions into a 10,000-item table; none fails
    with in_process_gateway() as (graph, gateway):
        # Before calbot.log is imported: one INFO line per request would flood the output.
        os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
        from werkzeug.test import Client

        from calbot import auth, ids, store, vault
        from calbot.admin import create_user
        from calbot.models import CalendarInfo, Connection, Credentials, Event, ScheduledBot
        from calbot.providers import get_provider
        from calbot.services.bots import dedup_key, new_bot_id

        t_setup = time.perf_counter()
        graph.add_app("bench-client", "bench-secret")
        user = create_user("heavy@bench.example")
        key, _ = auth.issue_api_key(user.user_id)
        headers = {"Authorization": f"Token {key}"}
        at = datetime.now(UTC)
        scopes = get_provider("outlook").scopes
        accounts: list[tuple[str, str]] = []  # (account id, calendar id)
        for c in range(args.connections):
            mail = f"room{c:03d}@bench.example"
            acct = graph.add_account(client_id="bench-client", mail=mail, user_principal_name=mail)
            cal = acct["calendars"][0]["id"]
            path = vault.credential_path(user.user_id, "outlook", mail)
            creds = Credentials(
                provider="outlook",
                client_id="bench-client",
                client_secret="bench-secret",
                refresh_token=acct["refresh_token"],
                scopes=scopes,
            )
            vault.put(path, creds)
            conn = Connection(
                user_id=user.user_id,
                provider="outlook",
                account_id=mail,
                user_email=mail,
                primary_calendar_id=cal,
                calendars=[CalendarInfo(id=cal, name="Calendar", is_primary=True)],
                webhook_url="-",
                credential_path=path,
                created_at=at,
                updated_at=at,
            )
            store.create_connection(conn, limit=args.connections)
            accounts.append((mail, cal))

        # Evenly over 28 days, inside the default window of the events endpoints (now - 1 d .. now + 28 d).
        first = at - timedelta(hours=2)  # the first page holds past and upcoming meetings
        step = timedelta(days=28) / args.events
        events = []
        for i in range(args.events):
            mail, cal = accounts[i % len(accounts)]
            start = (first + step * i).replace(microsecond=0)
            platform_id = f"AAMk{i:08d}"
            events.append(
                Event(
                    event_id=ids.event_id(user.user_id, "outlook", mail, platform_id),
                    user_id=user.user_id,
                    provider="outlook",
                    account_id=mail,
                    calendar_id=cal,
                    platform_id=platform_id,
                    ical_uid=f"uid-{i}",
                    title=f"Meeting {i}",
                    start_time=start,
                    end_time=start + timedelta(minutes=30),
                    organizer_email=mail,
                    meeting_platform="zoom",
                    meeting_url=f"https://acme.zoom.us/j/{9_000_000_000 + i}",
                    content_hash=f"h{i}",
                    created_at=at,
                    updated_at=at,
                )
            )
        store.put_events(events)
        future = [e for e in events if e.start_time > at + timedelta(minutes=5)][: args.bots]
        for event in future:
            store.create_bot(
                ScheduledBot(
                    bot_id=new_bot_id(user.user_id, event.event_id),
                    user_id=user.user_id,
                    event_id=event.event_id,
                    series_key=event.event_id,
                    provider="outlook",
                    account_id=event.account_id,
                    title=event.title,
                    meeting_url=event.meeting_url or "",
                    meeting_platform="zoom",
                    occurrence_start=event.start_time,
                    meeting_end=event.end_time,
                    scheduled_join_time=event.start_time - timedelta(seconds=60),
                    dedup_key=dedup_key(event.meeting_url or "", event.start_time),
                    created_at=at,
                    updated_at=at,
                )
            )
        setup_s = time.perf_counter() - t_setup

        client = Client(gateway)

        def get(url: str, **params: Any) -> dict[str, Any]:
            response = client.get(url, headers=headers, query_string=params or None)
            if response.status_code != 200:
                print(f"GET {url} {params}: {response.status_code} {response.get_data(as_text=True)}")
                raise SystemExit(1)
            return response.get_json()

        def timed(count: int, call: Callable[[], Any]) -> dict[str, Any]:
            call()  # warm: the handler's first import and any per-container caches
            samples, cpu = [], []
            for _ in range(count):
                t0, c0 = time.perf_counter(), time.process_time()
                call()
                samples.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
            # CPU time of this process (gateway, handler, moto, emulator) does not grow with other
            # processes' load on a shared machine; wall time does.
            return {**summarise(samples), "cpu_p50_ms": round(statistics.median(cpu), 1)}

        # Sanity of what is measured: the seeded data is what the endpoints see.
        listed = get(f"{API}/connections")
        page = get(f"{API}/get_events", limit=100)
        bots = get(f"{API}/scheduled_bots")
        calendars = get(f"{API}/calendars")
        seen = {
            "connections_listed": listed["total"],
            "events_first_page": len(page["results"]),
            "events_with_bots_first_page": sum(1 for e in page["results"] if e.get("bots")),
            "bots_first_page": len(bots["results"]),
            "calendars_listed": len(calendars["calendars"]),
            "calendar_partial_errors": len(calendars.get("partial_errors") or {}),
        }

        first_url = f"{API}/get_events"
        state = {"next": page["next"] or first_url, "pages": 0}

        def next_page() -> None:  # walk the pages with their cursors; start over at the end
            body = get(state["next"])
            state["pages"] += 1
            state["next"] = body["next"] or page["next"] or first_url  # (a small table has one page)

        one_account, _ = accounts[len(accounts) // 2]
        endpoints = {
            "GET /calendar/connections": timed(args.requests, lambda: get(f"{API}/connections")),
            "GET /calendar/get_events (first page, limit 100)": timed(
                args.requests, lambda: get(f"{API}/get_events", limit=100)
            ),
            "GET /calendar/get_events (next pages via cursor, limit 100)": timed(args.requests, next_page),
            "GET /calendar/scheduled_bots (limit 100)": timed(
                args.requests, lambda: get(f"{API}/scheduled_bots")
            ),
            f"GET /calendar/calendars (live, {args.connections} accounts)": timed(
                args.calendar_requests, lambda: get(f"{API}/calendars")
            ),
        }
        if args.filtered_requests:
            endpoints[f"GET /calendar/get_events (one account of {args.connections}, limit 100)"] = timed(
                args.filtered_requests,
                lambda: get(f"{API}/get_events", limit=100, provider="outlook", account_id=one_account),
            )

    figures = {
        "connections": args.connections,
        "events": args.events,
        "bots": len(future),
        "setup_seconds": round(setup_s, 1),
        "seen": seen,
        "cursor_pages_walked": state["pages"],
        "endpoints": endpoints,
        "note": "in-process: authorizer + handler + moto (DynamoDB query cost is CPU here, not network); "
        "API Gateway and Lambda overheads are not included",
    }
    write_json(figures, args.json_out)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(
        f"read endpoints, one user with {args.connections} connections, {args.events} events, "
        f"{len(future)} bots (setup {setup_s:.0f} s)"
    )
    print(f"  seen: {seen}")
    for name, row in endpoints.items():
        print(
            f"  {name:<58} p50 {row['p50_ms']:>8.1f} ms  p99 {row['p99_ms']:>8.1f} ms  "
            f"CPU p50 {row['cpu_p50_ms']:>7.1f} ms  (n={row['requests']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
