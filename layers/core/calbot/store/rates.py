"""Per-API-key request counters (RATE#<key_id> / WINDOW#<window start epoch>), for calbot.ratelimit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from botocore.exceptions import ClientError

from calbot.store.base import _is_conditional_failure, _write, from_item, to_item


@dataclass(frozen=True)
class RateCount:
    counted: bool  # False: a limit was already reached and nothing was added
    window_count: int  # the window's count after this request (when counted) or as it stood
    second_count: int  # the same for this second of the window


class RequestCounter(Protocol):
    """The per-key request counter calbot.ratelimit uses. This module is the real one."""

    def count_request(
        self,
        key_id: str,
        window_start: int,
        second: int,
        *,
        window_limit: int,
        second_limit: int,
        ttl_epoch: int,
    ) -> RateCount: ...


def count_request(
    key_id: str, window_start: int, second: int, *, window_limit: int, second_limit: int, ttl_epoch: int
) -> RateCount:
    """Count one request of an API key in a fixed window and one of its seconds, unless either counter
    is already at its limit: one conditional UpdateItem, atomic under any concurrency. The item stays
    far below 1 KB (a few attributes and at most one small counter per second), so this costs one
    write unit whether it counts or refuses (a failed condition is billed like a write)."""
    second_attr = f"s{second:02d}"
    try:
        resp = _write(
            "update_item",
            Key=to_item({"PK": f"RATE#{key_id}", "SK": f"WINDOW#{window_start}"}),
            UpdateExpression="SET #kind = :kind, #ttl = :ttl ADD #n :one, #s :one",
            ConditionExpression=(
                "(attribute_not_exists(#n) OR #n < :wl) AND (attribute_not_exists(#s) OR #s < :sl)"
            ),
            ExpressionAttributeNames={"#kind": "kind", "#ttl": "ttl", "#n": "n", "#s": second_attr},
            ExpressionAttributeValues=to_item(
                {":kind": "ratelimit", ":ttl": ttl_epoch, ":one": 1, ":wl": window_limit, ":sl": second_limit}
            ),
            ReturnValues="UPDATED_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as err:
        if not _is_conditional_failure(err):
            raise
        old = from_item(err.response.get("Item") or {})
        return RateCount(False, int(old.get("n", 0)), int(old.get(second_attr, 0)))
    new = from_item(resp.get("Attributes") or {})
    return RateCount(True, int(new.get("n", 0)), int(new.get(second_attr, 0)))
