"""Long-lived OAuth secrets, one record per (user, provider, account), in one of two backends.

What is stored is only what lives long: the refresh token and the client secret, with the non-secret
fields a refresh needs (client id, tenant, scopes). Access tokens never come here: they live an hour
and are cached by calbot.tokencache (in memory and an encrypted DynamoDB item), so a sync reads this
store only when it must refresh.

Backends (`CREDENTIAL_BACKEND`, template parameter `CredentialBackend`):
- `ssm` (default): a SecureString parameter per account at `credential_path`, PutParameter with Tier
  `Intelligent-Tiering` (Standard while the value fits 4 KB, Advanced (8 KB) only if it must; a
  realistic Microsoft value is ~2-3 KB: bench/credentials.py). SSM's ceilings are 10,000 Standard /
  100,000 Advanced parameters per account and region and one low throughput quota shared by
  GetParameter and PutParameter (README, "Credentials: ceilings and when to switch backend").
- `dynamodb`: a `CRED#` item in the user's partition (store/secrets.py), KMS-envelope-encrypted
  (calbot.envelope) with a context naming the item and its user.

A value stored before this scheme may still hold an access token (and the old `access_token_apart`
flag of the `<path>.access` parameter): it is read with the token ignored, and the next write leaves
it out. Disconnect still deletes a legacy `<path>.access` parameter of the `ssm` backend.
"""

from __future__ import annotations

import hashlib
import json
import re

from botocore.exceptions import ClientError

from calbot import aws, envelope, store, tokencache
from calbot.config import get_settings
from calbot.models import Credentials, account_key
from calbot.store.secrets import CREDENTIALS

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
# Fields of the stored value; anything else in an old value (an access token, its expiry, the
# `access_token_apart` flag) is dropped on read and never written again.
LONG_LIVED = (
    "provider",
    "client_id",
    "client_secret",
    "refresh_token",
    "refresh_token_issued_at",
    "tenant",
    "scopes",
)
LEGACY_ACCESS_SUFFIX = ".access"  # the old second parameter; only ever deleted now
TIER = "Intelligent-Tiering"
_DESCRIPTION = "calbot OAuth credentials (refresh token, client secret) for one calendar account"


def credential_path(user_id: str, provider: str, account_id: str) -> str:
    """`/calbot/<stage>/users/<user>/<provider>/<readable-account>-<hash>`.

    SSM names allow only `a-zA-Z0-9_.-/`, so the email is made readable-safe and a hash of the exact
    (lower-cased) account id keeps two accounts that flatten alike apart. The `dynamodb` backend keys
    its item by the same path (user, then `<provider>/<account>`).
    """
    key = account_key(account_id)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    readable = _UNSAFE.sub("_", key)[:80]
    return f"{get_settings().ssm_prefix}/users/{_UNSAFE.sub('_', user_id)}/{provider}/{readable}-{digest}"


def stored_value(creds: Credentials) -> str:
    """The JSON the backend keeps for these credentials: the long-lived fields only."""
    return creds.model_dump_json(include=set(LONG_LIVED))


def _backend() -> str:
    return get_settings().credential_backend


# -- SSM -------------------------------------------------------------------------------------------


def _ssm_put(path: str, value: str) -> None:
    aws.ssm().put_parameter(
        Name=path, Value=value, Type="SecureString", Overwrite=True, Tier=TIER, Description=_DESCRIPTION
    )


def _ssm_get(path: str) -> str | None:
    try:
        resp = aws.ssm().get_parameter(Name=path, WithDecryption=True)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return None
        raise
    return str(resp["Parameter"]["Value"])


def _ssm_delete(name: str) -> bool:
    try:
        aws.ssm().delete_parameter(Name=name)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return False
        raise
    return True


# -- DynamoDB + KMS --------------------------------------------------------------------------------


def _item(path: str) -> tuple[str, str, dict[str, str]]:
    user, rest = tokencache.owner_and_rest(path)
    sk = CREDENTIALS + rest
    return user, sk, tokencache.context(user, sk)


def _ddb_put(path: str, value: str) -> None:
    user, sk, ctx = _item(path)
    store.put_secret(user, sk, envelope.encrypt(value.encode(), ctx))


def _ddb_get(path: str) -> str | None:
    user, sk, ctx = _item(path)
    blob = store.get_secret(user, sk)
    return None if blob is None else envelope.decrypt(blob, ctx).decode()


def _ddb_delete(path: str) -> bool:
    user, sk, _ = _item(path)
    return store.delete_secret(user, sk)


# -- the interface ---------------------------------------------------------------------------------


def put_secrets(path: str, creds: Credentials) -> None:
    """Store the long-lived fields (never an access token)."""
    value = stored_value(creds)
    if _backend() == "dynamodb":
        _ddb_put(path, value)
    else:
        _ssm_put(path, value)


def secrets(path: str) -> Credentials | None:
    """The long-lived fields from the backend (one GetParameter, or one GetItem and a KMS Decrypt
    unless the data key is cached); a legacy access token in the value is ignored."""
    value = _ddb_get(path) if _backend() == "dynamodb" else _ssm_get(path)
    if value is None:
        return None
    data = json.loads(value)
    return Credentials.model_validate({k: v for k, v in data.items() if k in LONG_LIVED})


def put(path: str, creds: Credentials) -> None:
    """The long-lived fields to the backend, the access token (if any) to the token cache."""
    put_secrets(path, creds)
    if creds.access_token:
        tokencache.put(path, creds.access_token, creds.access_token_expires_at)


def get(path: str) -> Credentials | None:
    """The stored credentials with the cached access token, if any (tests and tools; the token path of
    a sync is calbot.tokens, which reads the backend only to refresh)."""
    creds = secrets(path)
    if creds is None:
        return None
    cached = tokencache.remembered(path) or tokencache.shared(path)
    if cached is None:
        return creds
    return creds.model_copy(
        update={"access_token": cached.access_token, "access_token_expires_at": cached.expires_at}
    )


def delete(path: str) -> bool:
    """The stored credentials and the cached access token; True when the credentials existed."""
    tokencache.forget(path)
    if _backend() == "dynamodb":
        return _ddb_delete(path)
    _ssm_delete(path + LEGACY_ACCESS_SUFFIX)  # a parameter left by the old two-parameter scheme
    return _ssm_delete(path)
