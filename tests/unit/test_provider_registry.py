"""The provider registry: names, aliases, the default, credential parsing, lazy implementations, and
stored subscriptions read back whatever field their provider data was kept in."""

from __future__ import annotations

import hashlib
import importlib
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from calbot.models import ConnectionPath, CreateConnectionRequest, Subscription, SubscriptionRef
from calbot.providers import registry

ROOT = Path(__file__).resolve().parents[2]


def test_the_builtin_providers_and_their_aliases_come_from_the_registry() -> None:
    assert registry.names()[:2] == ["outlook", "google"]
    assert registry.spec("Microsoft").name == "outlook" and registry.spec(" GOOGLE ").name == "google"
    assert registry.default_name() == "outlook"
    assert registry.alias_note() == "`microsoft` is an alias of `outlook` (case-insensitive)."
    with pytest.raises(ValueError, match="'outlook' \\(alias 'microsoft'\\) or 'google'"):
        registry.spec("yahoo")
    for name in ("outlook", "google"):  # each names its implementation by module path
        module, _, attribute = str(registry.spec(name).factory).partition(":")
        assert getattr(importlib.import_module(module), attribute).name == name


class Other(registry.CredentialFields):
    other_token: str | None = None


class Replacing(registry.CredentialFields):
    replace: str | None = None


def test_a_provider_cannot_take_a_name_alias_default_or_connect_field_already_taken() -> None:
    outlook = registry.spec("outlook")
    for clash in (
        registry.ProviderSpec(name="microsoft", credentials=outlook.credentials, factory=str, verify=str),
        registry.ProviderSpec(
            name="other", aliases=("google",), credentials=outlook.credentials, factory=str, verify=str
        ),
        registry.ProviderSpec(name="other", default=True, credentials=Other, factory=str, verify=str),
        registry.ProviderSpec(name="other", credentials=outlook.credentials, factory=str, verify=str),
        registry.ProviderSpec(name="other", credentials=Replacing, factory=str, verify=str),
    ):
        with pytest.raises(ValueError):
            registry.register(clash)
    assert registry.names()[:2] == ["outlook", "google"] and "other" not in registry.names()


def test_a_connection_request_is_read_by_the_fields_of_the_provider_it_names() -> None:
    google = CreateConnectionRequest.model_validate(
        {"google_client_id": "a", "google_client_secret": "b", "google_refresh_token": "c", "replace": True}
    )
    assert google.provider == "google" and google.replace is True
    assert google.credentials() == {"client_id": "a", "client_secret": "b", "refresh_token": "c"}
    outlook = CreateConnectionRequest(
        microsoft_client_id="a",
        microsoft_client_secret="b",
        microsoft_refresh_token="c",
        microsoft_tenant="t1",
    )
    assert outlook.credentials()["tenant"] == "t1"
    with pytest.raises(ValueError, match="google_client_id, google_client_secret and google_refresh_token"):
        CreateConnectionRequest.model_validate({"google_client_id": "a"})
    assert ConnectionPath(provider="MICROSOFT", account_id="a@b.c").provider == "outlook"


def test_stored_subscriptions_written_with_resource_id_read_into_the_handle() -> None:
    """Records written before the opaque handle kept Google's resource id in `resource_id`."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    old = {
        "id": "chan-1",
        "user_id": "usr_1",
        "provider": "google",
        "account_id": "a@b.c",
        "calendar_id": "a@b.c",
        "client_state_hash": "0" * 64,
        "expires_at": "2026-01-08T00:00:00Z",
        "created_at": "2026-01-01T00:00:00Z",
        "resource_id": "res-9",
    }
    sub = Subscription.model_validate(old)
    assert sub.handle == {"resource_id": "res-9"}
    again = sub.model_dump(mode="json")
    assert "resource_id" not in again and Subscription.model_validate(again) == sub
    ref = SubscriptionRef.model_validate(
        {"id": "chan-1", "calendar_id": "c", "expires_at": at, "resource_id": "r"}
    )
    assert ref.handle == {"resource_id": "r"}
    outlook_ref = SubscriptionRef.model_validate(
        {"id": "s", "calendar_id": "c", "expires_at": at, "resource_id": None}
    )
    assert outlook_ref.handle == {}


def test_validating_provider_names_does_not_import_the_provider_implementations() -> None:
    """The built-in specs name their implementations by module path: a handler that only validates a
    provider (or lists connections, or takes a webhook) never imports Graph's or Google's client code."""
    code = (
        "import sys\n"
        "from calbot.models import ConnectionPath, CreateConnectionRequest\n"
        "from calbot.services import connections, notifications\n"
        "ConnectionPath(provider='microsoft', account_id='a@b.c')\n"
        "loaded = [m for m in ('calbot.providers.outlook', 'calbot.providers.google') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    env_path = f"{ROOT / 'layers' / 'core'}"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": env_path},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_google_reads_and_bounds_its_own_header_only_notifications() -> None:
    """What the webhook handler used to cut (a channel id to 256, a message number to 32 characters)
    the Google provider now cuts itself, reading its own headers."""
    token = "channel-token"
    sub = Subscription(
        id="c" * 256,
        user_id="usr_1",
        provider="google",
        account_id="Sam@Gmail.example",
        calendar_id="primary",
        client_state_hash=hashlib.sha256(token.encode()).hexdigest(),
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        handle={"resource_id": "res-1"},
    )
    asked: list[list[str]] = []

    def lookup(ids: list[str]) -> dict[str, Subscription]:
        asked.append(ids)
        return {sub.id: sub} if sub.id in ids else {}

    headers = {
        "x-goog-channel-id": "c" * 300,
        "x-goog-channel-token": token,
        "x-goog-resource-id": "res-1",
        "x-goog-resource-state": "exists",
        "x-goog-message-number": "9" * 40,
    }
    verify = registry.spec("google").verifier()
    notice = registry.Notice("usr_1", "google", "sam@gmail.example", headers, {})
    verdict = verify(notice, lookup)
    assert asked == [["c" * 256]] and (verdict.answer, verdict.accepted, verdict.dropped) == (202, 1, 0)
    assert verdict.changes == [
        registry.Change("Sam@Gmail.example", dedup=registry.digest(sub.id, "9" * 32, "exists"))
    ]
    started = verify(
        registry.Notice(
            "usr_1", "google", "sam@gmail.example", {**headers, "x-goog-resource-state": "sync"}, {}
        ),
        lookup,
    )
    assert (started.answer, started.accepted, started.changes) == (200, 1, [])
    for forged in ({"x-goog-resource-id": "res-2"}, {"x-goog-channel-token": "other"}):
        dropped = verify(
            registry.Notice("usr_1", "google", "sam@gmail.example", {**headers, **forged}, {}), lookup
        )
        assert (dropped.answer, dropped.dropped, dropped.changes) == (202, 1, [])
