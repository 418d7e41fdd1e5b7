"""Users (USER#<u> / PROFILE) and API keys (APIKEY#<sha256(key)> / APIKEY;
GSI1: USER#<u>#APIKEYS / key_id)."""

from __future__ import annotations

import hashlib
from typing import Protocol

from calbot.models import ApiKeyRecord, User
from calbot.store.base import _get, _query_records, _strip_keys, _write, _write_if, to_item, user_pk


class UserRecords(Protocol):
    """Users and their API keys, as services and the authorizer use them. This module is the real one."""

    def put_user(self, user: User) -> None: ...

    def get_user(self, user_id: str) -> User | None: ...

    def put_api_key(self, record: ApiKeyRecord) -> None: ...

    def get_api_key(self, key_hash: str) -> ApiKeyRecord | None: ...

    def list_api_keys(self, user_id: str) -> list[ApiKeyRecord]: ...

    def delete_api_key(self, key_hash: str) -> bool: ...


def put_user(user: User) -> None:
    data = user.model_dump(mode="json")
    _write(
        "put_item",
        Item=to_item({"PK": user_pk(user.user_id), "SK": "PROFILE", "kind": "user", **data}),
        ConditionExpression="attribute_not_exists(PK)",
    )


def get_user(user_id: str) -> User | None:
    data = _get(user_pk(user_id), "PROFILE")
    return User.model_validate(_strip_keys(data)) if data else None


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def put_api_key(record: ApiKeyRecord) -> None:
    _write(
        "put_item",
        Item=to_item(
            {
                "PK": f"APIKEY#{record.key_hash}",
                "SK": "APIKEY",
                "kind": "apikey",
                "GSI1PK": f"USER#{record.user_id}#APIKEYS",
                "GSI1SK": record.key_id,
                **record.model_dump(mode="json"),
            }
        ),
        ConditionExpression="attribute_not_exists(PK)",
    )


def get_api_key(key_hash: str) -> ApiKeyRecord | None:
    # Eventually consistent is fine: a key is readable long before anyone uses it, and revocation
    # removes the item.
    data = _get(f"APIKEY#{key_hash}", "APIKEY", consistent=False)
    return ApiKeyRecord.model_validate(_strip_keys(data)) if data else None


def list_api_keys(user_id: str) -> list[ApiKeyRecord]:
    items = _query_records(
        IndexName="GSI1",
        KeyConditionExpression="GSI1PK = :pk",
        ExpressionAttributeValues=to_item({":pk": f"USER#{user_id}#APIKEYS"}),
    )
    return [ApiKeyRecord.model_validate(_strip_keys(i)) for i in items]


def delete_api_key(key_hash: str) -> bool:
    return _write_if(
        "delete_item",
        Key=to_item({"PK": f"APIKEY#{key_hash}", "SK": "APIKEY"}),
        ConditionExpression="attribute_exists(PK)",
    )
