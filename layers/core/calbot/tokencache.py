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

import base64
import binascii
import struct
import threading
import zlib
from collections import OrderedDict
from datetime import UTC, datetime, timedelta

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


# What is encrypted into the shared item: packed, not JSON. Every KB of the item is a write unit on each
# refresh (hourly per active account), and a work account's Graph token is a JWT of 1.5-2.5 KB or more
# (PROTOCOLS) whose base64url text spends 8 bits on every 6: its header and claims are stored decoded
# and deflated, its signature decoded (a typical 2,300-character token: 1,215 bytes, and its item 2
# write units instead of 3). Any other token (Google's, a personal account's opaque one) is deflated
# as text. Packed: PACKED_V1, the expiry (microseconds since the epoch, NO_EXPIRY for none), then
# b"J" + the deflated header and claims' length (2 bytes) + them + the signature, or b"T" + the
# deflated text. An item written before holds the model's JSON (it starts with "{") and is read as it
# is until the next refresh rewrites it.
PACKED_V1 = b"\x01"
NO_EXPIRY = -(2**63)
_JWT_PART, _TEXT = b"J", b"T"
_MAX_PLAIN = 64 * 1024  # what unpack inflates at most (the message is authenticated; this is a bound)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def pack(token: CachedAccessToken) -> bytes:
    expires = token.expires_at
    micros = NO_EXPIRY if expires is None else (expires - _EPOCH) // _MICROSECOND
    head = PACKED_V1 + struct.pack(">q", micros)
    jwt = _jwt_parts(token.access_token)
    if jwt is not None:
        header, claims, signature = jwt
        packed = _deflate(header + b"\x00" + claims)
        if len(packed) < 2**16:
            return head + _JWT_PART + struct.pack(">H", len(packed)) + packed + signature
    return head + _TEXT + _deflate(token.access_token.encode())


def unpack(plaintext: bytes) -> CachedAccessToken:
    if plaintext[:1] != PACKED_V1:
        return CachedAccessToken.model_validate_json(plaintext)  # written before packing
    (micros,) = struct.unpack(">q", plaintext[1:9])
    expires = None if micros == NO_EXPIRY else _EPOCH + micros * _MICROSECOND
    kind, body = plaintext[9:10], plaintext[10:]
    if kind == _JWT_PART:
        (length,) = struct.unpack(">H", body[:2])
        header, _, claims = _inflate(body[2 : 2 + length]).partition(b"\x00")
        text = ".".join(_b64url(part) for part in (header, claims, body[2 + length :]))
    elif kind == _TEXT:
        text = _inflate(body).decode()
    else:
        raise ValueError(f"unknown packed token kind {kind!r}")
    return CachedAccessToken(access_token=text, expires_at=expires)


def _jwt_parts(token: str) -> tuple[bytes, bytes, bytes] | None:
    """(header, claims, signature) decoded, only if encoding them again gives exactly this token (JSON
    never holds a raw NUL, which separates the first two)."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return None
    try:
        decoded = [base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in parts]
    except (binascii.Error, ValueError):
        return None
    if [_b64url(d) for d in decoded] != parts or b"\x00" in decoded[0] + decoded[1]:
        return None
    return decoded[0], decoded[1], decoded[2]


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: no header or checksum to store
    return packer.compress(data) + packer.flush()


def _inflate(data: bytes) -> bytes:
    unpacker = zlib.decompressobj(-15)
    out = unpacker.decompress(data, _MAX_PLAIN)
    if unpacker.unconsumed_tail or not unpacker.eof:
        raise ValueError("packed token larger than expected, or cut short")
    return out


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
        token = unpack(envelope.decrypt(blob, context(user, sk)))
    except (envelope.EnvelopeError, ValueError, struct.error, zlib.error) as err:
        # Only our own message, or the error's type: a parser's message may quote what it read.
        reason = str(err) if isinstance(err, envelope.EnvelopeError) else type(err).__name__
        logger.warning("cached access token not usable", extra={"reason": reason})
        return None
    _remember(path, token)
    return token


def put(path: str, access_token: str, expires_at: datetime | None) -> None:
    token = CachedAccessToken(access_token=access_token, expires_at=expires_at)
    _remember(path, token)
    user, rest = owner_and_rest(path)
    sk = ACCESS_TOKEN + rest
    ttl = int(expires_at.timestamp()) + TTL_GRACE_SECONDS if expires_at else None
    blob = envelope.encrypt(pack(token), context(user, sk))
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
