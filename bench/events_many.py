"""GET /calendar/events for a user with 200 accounts, many slow, in-process against moto and the Graph
emulator: the answer's time against the API's budget, and how many accounts synced within it versus
were deferred to the sync queue (named in partial_errors).

    python bench/events_many.py [--accounts 200] [--slow 100] [--delay 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--slow", type=int, default=100, help="accounts whose every delta page is delayed")
    parser.add_argument("--delay", type=float, default=5.0, help="seconds a slow account's delta page takes")
    parser.add_argument("--json", action="store_true")
    from bench.harness import add_json_out, in_process_stack, write_json

    add_json_out(parser)
    args = parser.parse_args()
    with in_process_stack("ListEventsFunction") as graph:
        from calbot import aws, deadline
        from calbot.admin import create_user
        from calbot.models import EventsQuery
        from calbot.services.events import list_events
        from tests.conftest import seed_outlook_connection

        graph.add_app("bench-client", "bench-secret")
        user_id = create_user("many@bench.example").user_id
        at = datetime.now(UTC)
        start = at.replace(microsecond=0) + timedelta(hours=3)
        for i in range(args.accounts):
            mail = f"a{i}@many.example"
            acct = graph.add_account(client_id="bench-client", mail=mail, user_principal_name=mail)
            cal = acct["calendars"][0]["id"]
            graph.add_event(acct["id"], cal, subject=f"M{i}", start=start, end=start + timedelta(minutes=30))
            seed_outlook_connection(
                user_id, mail, acct, "bench-client", "bench-secret", limit=args.accounts, at=at
            )
            if i < args.slow:
                graph.add_fault(path="calendarView/delta", account=acct["id"], delay=args.delay, times=-1)
        # As the Lambda handler does: API Gateway's limit less the reserve to answer in.
        budget = deadline.API_GATEWAY_LIMIT_SECONDS - deadline.RESPONSE_RESERVE_SECONDS
        t0 = time.perf_counter()
        page = list_events(
            user_id,
            EventsQuery(limit=100),
            raw_params={},
            sync=True,
            deadline=deadline.Deadline.after(budget),
        ).page
        elapsed = time.perf_counter() - t0
        graph.clear_faults()
        sqs = aws.sqs()
        queued = int(
            sqs.get_queue_attributes(
                QueueUrl=os.environ["SYNC_QUEUE_URL"], AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]["ApproximateNumberOfMessages"]
        )
    errors: dict[str, Any] = page.partial_errors
    deferred = sum(1 for e in errors.values() if e["error"] == "provider_unavailable")
    figures = {
        "accounts": args.accounts,
        "slow_accounts": args.slow,
        "slow_delay_seconds": args.delay,
        "budget_seconds": deadline.API_GATEWAY_LIMIT_SECONDS,
        "response_seconds": round(elapsed, 2),
        "accounts_synced": args.accounts - len(errors),
        "accounts_deferred": deferred,
        "other_errors": len(errors) - deferred,
        "messages_on_sync_queue": queued,
    }
    write_json(figures, args.json_out)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(
        f"GET /calendar/events, {args.accounts} accounts "
        f"({args.slow} answering after {args.delay} s a page): "
        f"answered in {figures['response_seconds']} s of {figures['budget_seconds']} s; "
        f"{figures['accounts_synced']} synced, {deferred} deferred ({queued} on the sync queue), "
        f"{figures['other_errors']} other errors"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
