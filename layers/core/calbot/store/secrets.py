"""Encrypted secret items of one user's calendar account (calbot.vault, calbot.tokencache).

  USER#<u> / CRED#<provider>/<account>    long-lived OAuth secrets (the `dynamodb` credential backend)
  USER#<u> / TOKEN#<provider>/<account>   the shared access-token cache (either backend); TTL `ttl`

`blob` is an Encryption SDK message (calbot.envelope) whose encryption context names this item and its
user: a blob copied under another key or user does not decrypt. The items live in the user's own
partition, carry no index keys (no GSI writes) and nothing in clear but the key and `ttl`. Reading them
needs kms:Decrypt on the credential key, which only the functions that use credentials hold.
"""

from __future__ import annotations

from typing import Protocol

from calbot.store.base import _get, _write, to_item, user_pk

CREDENTIALS = "CRED#"
ACCESS_TOKEN = "TOKEN#"


class SecretItems(Protocol):
    def put_secret(self, user_id: str, sk: str, blob: bytes, *, ttl_epoch: int | None = None) -> None: ...

    def get_secret(self, user_id: str, sk: str) -> bytes | None: ...

    def delete_secret(self, user_id: str, sk: str) -> bool: ...


def put_secret(user_id: str, sk: str, blob: bytes, *, ttl_epoch: int | None = None) -> None:
    item: dict[str, object] = {"PK": user_pk(user_id), "SK": sk, "kind": "secret", "blob": blob}
    if ttl_epoch is not None:
        item["ttl"] = ttl_epoch
    _write("put_item", Item=to_item(item))


def get_secret(user_id: str, sk: str) -> bytes | None:
    item = _get(user_pk(user_id), sk)
    if item is None or "blob" not in item:
        return None
    blob = item["blob"]
    return bytes(blob.value if hasattr(blob, "value") else blob)


def delete_secret(user_id: str, sk: str) -> bool:
    """True when the item existed."""
    resp = _write("delete_item", Key=to_item({"PK": user_pk(user_id), "SK": sk}), ReturnValues="ALL_OLD")
    return bool(resp.get("Attributes"))
