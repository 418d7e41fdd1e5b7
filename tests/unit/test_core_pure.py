"""Pure helpers: times, provider aliases, redaction, webhook URLs, credential paths, Retry-After."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone

import pytest

from calbot.log import redact
from calbot.models import ConnectionPath, CreateConnectionRequest, Credentials, normalize_provider
from calbot.providers.http import parse_retry_after
from calbot.services.connect import limit_message, webhook_url
from calbot.timeutil import iso_z, parse_iso


def test_iso_z_and_parse() -> None:
    assert iso_z(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
    assert iso_z(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))) == "2026-01-02T01:04:05Z"
    assert parse_iso("2026-12-02T11:00:00.0000000Z") == datetime(2026, 12, 2, 11, tzinfo=UTC)
    assert parse_iso("2026-12-02T11:00:00.1234567+01:00") == datetime(
        2026, 12, 2, 10, 0, 0, 123456, tzinfo=UTC
    )
    assert parse_iso("2026-12-02T11:00:00") == datetime(2026, 12, 2, 11, tzinfo=UTC)
    with pytest.raises(ValueError):
        iso_z(datetime(2026, 1, 1))


def test_provider_alias() -> None:
    assert normalize_provider("microsoft") == "outlook" and normalize_provider("Outlook") == "outlook"
    assert ConnectionPath(provider="microsoft", account_id="a@b.c").provider == "outlook"
    with pytest.raises(ValueError):
        normalize_provider("yahoo")


def test_create_request_needs_one_complete_provider() -> None:
    ok = CreateConnectionRequest(
        microsoft_client_id="a", microsoft_client_secret="b", microsoft_refresh_token="c"
    )
    assert ok.provider == "outlook" and ok.microsoft_tenant == "common" and ok.replace is False
    for bad in (
        {},
        {"microsoft_client_id": "a"},
        {
            "microsoft_client_id": "a",
            "microsoft_client_secret": "b",
            "microsoft_refresh_token": "c",
            "google_client_id": "d",
        },
        {
            "microsoft_client_id": "a",
            "microsoft_client_secret": "b",
            "microsoft_refresh_token": "c",
            "unknown": 1,
        },
        {
            "microsoft_client_id": "a",
            "microsoft_client_secret": "b",
            "microsoft_refresh_token": "c",
            "microsoft_tenant": "../../etc",
        },
    ):
        with pytest.raises(ValueError):
            CreateConnectionRequest.model_validate(bad)


def test_credentials_repr_hides_secrets() -> None:
    creds = Credentials(provider="outlook", client_id="cid", client_secret="SECRET1", refresh_token="RT1")
    assert "SECRET1" not in repr(creds) and "RT1" not in str(creds)


def test_webhook_url_is_per_account_and_encoded() -> None:
    url = webhook_url("https://api.example.com/", "usr_1", "outlook", "jane+x@acme.com")
    assert url == "https://api.example.com/api/v1/admin/schedule/users/usr_1/outlook/jane%2Bx%40acme.com"


def test_limit_message_is_the_guides_and_names_the_refused_provider() -> None:
    assert limit_message(200, "outlook").startswith(
        "Maximum of 200 outlook calendar connections per user reached"
    )
    assert limit_message(200, "google").startswith(
        "Maximum of 200 google calendar connections per user reached"
    )


def test_redaction() -> None:
    data = {
        "refresh_token": "M.C5abc",
        "nested": {"client_secret": "x", "ok": "fine"},
        "text": "Authorization: Bearer EwAabcdefghijklmnop",
        "list": ["access_token=abc&x=1"],
    }
    out = redact(data)
    assert out["refresh_token"] == "***" and out["nested"] == {"client_secret": "***", "ok": "fine"}
    assert "EwAabcdefghijklmnop" not in out["text"] and "abc&" not in out["list"][0]


def test_a_jwt_is_redacted_wherever_it_stands() -> None:
    # A work account's Graph access token is a JWT: found bare, quoted or after any word.
    from local.emulators.graph import _new_access_token

    jwt = _new_access_token()
    for text in (jwt, f"provider refused {jwt}", f'{{"t": "{jwt}"}}', f"token={jwt}&x=1"):
        out = redact(text)
        assert jwt[:30] not in out and jwt[-20:] not in out and "***" in out
    assert redact("eyJ alone, and evt_eyJabc.def") == "eyJ alone, and evt_eyJabc.def"


def test_logger_redacts_extra_fields(caplog: pytest.LogCaptureFixture) -> None:
    from calbot.log import logger

    with caplog.at_level(logging.INFO, logger="calbot"):
        logger.info(
            "connect failed for token Bearer EwAsecretsecretsecret", extra={"refresh_token": "M.C5secret"}
        )
    (record,) = [r for r in caplog.records if "connect failed" in r.getMessage()]
    assert "EwAsecret" not in record.getMessage()
    assert record.refresh_token == "***"  # type: ignore[attr-defined]


def test_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    value = parse_retry_after(later)
    assert value is not None and 25 <= value <= 31
