"""The signing secrets of customer webhook endpoints, kept like the OAuth credentials (calbot.vault).

A secret is Standard Webhooks' format: `whsec_` + base64 of 32 random bytes (the HMAC key is the
decoded base64 part). It is shown to the user once (on registration and on rotation), never logged,
and stored in the configured credential backend (`CREDENTIAL_BACKEND`):
- `ssm`: one SecureString parameter per endpoint, `<ssm prefix>/webhooks/<user>/<webhook id>`
  (template.yaml WebhookSecretsPolicy / WebhookSecretsReadPolicy grant that prefix only);
- `dynamodb`: a `WHSEC#<webhook id>` item in the user's partition (store/secrets.py), KMS-envelope-
  encrypted (calbot.envelope) with a context naming the item and its user.

One value per endpoint holds the current secret and, for WEBHOOK_SECRET_OVERLAP_SECONDS after a
rotation, the previous one: both sign a delivery while the overlap lasts, so a receiver can switch
secrets without losing a delivery. `signing_secrets` is cached per container for CACHE_SECONDS so a
delivery does not read SSM (or KMS) each time; a caller that knows the endpoint's `secret_version`
passes it, and a cached value of another version is read again.
"""

from __future__ import annotations

import base64
import json
import re
import secrets as random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from botocore.exceptions import ClientError

from calbot import aws, envelope, store, tokencache
from calbot.config import get_settings
from calbot.models import WEBHOOK_SECRET_OVERLAP_SECONDS
from calbot.timeutil import iso_z, now, parse_iso

PREFIX = "whsec_"
SECRET_BYTES = 32  # Standard Webhooks: between 24 and 64 bytes
SECRET_ITEM = "WHSEC#"
CACHE_SECONDS = 60.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_DESCRIPTION = "calbot customer webhook signing secrets (current, and the previous during its overlap)"


@dataclass(frozen=True)
class StoredSecrets:
    """What the backend holds for one endpoint (never logged: no repr of the secrets)."""

    current: str
    version: int
    previous: str | None = None
    previous_expires_at: datetime | None = None

    def __repr__(self) -> str:
        return f"StoredSecrets(version={self.version}, previous_expires_at={self.previous_expires_at!r})"

    __str__ = __repr__

    def signing(self, at: datetime) -> list[str]:
        """The current secret, then the previous one while its overlap lasts."""
        keep = self.previous and self.previous_expires_at and at < self.previous_expires_at
        return [self.current, self.previous] if keep and self.previous else [self.current]

    def dump(self) -> str:
        return json.dumps(
            {
                "current": self.current,
                "version": self.version,
                "previous": self.previous,
                "previous_expires_at": iso_z(self.previous_expires_at) if self.previous_expires_at else None,
            }
        )

    @classmethod
    def load(cls, text: str) -> StoredSecrets:
        data = json.loads(text)
        expires = data.get("previous_expires_at")
        return cls(
            current=data["current"],
            version=int(data.get("version", 1)),
            previous=data.get("previous"),
            previous_expires_at=parse_iso(expires) if expires else None,
        )


_cache: dict[tuple[str, str], tuple[float, StoredSecrets]] = {}
_lock = threading.Lock()


def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes (Standard Webhooks' secret format)."""
    return PREFIX + base64.b64encode(random.token_bytes(SECRET_BYTES)).decode()


def secret_path(user_id: str, webhook_id: str) -> str:
    """`<ssm prefix>/webhooks/<user>/<webhook id>` (SSM names allow only `a-zA-Z0-9_.-/`)."""
    return f"{get_settings().ssm_prefix}/webhooks/{_UNSAFE.sub('_', user_id)}/{_UNSAFE.sub('_', webhook_id)}"


def _dynamodb() -> bool:
    return get_settings().credential_backend == "dynamodb"


def _item(user_id: str, webhook_id: str) -> tuple[str, dict[str, str]]:
    sk = SECRET_ITEM + webhook_id
    return sk, tokencache.context(user_id, sk)


def _read(user_id: str, webhook_id: str) -> StoredSecrets | None:
    if _dynamodb():
        sk, ctx = _item(user_id, webhook_id)
        blob = store.get_secret(user_id, sk)
        return None if blob is None else StoredSecrets.load(envelope.decrypt(blob, ctx).decode())
    try:
        resp = aws.ssm().get_parameter(Name=secret_path(user_id, webhook_id), WithDecryption=True)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return None
        raise
    return StoredSecrets.load(str(resp["Parameter"]["Value"]))


def _write(user_id: str, webhook_id: str, value: StoredSecrets) -> None:
    if _dynamodb():
        sk, ctx = _item(user_id, webhook_id)
        store.put_secret(user_id, sk, envelope.encrypt(value.dump().encode(), ctx))
        return
    aws.ssm().put_parameter(
        Name=secret_path(user_id, webhook_id),
        Value=value.dump(),
        Type="SecureString",
        Overwrite=True,
        Description=_DESCRIPTION,
    )


def _remember(user_id: str, webhook_id: str, value: StoredSecrets) -> None:
    with _lock:
        _cache[(user_id, webhook_id)] = (time.monotonic() + CACHE_SECONDS, value)


def _forget(user_id: str, webhook_id: str) -> None:
    with _lock:
        _cache.pop((user_id, webhook_id), None)


def store_secret(user_id: str, webhook_id: str, secret: str) -> StoredSecrets:
    """Make `secret` the endpoint's current secret. A secret it had before keeps signing beside the new
    one for WEBHOOK_SECRET_OVERLAP_SECONDS (a rotation); what is stored is returned (its version and
    the previous secret's expiry go on the endpoint's record)."""
    before = _read(user_id, webhook_id)
    if before is None:
        value = StoredSecrets(current=secret, version=1)
    else:
        value = StoredSecrets(
            current=secret,
            version=before.version + 1,
            previous=before.current,
            previous_expires_at=now() + timedelta(seconds=WEBHOOK_SECRET_OVERLAP_SECONDS),
        )
    _write(user_id, webhook_id, value)
    _remember(user_id, webhook_id, value)
    return value


def signing_secrets(user_id: str, webhook_id: str, *, version: int | None = None) -> list[str]:
    """The secrets a delivery is signed with now: the current one, plus the previous one while its 24 h
    overlap lasts. Cached in this container for CACHE_SECONDS; with `version` (the endpoint record's
    secret_version) a cached value of another version is read again. Empty when the endpoint has no
    secret (deleted)."""
    with _lock:
        cached = _cache.get((user_id, webhook_id))
    if cached is not None and cached[0] > time.monotonic() and version in (None, cached[1].version):
        value: StoredSecrets | None = cached[1]
    else:
        value = _read(user_id, webhook_id)
        if value is None:
            _forget(user_id, webhook_id)
            return []
        _remember(user_id, webhook_id, value)
    assert value is not None
    return value.signing(now())


def delete_secrets(user_id: str, webhook_id: str) -> bool:
    """Delete the endpoint's secrets (all of them); True when there were any."""
    _forget(user_id, webhook_id)
    if _dynamodb():
        sk, _ = _item(user_id, webhook_id)
        return store.delete_secret(user_id, sk)
    try:
        aws.ssm().delete_parameter(Name=secret_path(user_id, webhook_id))
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return False
        raise
    return True


def clear_cache() -> None:
    """Forget this container's copies (tests: a new container)."""
    with _lock:
        _cache.clear()
