"""Scheduled bot records (USER#<u> / BOT#<bot id>) and their dedup guards (DEDUP#<u>#<dedup key> / DEDUP);
the bots whose arming is deferred are also in the sparse arming index (GSI2, ARM#<shard>).

A bot id starts with its series' prefix (calbot.ids): a series' bots are a range of BOT# keys, not
an index.

This module only stores: it writes what calbot.services.bots decides, with the conditions that make
each decision atomic. The lifecycle, the dedup key and the rules those conditions enforce are
explained there."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

from calbot import ids
from calbot.errors import Unavailable
from calbot.models import LIVE_STATUSES, ScheduledBot
from calbot.store import base
from calbot.store.base import (
    _get,
    _put_if,
    _strip_keys,
    _write_if,
    to_item,
    user_pk,
)
from calbot.timeutil import iso_z, now, parse_iso


class AlreadyScheduled(Exception):
    def __init__(self, bot_id: str | None = None) -> None:
        super().__init__(bot_id)
        self.bot_id = bot_id


class BotChanged(Exception):
    """The bot was not in the state the write expected (launched, cancelled, or claimed meanwhile)."""


class BotRecords(Protocol):
    """The bot records calbot.services.bots writes its lifecycle with (this module is the real one)."""

    def dedup_owner(self, user_id: str, dedup_key: str) -> str | None: ...

    def get_bot(self, user_id: str, bot_id: str) -> ScheduledBot | None: ...

    def create_bot(self, bot: ScheduledBot) -> None: ...

    def save_bot(
        self,
        bot: ScheduledBot,
        *,
        expect_status: str | tuple[str, ...],
        expect_claim: str | None = ...,
        release_guard: bool = ...,
        expect_generation: int | None = ...,
    ) -> None: ...

    def move_bot(self, bot: ScheduledBot, old_dedup_key: str, *, expect_status: str) -> None: ...


class BotQueries(Protocol):
    """Reads of a user's bots by series, account or time (the paged, filtered bots_by_join_time and
    upcoming_bots are left out: a fake of them would be a second DynamoDB). This module is the real one."""

    def bots_of_series(self, user_id: str, series_key: str) -> list[ScheduledBot]: ...

    def account_bots(self, user_id: str, provider: str, account_id: str) -> Iterator[ScheduledBot]: ...

    def bots_between(self, user_id: str, start: datetime, end: datetime) -> list[ScheduledBot]: ...


# The sparse arming index (GSI2, keys only): a Scheduled bot whose arming is deferred (it joins beyond
# calbot.scheduler.ARM_WITHIN) has an entry ARM#<shard> / <join time>#<generation>#<bot id>, which the
# hourly arming job reads by join time (calbot.services.arming); arming it rewrites the item without.
ARM_SHARDS = 8


def _arm_shard(bot_id: str) -> int:
    return int(hashlib.sha256(bot_id.encode()).hexdigest(), 16) % ARM_SHARDS


def _bot_item(bot: ScheduledBot) -> dict[str, Any]:
    deferred = bot.arm_deferred and bot.status == "Scheduled"
    item = {
        "PK": user_pk(bot.user_id),
        "SK": f"BOT#{bot.bot_id}",
        "kind": "bot",
        "GSI1PK": f"USER#{bot.user_id}#BOTS",
        "GSI1SK": f"{iso_z(bot.scheduled_join_time)}#{bot.bot_id}",
        "phase": _phase(bot.status),
        # arm_deferred only where true (a name on every bot would be billed on every write)
        **bot.model_dump(mode="json", exclude=None if bot.arm_deferred else {"arm_deferred"}),
    }
    if deferred:
        item["GSI2PK"] = f"ARM#{_arm_shard(bot.bot_id)}"
        item["GSI2SK"] = f"{iso_z(bot.scheduled_join_time)}#{bot.launch_generation}#{bot.bot_id}"
    return item


def _phase(status: str) -> str:
    """What GSI1 holds of a bot's status (listings filter on it): "live" for Scheduled and Launching,
    else the status. A launch's claim (Scheduled -> Launching) leaves it, so it does not rewrite the
    index entry; only the launch's end (-> Launched) does."""
    return "live" if status in LIVE_STATUSES else status


class DeferredArming(NamedTuple):
    """One entry of the arming index: the bot, and the join time and generation it was deferred under."""

    user_id: str
    bot_id: str
    join_time: datetime
    generation: int


def deferred_armings_before(when: datetime) -> Iterator[DeferredArming]:
    """Every deferred arming whose join time is before `when`, from the sparse arming index (the index's
    keys only, never a scan), shard by shard."""
    for shard in range(ARM_SHARDS):
        items = base._query(
            IndexName="GSI2",
            KeyConditionExpression="GSI2PK = :pk AND GSI2SK < :until",
            ExpressionAttributeValues=to_item({":pk": f"ARM#{shard}", ":until": iso_z(when)}),
            ProjectionExpression="PK, SK, GSI2SK",
        )
        for item in items:
            join, generation, _ = str(item["GSI2SK"]).split("#", 2)
            yield DeferredArming(
                user_id=str(item["PK"]).removeprefix("USER#"),
                bot_id=str(item["SK"]).removeprefix("BOT#"),
                join_time=parse_iso(join),
                generation=int(generation),
            )


def _bot(data: dict[str, Any]) -> ScheduledBot:
    return ScheduledBot.model_validate(_strip_keys(data))


def _guard_key(user_id: str, dedup_key: str) -> dict[str, Any]:
    return {"PK": f"DEDUP#{user_id}#{dedup_key}", "SK": "DEDUP"}


# A guard is written before its bot, and every change of a bot and its guard is a sequence of plain
# conditional writes, never a transaction (which bills each item twice):
# - place: take the guard, then write the bot;
# - move: take the new guard, save the bot, release the old guard;
# - cancel, or a failed launch: save the bot, release its guard.
# A writer cut off between two of them leaves a guard that holds nothing: one naming a bot that does not
# exist, that gave its occurrence back, or that has moved to another occurrence (`_orphaned`). Such a
# guard is taken over by the next writer, conditionally on the bot it names, but only GUARD_GRACE after
# it was taken: its taker may still be writing the bot (a creator writes it only within CREATOR_WINDOW
# of taking the guard; the grace is longer, so that a put sent at the window's end has landed).
CREATOR_WINDOW = timedelta(seconds=30)
GUARD_GRACE = timedelta(seconds=60)

# A bot in one of these has given its occurrence back (GUARD_RELEASED_BY_ITS_BOT): a guard still naming
# it holds nothing. A Launched bot keeps its guard.
RELEASED_STATUSES = ("Cancelled", "Failed")


def dedup_owner(user_id: str, dedup_key: str) -> str | None:
    """The bot holding the dedup guard of this occurrence of this meeting, if one does (a guard past its
    grace that holds nothing holds no bot)."""
    guard = _guard(user_id, dedup_key)
    return None if guard is None or _orphaned(user_id, guard) else _owner(guard)


def _guard(user_id: str, dedup_key: str) -> dict[str, Any] | None:
    return _get(**{k.lower(): v for k, v in _guard_key(user_id, dedup_key).items()})


def _owner(guard: dict[str, Any] | None) -> str | None:
    return str(guard.get("bot_id") or "") or None if guard else None


def _guard_owner(user_id: str, dedup_key: str) -> str | None:
    return _owner(_guard(user_id, dedup_key))


def _orphaned(user_id: str, guard: dict[str, Any]) -> bool:
    """Past its grace and holding nothing: the bot it names does not exist (its creator was cut off
    between the guard and the bot), gave its occurrence back (Cancelled or Failed: the release after
    the bot's save was cut off), or is now another occurrence's (a move cut off before releasing the
    old guard, or after taking the new one). A guard without `taken_at` predates the grace."""
    taken_at = guard.get("taken_at")
    if taken_at and parse_iso(taken_at) + GUARD_GRACE > now():
        return False
    owner = _owner(guard)
    bot = get_bot(user_id, owner) if owner else None
    if bot is None or bot.status in RELEASED_STATUSES:
        return True
    return _guard_key(user_id, bot.dedup_key)["PK"] != guard.get("PK")


def get_bot(user_id: str, bot_id: str) -> ScheduledBot | None:
    data = _get(user_pk(user_id), f"BOT#{bot_id}")
    return _bot(data) if data else None


# The writes. Each condition below is one of calbot.services.bots' rules, named there.


def create_bot(bot: ScheduledBot) -> None:
    """A new bot: its dedup guard first (ONE_LIVE_BOT_PER_OCCURRENCE, `_take_guard`), then the bot, each
    a conditional PutItem. Raises AlreadyScheduled, naming the bot that holds the guard.

    A creator that lost its window (paused between the two writes) gives its guard back and writes no
    bot: Unavailable, the client may retry."""
    taken_at = now()
    _take_guard(bot, taken_at)
    if now() - taken_at >= CREATOR_WINDOW:
        _write_if("delete_item", **_guard_release(bot, bot.dedup_key, taken_at=taken_at))
        raise Unavailable("service_unavailable", "The bot could not be scheduled right now; try again.")
    new_bot = to_item(_bot_item(bot))
    # _put_if: a retry of a put whose answer was lost finds its own item, not a rival's
    if not _put_if(Item=new_bot, ConditionExpression="attribute_not_exists(PK)"):
        raise AlreadyScheduled(_guard_owner(bot.user_id, bot.dedup_key))


def save_bot(
    bot: ScheduledBot,
    *,
    expect_status: str | tuple[str, ...],
    expect_claim: str | None = None,
    release_guard: bool = False,
    expect_generation: int | None = None,
) -> None:
    """Write a changed bot only if it is still in `expect_status` (and held by `expect_claim`, and
    armed under `expect_generation`), else BotChanged (ONLY_SCHEDULED_CHANGES, LAUNCH_CLAIMED_ONCE,
    ONE_CURRENT_ARMING): one conditional PutItem.

    With release_guard (the bot is Cancelled or Failed) its dedup guard is deleted after it
    (GUARD_RELEASED_BY_ITS_BOT), so the occurrence can be scheduled again. Cut off between the two, the
    guard names a bot that gave its occurrence back: it holds nothing (`_orphaned`); a live bot never
    loses its guard (the release follows the save that ended it)."""
    if not _put_if(**_put_if_status(bot, expect_status, expect_claim, expect_generation)):
        raise BotChanged
    if release_guard:
        _write_if("delete_item", **_guard_release(bot, bot.dedup_key))


def move_bot(bot: ScheduledBot, old_dedup_key: str, *, expect_status: str) -> None:
    """Save a bot whose meeting moved (new start or link) if it is still in `expect_status`, and move its
    dedup guard with it: take the new guard, save the bot, release the old guard. Raises
    AlreadyScheduled when another bot holds the new slot (nothing written), and BotChanged when the bot
    left `expect_status` meanwhile (the new guard given back).

    Three plain writes, not a transaction (which bills each item twice): cut off after the first, the
    new guard names a bot of another occurrence; after the second, the old one does. Either holds
    nothing (`_orphaned`). The old guard is released only if taken before this move began: a later
    move of the bot back to that slot retakes it, and this release, late, must not delete it."""
    if bot.dedup_key == old_dedup_key:
        save_bot(bot, expect_status=expect_status)
        return
    began = now()
    _take_guard(bot, began)
    if not _put_if(**_put_if_status(bot, expect_status, None)):
        _write_if("delete_item", **_guard_release(bot, bot.dedup_key, taken_at=began))
        raise BotChanged
    _write_if("delete_item", **_guard_release(bot, old_dedup_key, taken_before=began))


def _stamp(at: datetime) -> str:
    """A guard's `taken_at`, fixed width (microseconds always), so that its text compares as its time in
    a condition."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _guard_put(bot: ScheduledBot, taken_at: datetime) -> dict[str, Any]:
    """The guard of the bot's dedup key, naming the bot (PutItem's Item, without its condition)."""
    guard = {
        **_guard_key(bot.user_id, bot.dedup_key),
        "kind": "dedup",
        "bot_id": bot.bot_id,
        "event_id": bot.event_id,
        "taken_at": _stamp(taken_at),
    }
    return {"Item": to_item(guard)}


def _take_guard(bot: ScheduledBot, taken_at: datetime) -> None:
    """ONE_LIVE_BOT_PER_OCCURRENCE: the guard of the bot's dedup key, written only where none exists, or
    over one that holds nothing (`_orphaned`) while it still names the same bot, so that of two takers
    one wins. A guard already naming this bot (it moves back to a slot whose release was cut off) is
    retaken. Raises AlreadyScheduled, naming the bot that holds it."""
    guard = _guard_put(bot, taken_at)
    # each put is _put_if: a retry of one whose answer was lost finds its own item, not a rival's
    if _put_if(**guard, ConditionExpression="attribute_not_exists(PK)"):
        return
    held = _guard(bot.user_id, bot.dedup_key)
    if held is None:
        condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(PK)"}
    elif _owner(held) == bot.bot_id or _orphaned(bot.user_id, held):
        condition = {
            "ConditionExpression": "bot_id = :old",
            "ExpressionAttributeValues": to_item({":old": held.get("bot_id")}),
        }
    else:
        raise AlreadyScheduled(_owner(held))
    if not _put_if(**guard, **condition):
        raise AlreadyScheduled(_guard_owner(bot.user_id, bot.dedup_key))


def _guard_release(
    bot: ScheduledBot,
    dedup_key: str,
    *,
    taken_at: datetime | None = None,
    taken_before: datetime | None = None,
) -> dict[str, Any]:
    """GUARD_RELEASED_BY_ITS_BOT: the guard of `dedup_key` goes only while this bot holds it (or while
    it is gone); only the one taken at `taken_at`, or one taken by `taken_before`, when given.
    DeleteItem's arguments, without the table."""
    condition, values = "bot_id = :b", {":b": bot.bot_id}
    if taken_at is not None:
        condition += " AND taken_at = :t"
        values[":t"] = _stamp(taken_at)
    if taken_before is not None:
        condition += " AND (attribute_not_exists(taken_at) OR taken_at <= :t)"
        values[":t"] = _stamp(taken_before)
    return {
        "Key": to_item(_guard_key(bot.user_id, dedup_key)),
        "ConditionExpression": f"attribute_not_exists(PK) OR ({condition})",
        "ExpressionAttributeValues": to_item(values),
    }


def _put_if_status(
    bot: ScheduledBot,
    expect_status: str | tuple[str, ...],
    expect_claim: str | None,
    expect_generation: int | None = None,
) -> dict[str, Any]:
    """ONLY_SCHEDULED_CHANGES, LAUNCH_CLAIMED_ONCE: the bot, only while in one of these statuses (and
    under this launch claim). PutItem's arguments, without the table (as `_guard_release`)."""
    statuses = (expect_status,) if isinstance(expect_status, str) else expect_status
    values: dict[str, Any] = {f":s{i}": st for i, st in enumerate(statuses)}
    cond = "(" + " OR ".join(f"#s = :s{i}" for i in range(len(statuses))) + ")"
    if expect_claim is not None:
        cond += " AND launch_claim = :claim"
        values[":claim"] = expect_claim
    if expect_generation is not None:
        # a record made before generations has none: it is generation 0
        gen = "launch_generation = :gen"
        if not expect_generation:
            gen = f"({gen} OR attribute_not_exists(launch_generation))"
        cond += f" AND {gen}"
        values[":gen"] = expect_generation
    return {
        "Item": to_item(_bot_item(bot)),
        "ConditionExpression": cond,
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": to_item(values),
    }


# The reads.


def upcoming_bots(
    user_id: str,
    *,
    after: datetime,
    limit: int,
    start_key: str | None = None,
    status: str | None = None,
    provider: str | None = None,
    account_id: str | None = None,
) -> list[ScheduledBot]:
    """Bots whose join time is after `after` (or after the bot `start_key` names), soonest first."""
    return bots_by_join_time(
        user_id,
        ascending=True,
        bound=start_key + "\x00" if start_key else iso_z(after),
        limit=limit,
        statuses=(status,) if status else None,
        provider=provider,
        account_id=account_id,
    )


def bots_by_join_time(
    user_id: str,
    *,
    ascending: bool,
    bound: str,
    limit: int,
    statuses: tuple[str, ...] | None = None,
    provider: str | None = None,
    account_id: str | None = None,
    consistent: bool = True,
) -> list[ScheduledBot]:
    """One direction of the user's bots by join time (GSI1): ascending from `bound` (GSI1SK >= bound),
    or descending from just below it (GSI1SK < bound), filtered server side on what the index projects
    (provider, account, and the status's `_phase`), then on the status itself in the record read from
    the table (which tells Scheduled from Launching, and is current where an index entry may lag; with
    `consistent=False`, an eventually consistent read at half the units, as a listing may)."""
    if limit <= 0:
        return []
    values: dict[str, Any] = {":pk": f"USER#{user_id}#BOTS", ":b": bound}
    filters = []
    if statuses:
        phases = sorted({_phase(st) for st in statuses})
        # a bot written before phases (or an index that does not project it) passes to the status check
        in_phases = ", ".join(f":p{i}" for i in range(len(phases)))
        filters.append(f"(phase IN ({in_phases}) OR attribute_not_exists(phase))")
        values.update({f":p{i}": p for i, p in enumerate(phases)})
    if provider:
        filters.append("provider = :prov")
        values[":prov"] = provider
    if account_id:
        filters.append("account_id = :acct")
        values[":acct"] = account_id
    kwargs: dict[str, Any] = {
        "IndexName": "GSI1",
        "KeyConditionExpression": f"GSI1PK = :pk AND GSI1SK {'>=' if ascending else '<'} :b",
        "ScanIndexForward": ascending,
        "ExpressionAttributeValues": to_item(values),
        "Limit": max(limit, 25),
    }
    if filters:
        kwargs["FilterExpression"] = " AND ".join(filters)
    entries = base._query(**kwargs)  # the index holds the keys and the filtered fields only
    bots: list[ScheduledBot] = []
    while len(bots) < limit:
        wanted = limit - len(bots)
        chunk = list(itertools.islice(entries, max(wanted, 25) if statuses else wanted))
        if not chunk:
            break
        records = base._full_items(chunk, consistent=consistent)
        bots += [b for b in map(_bot, records) if not statuses or b.status in statuses]
    return bots[:limit]


def account_bots(user_id: str, provider: str, account_id: str) -> Iterator[ScheduledBot]:
    """Every bot of one account (any status, any time), page by page, filtered server side."""
    for item in base._query_records(
        IndexName="GSI1",
        KeyConditionExpression="GSI1PK = :pk",
        FilterExpression="provider = :prov AND account_id = :acct",
        ExpressionAttributeValues=to_item(
            {":pk": f"USER#{user_id}#BOTS", ":prov": provider, ":acct": account_id}
        ),
    ):
        yield _bot(item)


def bots_between(
    user_id: str, start: datetime, end: datetime, *, consistent: bool = True
) -> list[ScheduledBot]:
    """The user's bots joining between `start` and `end` (records read consistently unless told: a
    listing may read them at half the units, `base._full_items`)."""
    items = base._query_records(
        IndexName="GSI1",
        KeyConditionExpression="GSI1PK = :pk AND GSI1SK BETWEEN :lo AND :hi",
        ExpressionAttributeValues=to_item(
            {":pk": f"USER#{user_id}#BOTS", ":lo": iso_z(start), ":hi": iso_z(end) + "~"}
        ),
        consistent=consistent,
    )
    return [_bot(i) for i in items]


def bots_of_series(user_id: str, series_key: str) -> list[ScheduledBot]:
    """Every bot of one series (or of one single event), by occurrence start.

    A bot id starts with its series' prefix (calbot.ids.bot_id), so they are one range of the user's
    partition, read whole (a bot is a fraction of a read unit there, where an index entry would be a
    write unit on every bot write). Another series may share the prefix: the filter keeps this one's."""
    items = base._query(
        KeyConditionExpression="PK = :pk AND begins_with(SK, :sk)",
        FilterExpression="series_key = :series",
        ExpressionAttributeValues=to_item(
            {
                ":pk": user_pk(user_id),
                ":sk": f"BOT#{ids.series_prefix(user_id, series_key)}",
                ":series": series_key,
            }
        ),
        ConsistentRead=True,
    )
    bots = [_bot(i) for i in items]
    return sorted(bots, key=lambda b: (b.occurrence_start, b.bot_id))
