"""Scheduled bot records (USER#<u> / BOT#<bot id>) and their dedup guards (DEDUP#<u>#<dedup key> / DEDUP).

This module only stores: it writes what calbot.services.bots decides, with the conditions that make
each decision atomic. The lifecycle, the dedup key and the rules those conditions enforce are
explained there."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from calbot.models import (
    ScheduledBot,
)
from calbot.store.base import (
    _get,
    _query,
    _strip_keys,
    _table,
    to_item,
    transact_write,
    user_pk,
)
from calbot.timeutil import iso_z


class AlreadyScheduled(Exception):
    def __init__(self, bot_id: str | None = None) -> None:
        super().__init__(bot_id)
        self.bot_id = bot_id


class BotChanged(Exception):
    """The bot was not in the state the write expected (launched, cancelled, or claimed meanwhile)."""


def _bot_item(bot: ScheduledBot) -> dict[str, Any]:
    return {
        "PK": user_pk(bot.user_id),
        "SK": f"BOT#{bot.bot_id}",
        "kind": "bot",
        "GSI1PK": f"USER#{bot.user_id}#BOTS",
        "GSI1SK": f"{iso_z(bot.scheduled_join_time)}#{bot.bot_id}",
        "GSI2PK": f"SERIESBOTS#{bot.user_id}#{bot.series_key}",
        "GSI2SK": f"{iso_z(bot.occurrence_start)}#{bot.bot_id}",
        **bot.model_dump(mode="json"),
    }


def _bot(data: dict[str, Any]) -> ScheduledBot:
    return ScheduledBot.model_validate(_strip_keys(data))


def _guard_key(user_id: str, dedup_key: str) -> dict[str, Any]:
    return {"PK": f"DEDUP#{user_id}#{dedup_key}", "SK": "DEDUP"}


def dedup_owner(user_id: str, dedup_key: str) -> str | None:
    """The bot holding the dedup guard of this occurrence of this meeting, if one does."""
    guard = _get(**{k.lower(): v for k, v in _guard_key(user_id, dedup_key).items()})
    return str(guard.get("bot_id") or "") or None if guard else None


def create_bot(bot: ScheduledBot) -> None:
    """Write the bot and its dedup guard in one transaction: two bots for one occurrence of one meeting
    are impossible, whatever races (double clicks, retries, the midnight job, two calendars)."""
    guard = {
        **_guard_key(bot.user_id, bot.dedup_key),
        "kind": "dedup",
        "bot_id": bot.bot_id,
        "event_id": bot.event_id,
    }
    try:
        transact_write(
            [
                {
                    "Put": {
                        "TableName": _table(),
                        "Item": to_item(guard),
                        "ConditionExpression": "attribute_not_exists(PK)",
                    }
                },
                {
                    "Put": {
                        "TableName": _table(),
                        "Item": to_item(_bot_item(bot)),
                        "ConditionExpression": "attribute_not_exists(PK)",
                    }
                },
            ],
            on_condition=[AlreadyScheduled, AlreadyScheduled],
        )
    except AlreadyScheduled:
        existing = _get(**{k.lower(): v for k, v in _guard_key(bot.user_id, bot.dedup_key).items()})
        raise AlreadyScheduled(existing.get("bot_id") if existing else None) from None


def delete_bot(bot: ScheduledBot) -> None:
    """Undo create_bot (its schedule could not be made)."""
    transact_write(
        [
            {
                "Delete": {
                    "TableName": _table(),
                    "Key": to_item(_guard_key(bot.user_id, bot.dedup_key)),
                    "ConditionExpression": "bot_id = :b",
                    "ExpressionAttributeValues": to_item({":b": bot.bot_id}),
                }
            },
            {
                "Delete": {
                    "TableName": _table(),
                    "Key": to_item({"PK": user_pk(bot.user_id), "SK": f"BOT#{bot.bot_id}"}),
                }
            },
        ],
        on_condition=[],
    )


def get_bot(user_id: str, bot_id: str) -> ScheduledBot | None:
    data = _get(user_pk(user_id), f"BOT#{bot_id}")
    return _bot(data) if data else None


def save_bot(
    bot: ScheduledBot,
    *,
    expect_status: str | tuple[str, ...],
    expect_claim: str | None = None,
    release_guard: bool = False,
) -> None:
    """Write a changed bot only if it is still in `expect_status` (and held by `expect_claim`).

    With release_guard the dedup guard goes in the same transaction, so a cancelled or failed
    occurrence can be scheduled again and a live one never loses its guard.
    """
    statuses = (expect_status,) if isinstance(expect_status, str) else expect_status
    names = {"#s": "status"}
    values: dict[str, Any] = {f":s{i}": st for i, st in enumerate(statuses)}
    cond = "(" + " OR ".join(f"#s = :s{i}" for i in range(len(statuses))) + ")"
    if expect_claim is not None:
        cond += " AND launch_claim = :claim"
        values[":claim"] = expect_claim
    items = [
        {
            "Put": {
                "TableName": _table(),
                "Item": to_item(_bot_item(bot)),
                "ConditionExpression": cond,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": to_item(values),
            }
        }
    ]
    if release_guard:
        items.append(
            {
                "Delete": {
                    "TableName": _table(),
                    "Key": to_item(_guard_key(bot.user_id, bot.dedup_key)),
                    "ConditionExpression": "attribute_not_exists(PK) OR bot_id = :b",
                    "ExpressionAttributeValues": to_item({":b": bot.bot_id}),
                }
            }
        )
    transact_write(items, on_condition=[BotChanged, BotChanged])


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
) -> list[ScheduledBot]:
    """One direction of the user's bots by join time (GSI1), filtered server side: ascending from
    `bound` (GSI1SK >= bound), or descending from just below it (GSI1SK < bound)."""
    values: dict[str, Any] = {":pk": f"USER#{user_id}#BOTS", ":b": bound}
    filters, names = [], {}
    if statuses:
        names["#s"] = "status"
        filters.append("#s IN (" + ", ".join(f":s{i}" for i in range(len(statuses))) + ")")
        values.update({f":s{i}": st for i, st in enumerate(statuses)})
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
    if names:
        kwargs["ExpressionAttributeNames"] = names
    out: list[ScheduledBot] = []
    if limit <= 0:
        return out
    for item in _query(**kwargs):
        out.append(_bot(item))
        if len(out) >= limit:
            break
    return out


def account_bots(user_id: str, provider: str, account_id: str) -> Iterator[ScheduledBot]:
    """Every bot of one account (any status, any time), page by page, filtered server side."""
    for item in _query(
        IndexName="GSI1",
        KeyConditionExpression="GSI1PK = :pk",
        FilterExpression="provider = :prov AND account_id = :acct",
        ExpressionAttributeValues=to_item(
            {":pk": f"USER#{user_id}#BOTS", ":prov": provider, ":acct": account_id}
        ),
    ):
        yield _bot(item)


def bots_between(user_id: str, start: datetime, end: datetime) -> list[ScheduledBot]:
    items = _query(
        IndexName="GSI1",
        KeyConditionExpression="GSI1PK = :pk AND GSI1SK BETWEEN :lo AND :hi",
        ExpressionAttributeValues=to_item(
            {":pk": f"USER#{user_id}#BOTS", ":lo": iso_z(start), ":hi": iso_z(end) + "~"}
        ),
    )
    return [_bot(i) for i in items]


def bots_of_series(user_id: str, series_key: str) -> list[ScheduledBot]:
    """Every bot of one series (or of one single event), by occurrence start."""
    items = _query(
        IndexName="GSI2",
        KeyConditionExpression="GSI2PK = :pk",
        ExpressionAttributeValues=to_item({":pk": f"SERIESBOTS#{user_id}#{series_key}"}),
    )
    return [_bot(i) for i in items]


def move_bot(bot: ScheduledBot, old_dedup_key: str) -> None:
    """Save a Scheduled bot whose meeting moved (new start or link): its dedup guard moves with it in the
    same transaction. Raises AlreadyScheduled when another live bot already holds the new slot, and
    BotChanged when the bot left Scheduled meanwhile."""
    if bot.dedup_key == old_dedup_key:
        save_bot(bot, expect_status="Scheduled")
        return
    guard = {
        **_guard_key(bot.user_id, bot.dedup_key),
        "kind": "dedup",
        "bot_id": bot.bot_id,
        "event_id": bot.event_id,
    }
    transact_write(
        [
            {
                "Put": {
                    "TableName": _table(),
                    "Item": to_item(_bot_item(bot)),
                    "ConditionExpression": "#s = :s",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": to_item({":s": "Scheduled"}),
                }
            },
            {
                "Put": {
                    "TableName": _table(),
                    "Item": to_item(guard),
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            },
            {
                "Delete": {
                    "TableName": _table(),
                    "Key": to_item(_guard_key(bot.user_id, old_dedup_key)),
                    "ConditionExpression": "attribute_not_exists(PK) OR bot_id = :b",
                    "ExpressionAttributeValues": to_item({":b": bot.bot_id}),
                }
            },
        ],
        on_condition=[BotChanged, AlreadyScheduled, BotChanged],
    )
