"""The shared token cache's packed plaintext (calbot.tokencache.pack/unpack): every token comes back
exactly, a JWT's parts are stored decoded, and an item written before packing still reads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from calbot.tokencache import PACKED_V1, CachedAccessToken, pack, unpack
from local.emulators.google.models import _new_access_token as google_token
from local.emulators.graph import _new_access_token, _new_msa_access_token

EXPIRES = datetime(2026, 12, 7, 23, 59, 59, 123_456, tzinfo=UTC)


@pytest.mark.parametrize(
    "access_token",
    [
        _new_access_token(),  # a work account's JWT
        _new_msa_access_token(),  # a personal account's opaque token
        google_token(),
        "",
        "a.b.c",  # three parts, not base64url of anything
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",  # an unsigned JWT: empty signature
        "eyJhbGciOiJub25lIn0=.eyJzdWIiOiJ4In0.sig",  # padded: not canonical, kept as text
        "ünïcode.tøken.ü",
    ],
)
@pytest.mark.parametrize("expires_at", [EXPIRES, None])
def test_every_token_comes_back_exactly(access_token: str, expires_at: datetime | None) -> None:
    packed = pack(CachedAccessToken(access_token=access_token, expires_at=expires_at))
    assert packed[:1] == PACKED_V1
    back = unpack(packed)
    assert back.access_token == access_token and back.expires_at == expires_at


def test_a_jwt_is_stored_in_about_half_its_text_and_an_opaque_token_in_three_quarters() -> None:
    jwt, msa = _new_access_token(), _new_msa_access_token()
    assert len(pack(CachedAccessToken(access_token=jwt))) < 0.6 * len(jwt)
    assert len(pack(CachedAccessToken(access_token=msa))) < 0.8 * len(msa)


def test_an_item_written_before_packing_is_read_as_json() -> None:
    old = CachedAccessToken(access_token=_new_access_token(), expires_at=EXPIRES)
    assert unpack(old.model_dump_json().encode()) == old


def test_an_unknown_kind_is_refused() -> None:
    packed = bytearray(pack(CachedAccessToken(access_token="x")))
    packed[9:10] = b"Z"
    with pytest.raises(ValueError, match="unknown packed token kind"):
        unpack(bytes(packed))


def test_an_unreadable_cached_token_is_logged_by_its_error_type_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # A parser's message quotes what it read (pydantic's input_value): never a token's first characters.
    from calbot import envelope, store, tokencache

    secret = "EwAsecret-part-of-a-token-" + "x" * 40
    monkeypatch.setattr(store, "get_secret", lambda user, sk: b"blob")
    monkeypatch.setattr(envelope, "decrypt", lambda blob, ctx: ('{"access_token": "' + secret).encode())
    warnings: list[dict[str, object]] = []
    monkeypatch.setattr(tokencache.logger, "warning", lambda msg, extra: warnings.append(extra))
    assert tokencache.shared("/calbot/t/users/u1/outlook/a@b.example") is None
    assert warnings == [{"reason": "ValidationError"}]
