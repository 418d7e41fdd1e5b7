"""What the auto-schedule rules add to a sync (issue 20), in-process against moto and the Graph emulator.

One account with a calendar of meetings over the next days, auto-schedule on: the worker's sync of it
(services.sync.sync_connection, what a change notification runs) for a first sync, an unchanged
re-sync, one meeting of the next 24 h changed, and the same change with auto-schedule off. Prints the
DynamoDB calls by operation, the settings reads, the rule evaluations and the bots placed per sync.
Targets: nothing more read for an unchanged re-sync, one settings read and evaluations only of the
changed events for a changed one. Figures, not assertions: the machine is shared.

    python bench/auto_sync.py [--events 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=300, help="meetings, one every 30 minutes from now")
    parser.add_argument("--json", action="store_true")
    from bench.harness import add_json_out, write_json

    add_json_out(parser)
    args = parser.parse_args()

    from bench.harness import in_process_stack, outlook_connection

    with in_process_stack("SyncWorkerFunction") as graph:
        from calbot import aws, store
        from calbot.models import AutoScheduleSettings
        from calbot.services import auto_sync
        from calbot.services.sync import sync_connection

        graph.add_app("bench-client", "bench-secret")
        mail = "auto.bench@contoso.example"
        acct = graph.add_account(client_id="bench-client", mail=mail, user_principal_name=mail)
        cal = acct["calendars"][0]["id"]
        base = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=20)
        ids = [
            graph.add_event(
                acct["id"],
                cal,
                subject=f"Meeting {i}",
                start=base + timedelta(minutes=30 * i),
                end=base + timedelta(minutes=30 * i + 25),
                location=f"https://acme.zoom.us/j/{5_000_000 + i}",
            )["id"]
            for i in range(args.events)
        ]
        user_id = "usr_bench_auto"
        conn = outlook_connection(user_id, acct, mail)
        at = datetime.now(UTC)

        def auto(enabled: bool) -> None:
            store.put_auto_settings(AutoScheduleSettings(user_id=user_id, enabled=enabled, updated_at=at))

        calls: Counter[str] = Counter()

        def count(model: Any, **_: Any) -> None:
            calls[model.name] += 1

        evaluated = Counter[str]()
        real_evaluate = auto_sync.evaluate

        def evaluate(*a: Any, **kw: Any) -> Any:
            evaluated["n"] += 1
            return real_evaluate(*a, **kw)

        auto_sync.evaluate = evaluate  # type: ignore[assignment]
        real_settings = store.get_auto_settings

        def settings(user: str) -> Any:
            evaluated["settings"] += 1
            return real_settings(user)

        store.get_auto_settings = settings  # type: ignore[assignment]
        aws.dynamodb().meta.events.register("before-call.dynamodb.*", count)
        runs: dict[str, dict[str, Any]] = {}
        steps = [
            ("first_sync", True, None),
            ("unchanged_resync", True, None),
            ("one_meeting_changed", True, ids[3]),
            ("one_meeting_changed_auto_off", False, ids[4]),
        ]
        for name, enabled, change in steps:
            auto(enabled)
            if change:
                graph.update_event(change, subject=f"Renamed {change[-6:]}")
            calls.clear()
            evaluated.clear()
            result = sync_connection(conn)
            runs[name] = {
                "events_written": result.written,
                "auto_scheduled": result.reconciled.get("auto_scheduled", 0),
                "settings_reads": evaluated["settings"],
                "events_evaluated": evaluated["n"],
                "ddb_calls": sum(calls.values()),
                "ddb_calls_by_operation": dict(sorted(calls.items())),
                "error": result.error,
            }

    figures = {"events": args.events, **runs}
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for name, run in runs.items():
            print(
                f"{name:30s} written {run['events_written']:4d}  bots {run['auto_scheduled']:3d}  "
                f"settings reads {run['settings_reads']}  evaluated {run['events_evaluated']:3d}  "
                f"DynamoDB calls {run['ddb_calls']:4d} {run['ddb_calls_by_operation']}"
            )
    write_json(figures, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
