"""Connecting Google accounts through the shared services: one limit for both providers, watch channels
per calendar with their own token, rollback, and the renewal job recreating channels near expiry."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from calbot import store, vault
from calbot.admin import create_user
from calbot.config import reset_settings
from calbot.errors import DomainError
from calbot.http import status_of
from calbot.models import CreateConnectionRequest
from calbot.services.connect import connect_account, hash_client_state
from calbot.timeutil import now
from local.stack import LocalStack
from tests.conftest import connect_new_account, renewal_night

MS_ID, MS_SECRET = "svc-google-ms-client", "svc-google-ms-secret"
G_ID, G_SECRET = "555-svc.apps.googleusercontent.com", "GOCSPX-svc-google-secret"
_n = itertools.count()


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> Iterator[LocalStack]:
    inproc_stack.graph.add_app(MS_ID, MS_SECRET)
    inproc_stack.google.add_app(G_ID, G_SECRET)
    yield inproc_stack


def google_account(stack: LocalStack, **extra: Any) -> dict[str, Any]:
    email = f"svc.google{next(_n)}@gmail.example"
    acct = stack.google.add_account(email, client_id=G_ID, **extra)
    return {**acct, "email": email}


def connect_google(stack: LocalStack, user_id: str, acct: dict[str, Any]) -> tuple[int, Any]:
    req = CreateConnectionRequest(
        google_client_id=G_ID, google_client_secret=G_SECRET, google_refresh_token=acct["refresh_token"]
    )
    return connect_account(user_id, req, base_url=stack.info["gateway_url"])


def test_google_connect_watches_every_calendar_with_its_own_token(stack: LocalStack) -> None:
    user_id = create_user(f"g{next(_n)}@example.com").user_id
    acct = google_account(
        stack, calendars=[{"summary": "Team"}, {"summary": "Holidays", "access_role": "reader"}]
    )
    status, created = connect_google(stack, user_id, acct)
    assert status == 201 and created.provider == "google" and created.account_id == acct["email"]
    assert {c.name for c in created.calendars} >= {
        "Team",
        "Holidays",
    } and created.primary_calendar_id == acct["email"]
    conn = store.get_connection(user_id, "google", acct["email"])
    assert conn is not None and len(conn.subscriptions) == 3
    live = {c["id"]: c for c in stack.google.channels(active_only=True)}
    for ref in conn.subscriptions:
        sub = store.get_subscription(ref.id)
        assert (
            sub is not None
            and sub.handle["resource_id"] == live[ref.id]["resource_id"] == ref.handle["resource_id"]
        )
        # the channel's token is the secret whose hash we keep; the token itself is stored nowhere
        assert sub.client_state_hash == hash_client_state(live[ref.id]["token"])
    tokens = {live[r.id]["token"] for r in conn.subscriptions}
    assert len(tokens) == 3  # one secret per channel
    creds = vault.get(conn.credential_path)
    assert creds is not None and creds.provider == "google" and creds.refresh_token == acct["refresh_token"]


def test_one_limit_counts_outlook_and_google_together(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONNECTION_LIMIT", "2")
    reset_settings()
    try:
        user_id, _ = connect_new_account(stack, MS_ID, MS_SECRET, prefix="glimit")
        assert connect_google(stack, user_id, google_account(stack))[0] == 201
        refused = google_account(stack)
        with pytest.raises(DomainError) as err:
            connect_google(stack, user_id, refused)
        assert err.value.code == "connection_limit_reached"
        # The message names the provider that was refused (issue 16), and the body says it too.
        assert err.value.message.startswith("Maximum of 2 google calendar connections per user reached")
        assert err.value.details["provider"] == "google"
        with pytest.raises(DomainError) as err2:
            connect_new_account(stack, MS_ID, MS_SECRET, user_id=user_id, prefix="glimit")
        assert err2.value.code == "connection_limit_reached"
        assert err2.value.message.startswith("Maximum of 2 outlook calendar connections per user reached")
    finally:
        monkeypatch.delenv("CONNECTION_LIMIT")
        reset_settings()
    assert store.count_connections(user_id) == 2
    assert {c.provider for c in store.list_connections(user_id)} == {"outlook", "google"}
    assert [c for c in stack.google.channels(active_only=True) if c["calendar_id"] == refused["email"]] == []


def test_a_failed_watch_on_the_primary_calendar_leaves_nothing_behind(stack: LocalStack) -> None:
    user_id = create_user(f"g{next(_n)}@example.com").user_id
    acct = google_account(stack)
    fault = stack.google.add_fault(path="/events/watch$", status=400, reason="invalid", times=-1)
    try:
        with pytest.raises(DomainError) as err:
            connect_google(stack, user_id, acct)
    finally:
        stack.google.remove_fault(fault["id"])
    assert status_of(err.value) in (400, 502)
    assert store.get_connection(user_id, "google", acct["email"]) is None
    assert store.count_connections(user_id) == 0
    from calbot.vault import credential_path

    assert vault.get(credential_path(user_id, "google", acct["email"])) is None
    assert [c for c in stack.google.channels(active_only=True) if c["calendar_id"] == acct["email"]] == []


def test_renewal_recreates_channels_expiring_within_two_days_and_stops_the_old_ones(
    stack: LocalStack,
) -> None:
    user_id = create_user(f"g{next(_n)}@example.com").user_id
    acct = google_account(stack)
    connect_google(stack, user_id, acct)
    conn = store.get_connection(user_id, "google", acct["email"])
    assert conn is not None
    (old_ref,) = conn.subscriptions
    # Our record says it ends tomorrow (the state a 30-day channel reaches on its 29th day).
    soon = now() + timedelta(days=1)
    old = store.get_subscription(old_ref.id)
    assert old is not None
    store.put_subscriptions([old.model_copy(update={"expires_at": soon})])
    counts = renewal_night()
    assert counts["recreated"] >= 1 and counts["needs_reauth"] == 0 and counts["failed"] == 0
    conn = store.get_connection(user_id, "google", acct["email"])
    assert conn is not None
    (new_ref,) = conn.subscriptions
    assert new_ref.id != old_ref.id and new_ref.expires_at > now() + timedelta(days=25)
    assert store.get_subscription(old_ref.id) is None
    new = store.get_subscription(new_ref.id)
    assert new is not None and new.handle["resource_id"] == new_ref.handle["resource_id"]
    states = {c["id"]: c for c in stack.google.channels() if c["calendar_id"] == acct["email"]}
    assert states[old_ref.id]["stopped"] is True  # stopped at Google with its resource id
    assert states[new_ref.id]["stopped"] is False and not states[new_ref.id]["expired"]
    assert renewal_night()["recreated"] == 0  # nothing is due any more
