"""Auto-schedule settings (USER#<u> / SETTINGS#AUTO; GSI3, sparse and sharded while enabled:
AUTOSCHED#<shard> / <user id>, so the midnight job never scans)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

from calbot.models import AutoScheduleSettings, LastRun
from calbot.store.base import _get, _query, _strip_keys, _write, _write_if, to_item, user_pk
from calbot.timeutil import iso_z

AUTO_SHARDS = 16


class AutoSettingsRecords(Protocol):
    """Auto-schedule settings, as the auto-schedule service reads them and records its runs (the
    enable / disable field update is left out). This module is the real one."""

    def get_auto_settings(self, user_id: str) -> AutoScheduleSettings | None: ...

    def record_auto_run(self, user_id: str, at: datetime, run: LastRun) -> None: ...

    def enabled_auto_users(self) -> Iterator[str]: ...


def _auto_shard(user_id: str) -> int:
    return int(hashlib.sha256(user_id.encode()).hexdigest(), 16) % AUTO_SHARDS


def put_auto_settings(settings: AutoScheduleSettings) -> None:
    item: dict[str, Any] = {
        "PK": user_pk(settings.user_id),
        "SK": "SETTINGS#AUTO",
        "kind": "auto_settings",
        **settings.model_dump(mode="json"),
    }
    if settings.enabled:  # sparse: only enabled users are in the index the midnight job reads
        item |= {"GSI3PK": f"AUTOSCHED#{_auto_shard(settings.user_id)}", "GSI3SK": settings.user_id}
    _write("put_item", Item=to_item(item))


def update_auto_settings(
    user_id: str,
    *,
    enabled: bool,
    updated_at: datetime,
    default_bot_config: dict[str, Any] | None = None,
    join_offset_seconds: int | None = None,
    rules: dict[str, Any] | None = None,
    create: bool = True,
) -> bool:
    """Change only the fields a user's enable / disable sets (one UpdateItem): a concurrent write of other
    fields (a run's last_run) is never undone, and neither is this one by it. The sparse index entry
    follows `enabled`. With create=False nothing is written for a user without settings (False)."""
    sets = {"#kind": "kind", "#user": "user_id", "#enabled": "enabled", "#updated": "updated_at"}
    values: dict[str, Any] = {
        ":kind": "auto_settings",
        ":user": user_id,
        ":enabled": enabled,
        ":updated": iso_z(updated_at),
    }
    if default_bot_config is not None:
        sets["#config"] = "default_bot_config"
        values[":config"] = default_bot_config
    if join_offset_seconds is not None:
        sets["#offset"] = "join_offset_seconds"
        values[":offset"] = join_offset_seconds
    if rules is not None:
        sets["#rules"] = "rules"
        values[":rules"] = rules
    expression = "SET " + ", ".join(f"{name} = :{name[1:]}" for name in sets)
    names = dict(sets)
    if enabled:  # sparse: only enabled users are in the index the midnight job reads
        expression += ", GSI3PK = :gsi3pk, GSI3SK = :user"
        values[":gsi3pk"] = f"AUTOSCHED#{_auto_shard(user_id)}"
    else:
        expression += " REMOVE GSI3PK, GSI3SK"
    kwargs: dict[str, Any] = {}
    if not create:
        kwargs["ConditionExpression"] = "attribute_exists(PK)"
    return _write_if(
        "update_item",
        Key=to_item({"PK": user_pk(user_id), "SK": "SETTINGS#AUTO"}),
        UpdateExpression=expression,
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=to_item(values),
        **kwargs,
    )


def set_auto_rules(user_id: str, rules: dict[str, Any], updated_at: datetime) -> None:
    """The rules alone (one UpdateItem): `enabled`, its index entry and a run's last_run stay as they
    are; a user without settings gets them, with auto-scheduling off."""
    _write_if(
        "update_item",
        Key=to_item({"PK": user_pk(user_id), "SK": "SETTINGS#AUTO"}),
        UpdateExpression="SET #kind = :kind, #user = :user, #rules = :rules, #updated = :updated",
        ExpressionAttributeNames={
            "#kind": "kind",
            "#user": "user_id",
            "#rules": "rules",
            "#updated": "updated_at",
        },
        ExpressionAttributeValues=to_item(
            {":kind": "auto_settings", ":user": user_id, ":rules": rules, ":updated": iso_z(updated_at)}
        ),
    )


def record_auto_run(user_id: str, at: datetime, run: LastRun) -> None:
    """A run's outcome, and nothing else: the user's settings as they are now stay as they are (a run
    never recreates settings that were deleted meanwhile either)."""
    _write_if(
        "update_item",
        Key=to_item({"PK": user_pk(user_id), "SK": "SETTINGS#AUTO"}),
        UpdateExpression="SET last_run_at = :at, last_run = :run",
        ConditionExpression="attribute_exists(PK)",
        ExpressionAttributeValues=to_item({":at": iso_z(at), ":run": run.model_dump(mode="json")}),
    )


def get_auto_settings(user_id: str) -> AutoScheduleSettings | None:
    data = _get(user_pk(user_id), "SETTINGS#AUTO")
    return AutoScheduleSettings.model_validate(_strip_keys(data)) if data else None


def enabled_auto_users() -> Iterator[str]:
    """Every user with auto-scheduling on, from the sparse sharded index (never a table scan)."""
    for shard in range(AUTO_SHARDS):
        for item in _query(
            IndexName="GSI3",
            KeyConditionExpression="GSI3PK = :pk",
            ExpressionAttributeValues=to_item({":pk": f"AUTOSCHED#{shard}"}),
            ProjectionExpression="GSI3SK",
        ):
            yield item["GSI3SK"]
