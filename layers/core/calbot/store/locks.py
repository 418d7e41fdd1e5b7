"""Short-lived named mutexes (LOCK#<name> / LOCK) with a TTL."""

from __future__ import annotations

from typing import Protocol

from botocore.exceptions import ClientError

from calbot.store.base import _is_conditional_failure, _write, _write_if, to_item
from calbot.timeutil import now


class Locks(Protocol):
    """Named mutexes with a TTL. This module is the real one."""

    def acquire_lock(self, name: str, *, ttl_seconds: int = ...) -> str: ...

    def release_lock(self, name: str, token: str) -> None: ...

    def break_lock(self, name: str) -> None: ...


class LockBusy(Exception):
    pass


def acquire_lock(name: str, *, ttl_seconds: int = 60) -> str:
    """Take a named mutex; raise LockBusy while someone else holds an unexpired one. Returns a token."""
    import uuid  # locks are taken on write paths only

    token = uuid.uuid4().hex
    now_epoch = int(now().timestamp())
    try:
        _write(
            "put_item",
            Item=to_item(
                {
                    "PK": f"LOCK#{name}",
                    "SK": "LOCK",
                    "kind": "lock",
                    "owner": token,
                    "expires_epoch": now_epoch + ttl_seconds,
                    "ttl": now_epoch + ttl_seconds + 3600,
                }
            ),
            ConditionExpression="attribute_not_exists(PK) OR expires_epoch < :now",
            ExpressionAttributeValues=to_item({":now": now_epoch}),
        )
    except ClientError as err:
        if _is_conditional_failure(err):
            raise LockBusy(name) from err
        raise
    return token


def release_lock(name: str, token: str) -> None:
    # The condition fails when the lock expired and was taken over: nothing of ours to release.
    _write_if(
        "delete_item",
        Key=to_item({"PK": f"LOCK#{name}", "SK": "LOCK"}),
        ConditionExpression="#o = :token",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues=to_item({":token": token}),
    )


def break_lock(name: str) -> None:
    """Remove a lock whoever holds it (its holder is done with it, or its work is void)."""
    _write("delete_item", Key=to_item({"PK": f"LOCK#{name}", "SK": "LOCK"}))
