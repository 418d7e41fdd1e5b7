"""OAuth credentials as SSM SecureStrings, one parameter per (user, provider, account).

The per-account path isolates accounts from each other (IAM can scope to a prefix), and nothing else in
the system ever holds a refresh token or client secret. Values are JSON of `Credentials` (without the
access token, which is cached in a second parameter: see MAX_VALUE_BYTES).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime

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


# SSM Standard tier: values up to 4 KB (4,096 bytes) each. Real tokens (PROTOCOLS) do not fit together:
# a Microsoft access token (1.5-2.5 KB, more for users in many groups) beside a refresh token (1-2 KB)
# and the client secret passes 4 KB. So an account has two parameters: its credentials (refresh token,
# client id and secret: what must survive) and a cache of its current access token.
MAX_VALUE_BYTES = 4096
ACCESS_SUFFIX = ".access"  # `<path>.access`: the account's hash ends the path, so it never collides
_ACCESS_FIELDS = {"access_token", "access_token_expires_at"}


class CachedAccessToken(BaseModel):
    access_token: str
    expires_at: UtcDateTime

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


def credentials_value(creds: Credentials) -> str:
    """What the credentials parameter holds: everything but the access token."""
    return creds.model_dump_json(exclude=_ACCESS_FIELDS)


def put_credentials(path: str, creds: Credentials) -> None:
    _put(path, credentials_value(creds), "calbot OAuth credentials for one connected calendar account")


def put_access_token(path: str, access_token: str, expires_at: datetime) -> bool:
    """Cache the access token; False (nothing cached, the next call refreshes) if it is too large."""
    value = CachedAccessToken(access_token=access_token, expires_at=expires_at).model_dump_json()
    if len(value.encode()) > MAX_VALUE_BYTES:
        logger.warning("access token too large to cache", extra={"bytes": len(value.encode())})
        _delete(access_path(path))  # never leave an older token looking current
        return False
    _put(access_path(path), value, "calbot cached access token for one connected calendar account")
    return True


def put(path: str, creds: Credentials) -> None:
    """Credentials first (a rotated refresh token is what must not be lost), then the access token."""
    put_credentials(path, creds)
    if creds.access_token and creds.access_token_expires_at:
        put_access_token(path, creds.access_token, creds.access_token_expires_at)
    else:
        _delete(access_path(path))


def get_credentials(path: str) -> Credentials | None:
    """The credentials parameter alone (a value written before the split may still hold a token)."""
    value = _get(path)
    return Credentials.model_validate_json(value) if value is not None else None


def get_access_token(path: str) -> CachedAccessToken | None:
    value = _get(access_path(path))
    return CachedAccessToken.model_validate_json(value) if value is not None else None


def forget_access_token(path: str) -> bool:
    return _delete(access_path(path))


def get(path: str) -> Credentials | None:
    """Credentials with the cached access token, if any."""
    creds = get_credentials(path)
    if creds is None:
        return None
    cached = get_access_token(path)
    if cached is not None:
        creds = creds.model_copy(
            update={"access_token": cached.access_token, "access_token_expires_at": cached.expires_at}
        )
    return creds


def delete(path: str) -> bool:
    """Both parameters; True when the credentials existed."""
    _delete(access_path(path))
    return _delete(path)
