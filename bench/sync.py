"""Sync cost for one 1,000-event calendar, in-process against moto and the Graph emulator.

Prints provider requests per sync (target: pages + series masters, never one per event), DynamoDB
write units for the first sync and for an unchanged re-sync (target 0), and events/s through the sync
service. Figures, not assertions: the machine is shared.

    python bench/sync.py [--events 1000] [--series 10] [--page-size 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--events", type=int, default=1000, help="events in the calendar (occurrences included)"
    )
    parser.add_argument("--series", type=int, default=10, help="how many of them come from weekly series")
    parser.add_argument("--per-series", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    from bench.harness import add_json_out, write_json

    add_json_out(parser)
    args = parser.parse_args()

    from bench.harness import in_process_stack, outlook_connection
    from tests.conftest import DynamoWrites

    with in_process_stack("ListEventsFunction") as graph:
        from calbot import aws
        from calbot.services.sync import sync_connection

        graph.add_app("bench-client", "bench-secret")
        acct = graph.add_account(
            client_id="bench-client",
            mail="bench@contoso.example",
            user_principal_name="bench@contoso.example",
        )
        cal = acct["calendars"][0]["id"]
        base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
        singles = args.events - args.series * args.per_series
        for i in range(singles):
            start = base + timedelta(minutes=30 * i)
            graph.add_event(
                acct["id"],
                cal,
                subject=f"Meeting {i}",
                start=start,
                end=start + timedelta(minutes=25),
                online_meeting_url=f"https://teams.microsoft.com/l/meetup-join/19%3a{i}%40thread.v2/0",
            )
        for s in range(args.series):
            day = (base + timedelta(days=s % 7)).date().isoformat()
            graph.add_event(
                acct["id"],
                cal,
                subject=f"Series {s}",
                start=f"{day}T{8 + s % 8:02d}:00:00",
                end=f"{day}T{8 + s % 8:02d}:30:00",
                time_zone="Pacific Standard Time",
                location=f"https://acme.zoom.us/j/{9000 + s}",
                recurrence={
                    "pattern": {
                        "type": "weekly",
                        "interval": 1,
                        "daysOfWeek": [(base + timedelta(days=s % 7)).strftime("%A").lower()],
                    },
                    "range": {"type": "numbered", "startDate": day, "numberOfOccurrences": args.per_series},
                },
            )

        conn = outlook_connection("usr_bench", acct, "bench@contoso.example")

        writes = DynamoWrites()
        writes.attach(aws.dynamodb().meta.events)
        runs = {}
        for name in ("first_sync", "unchanged_resync"):
            graph.clear_requests()
            writes.reset()
            t0 = time.perf_counter()
            result = sync_connection(conn)
            elapsed = time.perf_counter() - t0
            reqs = [r for r in graph.requests(account=acct["id"]) if r["path"].startswith("/v1.0/")]
            pages = [r for r in reqs if "calendarView/delta" in r["path"]]
            details = [r for r in reqs if "/me/events/" in r["path"]]
            runs[name] = {
                "provider_requests": len(reqs),
                "delta_pages": len(pages),
                "detail_fetches": len(details),
                "events_written": result.written,
                "ddb_write_calls": len(writes.calls),
                "ddb_write_units": writes.units,
                "ddb_write_units_by_target": {
                    "table": sum(writes.table_units.values()),
                    **{f"index {n}": u for n, u in sorted(writes.index_units.items())},
                },
                "seconds": round(elapsed, 3),
                "events_per_s": round(args.events / elapsed, 1),
                "error": result.error,
            }

    first = runs["first_sync"]
    figures = {
        "events": args.events,
        "series": args.series,
        "series_occurrences": args.series * args.per_series,
        **runs,
        "requests_per_event_first_sync": round(first["provider_requests"] / args.events, 4),
        "requests_expected_first_sync": first["delta_pages"] + args.series,
    }
    write_json(figures, args.json_out)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    shape = f"{args.series} weekly series x {args.per_series} occurrences"
    print(f"sync of one calendar: {args.events} events ({shape})")
    for name, r in runs.items():
        print(
            f"  {name:<17} provider requests {r['provider_requests']:>4} (delta pages {r['delta_pages']}, "
            f"masters/exceptions {r['detail_fetches']})  events written {r['events_written']:>5}  "
            f"DynamoDB writes {r['ddb_write_calls']:>3} calls / {r['ddb_write_units']:>5} WCU  "
            f"{r['seconds']:.2f} s  {r['events_per_s']:.0f} events/s"
        )
    print(
        f"  requests per event on a full sync: {figures['requests_per_event_first_sync']} "
        f"(= pages + masters: {figures['requests_expected_first_sync']})"
    )
    split = ", ".join(f"{k} {v}" for k, v in first["ddb_write_units_by_target"].items())
    print(f"  first sync's write units by target (item size before/after, every index entry): {split}")
    print(f"  write units for an unchanged re-sync: {runs['unchanged_resync']['ddb_write_units']} (target 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
