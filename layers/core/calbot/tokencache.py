"""Access tokens, cached so that a sync does not read the credential store on every request.

Two levels, keyed by the connection's credential path:
- in this process (one Lambda container): a bounded dict, no AWS call at all;
- shared by every container: one DynamoDB item per account (store/secrets.py, `TOKEN#`), the token
  KMS-envelope-encrypted (calbot.envelope) with a context naming the item and its user, and a TTL so
  DynamoDB drops it some time after the token expired.

Access tokens never go to the credential store (SSM or the `CRED#` item): that holds only what lives
long (refresh token, client secret). Whether a cached token is still good enough to use is the
caller's rule (calbot.tokens, EARLY_REFRESH); this module only keeps what it was given.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime

from pydantic import BaseModel

from calbot import envelope, store
from calbot.log import logger
from calbot.models import UtcDateTime
from calbot.store.secrets import ACCESS_TOKEN

MEMORY_ENTRIES = 1024  # accounts one container keeps tokens for (a user has at most 200)
# DynamoDB deletes the item this long after the token expired (its TTL; expired items may linger).
TTL_GRACE_SECONDS = 3600


class CachedAccessToken(BaseModel):
    access_token: str
    expires_at: UtcDateTime | None = None

    def __repr__(self) -> str:  # keep the token out of tracebacks and debug output
        return f"CachedAccessToken(expires_at={self.expires_at!r})"

    __str__ = __repr__


_memory: OrderedDict[str, CachedAccessToken] = OrderedDict()
_lock = threading.Lock()


def owner_and_rest(path: str) -> tuple[str, str]:
    """(user segment, `<provider>/<account>`) of a credential path `<prefix>/users/<u>/<p>/<a>`."""
    _, _, tail = path.rpartition("/users/")
    user, _, rest = tail.partition("/")
    if not user or not rest:
        raise ValueError("not a credential path")
    return user, rest


def context(user: str, sk: str) -> dict[str, str]:
    """The encryption context of a secret item: its key and its user (calbot.envelope)."""
    return {"calbot:user": user, "calbot:item": f"{store.user_pk(user)}/{sk}"}


def remembered(path: str) -> CachedAccessToken | None:
    """This container's copy, no AWS call."""
    with _lock:
        return _memory.get(path)


def _remember(path: str, token: CachedAccessToken) -> None:
    with _lock:
        _memory[path] = token
        _memory.move_to_end(path)
        while len(_memory) > MEMORY_ENTRIES:
            _memory.popitem(last=False)


def shared(path: str) -> CachedAccessToken | None:
    """The shared copy (one GetItem, one KMS Decrypt unless its data key is cached), remembered here."""
    user, rest = owner_and_rest(path)
    sk = ACCESS_TOKEN + rest
    blob = store.get_secret(user, sk)
    if blob is None:
        return None
    try:
        token = CachedAccessToken.model_validate_json(envelope.decrypt(blob, context(user, sk)))
    except envelope.EnvelopeError as err:
        logger.warning("cached access token not usable", extra={"reason": str(err)})
        return None
    _remember(path, token)
    return token


def put(path: str, access_token: str, expires_at: datetime | None) -> None:
    token = CachedAccessToken(access_token=access_token, expires_at=expires_at)
    _remember(path, token)
    user, rest = owner_and_rest(path)
    sk = ACCESS_TOKEN + rest
    ttl = int(expires_at.timestamp()) + TTL_GRACE_SECONDS if expires_at else None
    blob = envelope.encrypt(token.model_dump_json().encode(), context(user, sk))
    store.put_secret(user, sk, blob, ttl_epoch=ttl)


def forget(path: str) -> None:
    """Both copies (a token the provider refused, or a disconnected account)."""
    with _lock:
        _memory.pop(path, None)
    user, rest = owner_and_rest(path)
    store.delete_secret(user, ACCESS_TOKEN + rest)


def clear_memory() -> None:
    """Forget this container's copies (tests: a new container)."""
    with _lock:
        _memory.clear()
