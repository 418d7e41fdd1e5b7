"""Sync state of one calendar (USER#<u> / SYNC#<provider>#<account>#<calendar>): its delta link or sync
token, its window, and the version that orders concurrent syncs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from botocore.exceptions import ClientError

from calbot.models import SyncState, account_key
from calbot.store.base import (
    _get,
    _is_conditional_failure,
    _query,
    _strip_keys,
    _write,
    batch_write,
    to_item,
    user_pk,
)
from calbot.timeutil import iso_z, parse_iso


class SyncStates(Protocol):
    """One calendar's sync state, as the sync service uses it. This module is the real one."""

    def get_sync_state(
        self, user_id: str, provider: str, account_id: str, calendar_id: str
    ) -> SyncState | None: ...

    def claim_sync(self, state: SyncState, *, expected: int) -> int: ...

    def commit_sync_state(self, state: SyncState, *, expected: int) -> None: ...

    def delete_sync_states(self, user_id: str, provider: str, account_id: str) -> int: ...


def delete_sync_states(user_id: str, provider: str, account_id: str) -> int:
    """Forget an account's delta links / sync tokens (a reconnected account starts with a full sync)."""
    keys = [
        (i["PK"], i["SK"])
        for i in _query(
            KeyConditionExpression="PK = :pk AND begins_with(SK, :sk)",
            ProjectionExpression="PK, SK",
            ExpressionAttributeValues=to_item(
                {":pk": user_pk(user_id), ":sk": f"SYNC#{provider}#{account_key(account_id)}#"}
            ),
        )
    ]
    return batch_write(deletes=keys)


def last_synced(
    user_id: str, provider: str | None = None, account_id: str | None = None
) -> dict[tuple[str, str], datetime]:
    """When each of the user's accounts (or the one named) last synced something, by (provider, account
    key): the latest `updated_at` of its calendars' sync states, which every sync that writes events,
    runs in full or refreshes its cursor commits. What a connection shows as `last_synced_at`: read
    here (one query of the user's SYNC# range), not stamped on the connection by every sync, whose
    item holds its calendars and subscriptions (2 write units and more a sync)."""
    prefix = "SYNC#" if provider is None else f"SYNC#{provider}#{account_key(account_id or '')}#"
    latest: dict[tuple[str, str], datetime] = {}
    for item in _query(
        KeyConditionExpression="PK = :pk AND begins_with(SK, :sk)",
        ProjectionExpression="#p, #a, #u",
        ExpressionAttributeNames={"#p": "provider", "#a": "account_id", "#u": "updated_at"},
        ExpressionAttributeValues=to_item({":pk": user_pk(user_id), ":sk": prefix}),
    ):
        if not item.get("updated_at") or not item.get("provider"):
            continue  # claimed, never committed
        key = (str(item["provider"]), account_key(str(item.get("account_id", ""))))
        at = parse_iso(str(item["updated_at"]))
        if key not in latest or at > latest[key]:
            latest[key] = at
    return latest


def _sync_sk(provider: str, account_id: str, calendar_id: str) -> str:
    return f"SYNC#{provider}#{account_key(account_id)}#{calendar_id}"


class SyncConflict(Exception):
    """Another sync of the same calendar claimed the sync state since this one read it."""


def get_sync_state(user_id: str, provider: str, account_id: str, calendar_id: str) -> SyncState | None:
    data = _get(user_pk(user_id), _sync_sk(provider, account_id, calendar_id))
    return SyncState.model_validate(_strip_keys(data)) if data else None


def put_sync_state(state: SyncState) -> None:
    _write(
        "put_item",
        Item=to_item(
            {
                "PK": user_pk(state.user_id),
                "SK": _sync_sk(state.provider, state.account_id, state.calendar_id),
                "kind": "sync_state",
                **state.model_dump(mode="json"),
            }
        ),
    )


def _version_condition(expected: int) -> str:
    # A state written before versions existed counts as version 0.
    return "attribute_not_exists(#v)" if expected == 0 else "#v = :expected"


def _update_sync_state(
    state: SyncState, *, expected: int, sets: str, names: dict[str, str], values: dict[str, Any]
) -> None:
    """SET `sets` (plus the state's identity fields) on one calendar's sync state while it is still at
    version `expected`; SyncConflict otherwise."""
    values = {**values, ":kind": "sync_state"}
    for field in ("user_id", "provider", "account_id", "calendar_id"):
        values[f":{field}"] = getattr(state, field)
    if expected:
        values[":expected"] = expected
    try:
        _write(
            "update_item",
            Key=to_item(
                {
                    "PK": user_pk(state.user_id),
                    "SK": _sync_sk(state.provider, state.account_id, state.calendar_id),
                }
            ),
            UpdateExpression=(
                f"SET {sets}, kind = :kind, user_id = :user_id, provider = :provider, "
                "account_id = :account_id, calendar_id = :calendar_id"
            ),
            ConditionExpression=_version_condition(expected),
            ExpressionAttributeNames={"#v": "version", **names},
            ExpressionAttributeValues=to_item(values),
        )
    except ClientError as err:
        if _is_conditional_failure(err):
            raise SyncConflict(state.calendar_id) from err
        raise


def claim_sync(state: SyncState, *, expected: int) -> int:
    """Take the next sync version of one calendar's sync state, if it is still at `expected` (the
    version this sync read before it called the provider). Raises SyncConflict otherwise. Returns the
    new version: the events this sync writes carry it, and only it may then commit the cursor.

    Versions are taken after the provider answered, so a higher version always saw the provider later
    than a lower one: the order of versions is the order of what the syncs saw."""
    new = expected + 1
    _update_sync_state(state, expected=expected, sets="#v = :new", names={}, values={":new": new})
    return new


def commit_sync_state(state: SyncState, *, expected: int) -> None:
    """Store the cursor (and its window) only while the state is still at version `expected`: a sync
    that claimed `expected` itself, or, with no events to write, the version it read (then this write
    takes the next version). A sync overtaken by a later claim never moves the cursor: that later sync,
    which saw the provider after it, commits its own. Raises SyncConflict."""
    _update_sync_state(
        state,
        expected=expected,
        sets="#c = :cursor, window_start = :ws, window_end = :we, updated_at = :at, #v = :version",
        names={"#c": "cursor"},
        values={
            ":cursor": state.cursor,
            ":ws": iso_z(state.window_start) if state.window_start else None,
            ":we": iso_z(state.window_end) if state.window_end else None,
            ":at": iso_z(state.updated_at) if state.updated_at else None,
            ":version": state.version,
        },
    )
