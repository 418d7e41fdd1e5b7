"""What one auto-scheduled bot costs in DynamoDB write units, as AWS bills them (tests/dynamo_units:
item size before and after, transactions 2x, every index entry), including the event writes the
bot needs. The marginal cost of one more meeting in a run: the run of a user with three meetings less
that of a user with one, halved, so that the per-run writes (sync cursor, connection, last run) drop
out. The counts are deterministic: the figures are pinned, so any change to what a scheduled bot
writes shows here."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import store
from calbot.models import AutoScheduleSettings
from calbot.services import auto_schedule
from local.stack import LocalStack
from tests.conftest import DynamoWrites, connect_new_account

CLIENT_ID = "wcu-client"
CLIENT_SECRET = "wcu-secret-18"
_n = itertools.count()

# The target is 3; not reached. What one bot costs with this key layout: its event (1 unit per
# KB: 2, or 3 for an odd big one, the emulator's event being about 1.9 KB with its compressed
# payload, whose size moves with the random provider ids in it) and the event's GSI1 entry (1, the
# narrowed entry is small), the dedup guard then the bot, two plain conditional puts (1 each: no
# transaction, which would bill each twice), and the bot's GSI1 entry (1). Neither has a GSI2 entry
# any more: an event id starts with its account's prefix and a bot id with its series' (calbot.ids),
# so those lists are ranges of the user's partition. Below 6 needs fewer items per bot (the guard
# merged away) or an event item under 1 KB, not smaller index entries.
UNITS_PER_BOT = 6
PER_BOT_BY_KIND = {"DEDUP": 1, "BOT": 1}  # exact: what scheduling the bot itself writes to the table
PER_BOT_BY_INDEX = {"GSI1": 2}  # the event's entry and the bot's; no GSI2 (nor GSI3: not a series)
EVENT_UNITS = (2, 3)  # the event item itself, by its size


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> LocalStack:
    inproc_stack.graph.add_app(CLIENT_ID, CLIENT_SECRET)
    return inproc_stack


def _user_with_meetings(stack: LocalStack, count: int) -> str:
    user_id, acct = connect_new_account(stack, CLIENT_ID, CLIENT_SECRET, prefix="wcu")
    base = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=2)
    for m in range(count):
        start = base + timedelta(hours=m)
        stack.graph.add_event(
            acct["id"],
            acct["calendars"][0]["id"],
            subject=f"Standup {m}",
            start=start.isoformat(),
            end=(start + timedelta(minutes=30)).isoformat(),
            location=f"https://acme.zoom.us/j/{900000 + m}",
        )
    store.put_auto_settings(
        AutoScheduleSettings(
            user_id=user_id, enabled=True, updated_at=datetime.now(UTC), default_bot_config={"bot_name": "A"}
        )
    )
    return user_id


def _run(user_id: str, counter: DynamoWrites) -> dict[str, Any]:
    counter.reset()
    run = auto_schedule.run_for_user(user_id)
    assert run is not None and run.partial_errors == {}
    breakdown = counter.breakdown()
    return {
        "scheduled": run.scheduled,
        "table": sum(breakdown["table"].values()),
        **breakdown["indexes"],
        **{f"kind:{k}": v for k, v in counter.kind_units.items()},  # settled by breakdown()
    }


def test_units_per_auto_scheduled_bot_with_its_event(stack: LocalStack, ddb_writes: DynamoWrites) -> None:
    one = _run(_user_with_meetings(stack, 1), ddb_writes)
    three = _run(_user_with_meetings(stack, 3), ddb_writes)
    assert (one["scheduled"], three["scheduled"]) == (1, 3)
    per_bot = {k: (three.get(k, 0) - one.get(k, 0)) / 2 for k in set(one) | set(three) if k != "scheduled"}
    assert {k: per_bot.get(f"kind:{k}") for k in PER_BOT_BY_KIND} == PER_BOT_BY_KIND
    assert {k: per_bot.get(k) for k in ("GSI1", "GSI2", "GSI3") if per_bot.get(k)} == PER_BOT_BY_INDEX
    # Nothing but the event, the guard and the bot is written per meeting (the table's other records
    # are per run: they drop out of the difference).
    others = {
        k: v for k, v in per_bot.items() if k.startswith("kind:") and k[5:] not in ("EVENT", *PER_BOT_BY_KIND)
    }
    assert not any(others.values()), others
    assert EVENT_UNITS[0] <= per_bot["kind:EVENT"] <= EVENT_UNITS[1]
    table = per_bot["table"]
    assert table == per_bot["kind:EVENT"] + sum(PER_BOT_BY_KIND.values())
    assert UNITS_PER_BOT <= table + sum(PER_BOT_BY_INDEX.values()) <= UNITS_PER_BOT + 1
