"""OAuth credentials as SSM SecureStrings, one parameter per (user, provider, account).

The per-account path isolates accounts from each other (IAM can scope to a prefix), and nothing else in
the system ever holds a refresh token or client secret. Values are JSON of `Credentials` (without the
access token, which is cached in a second parameter: see MAX_VALUE_BYTES).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

from calbot import aws
from calbot.config import get_settings
from calbot.log import logger
from calbot.models import Credentials, UtcDateTime, account_key

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def credential_path(user_id: str, provider: str, account_id: str) -> str:
    """`/calbot/<stage>/users/<user>/<provider>/<readable-account>-<hash>`.

    SSM names allow only `a-zA-Z0-9_.-/`, so the email is made readable-safe and a hash of the exact
    (lower-cased) account id keeps two accounts that flatten alike apart.
    """
    key = account_key(account_id)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    readable = _UNSAFE.sub("_", key)[:80]
    return f"{get_settings().ssm_prefix}/users/{_UNSAFE.sub('_', user_id)}/{provider}/{readable}-{digest}"


# SSM Standard tier: values up to 4 KB (4,096 bytes) each, and 10,000 parameters per account and region.
# Real tokens (PROTOCOLS) do not always fit one value: a Microsoft access token (1.5-2.5 KB, more for
# users in many groups) beside a refresh token (1-2 KB) and the client secret passes 4 KB. So the access
# token stays in the credentials value when everything fits (Google, small tokens: one parameter), and
# is cached in a second parameter `<path>.access` when it does not. A credentials value without an
# access token means "look in the second parameter".
MAX_VALUE_BYTES = 4096
ACCESS_SUFFIX = ".access"  # the account's hash ends the path, so `<path>.access` never collides
_ACCESS_FIELDS = {"access_token", "access_token_expires_at"}
_APART = "access_token_apart"  # in the credentials value: the access token is in `<path>.access`


class CachedAccessToken(BaseModel):
    access_token: str
    expires_at: UtcDateTime | None = None

    def __repr__(self) -> str:  # keep the token out of tracebacks and debug output
        return f"CachedAccessToken(expires_at={self.expires_at!r})"

    __str__ = __repr__


def access_path(path: str) -> str:
    return path + ACCESS_SUFFIX


def _put(name: str, value: str, description: str) -> None:
    aws.ssm().put_parameter(
        Name=name, Value=value, Type="SecureString", Overwrite=True, Tier="Standard", Description=description
    )


def _get(name: str) -> str | None:
    try:
        resp = aws.ssm().get_parameter(Name=name, WithDecryption=True)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return None
        raise
    return str(resp["Parameter"]["Value"])


def _delete(name: str) -> bool:
    try:
        aws.ssm().delete_parameter(Name=name)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return False
        raise
    return True


def _fits(value: str) -> bool:
    return len(value.encode()) <= MAX_VALUE_BYTES


_DESCRIPTION = "calbot OAuth credentials for one connected calendar account"
_ACCESS_DESCRIPTION = "calbot cached access token for one connected calendar account"


def put(path: str, creds: Credentials) -> None:
    """One parameter when everything fits; else the access token in `<path>.access`, flagged in the
    credentials value (not cached at all if even alone it passes 4 KB: the next call refreshes).

    Never deletes: only connect and disconnect may (IAM); a stale `<path>.access` is ignored unless the
    credentials value points at it, and disconnect removes it.
    """
    whole = creds.model_dump_json()
    if creds.access_token and _fits(whole):
        _put(path, whole, _DESCRIPTION)
        return
    value: dict[str, Any] = json.loads(creds.model_dump_json(exclude=_ACCESS_FIELDS))
    if creds.access_token:
        cached = CachedAccessToken(
            access_token=creds.access_token, expires_at=creds.access_token_expires_at
        ).model_dump_json()
        if _fits(cached):
            _put(access_path(path), cached, _ACCESS_DESCRIPTION)
            value[_APART] = True
        else:
            logger.warning("access token too large to cache", extra={"bytes": len(cached.encode())})
    _put(path, json.dumps(value, separators=(",", ":")), _DESCRIPTION)


def get(path: str) -> Credentials | None:
    """The credentials with their cached access token, if any (a second read only when it is apart)."""
    value = _get(path)
    if value is None:
        return None
    data = json.loads(value)
    apart = bool(data.pop(_APART, False))
    creds = Credentials.model_validate(data)
    if creds.access_token or not apart:
        return creds
    cached = _get(access_path(path))
    if cached is None:
        return creds
    token = CachedAccessToken.model_validate_json(cached)
    return creds.model_copy(
        update={"access_token": token.access_token, "access_token_expires_at": token.expires_at}
    )


def delete(path: str) -> bool:
    """Both parameters; True when the credentials existed."""
    _delete(access_path(path))
    return _delete(path)
