"""The Google provider against the Google emulator over real HTTP: the wire protocol of PROTOCOLS.md."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from calbot.config import Settings
from calbot.models import Credentials
from calbot.providers.base import ProviderAuthError, ProviderUnavailable, SyncTokenExpired
from calbot.providers.google import SCOPES, GoogleProvider
from calbot.providers.http import ProviderHttp
from local.emulators.google import GoogleEmulator
from local.servers import serve

CLIENT_ID = "123-test.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-test-secret"


@pytest.fixture(scope="module")
def emulator() -> Iterator[tuple[GoogleEmulator, str]]:
    emu = GoogleEmulator()
    server = serve(emu, host="127.0.0.1", port=0, name="google")
    yield emu, server.url
    server.shutdown()


@pytest.fixture()
def google(emulator: tuple[GoogleEmulator, str]) -> Iterator[GoogleEmulator]:
    emu, _ = emulator
    emu.reset()
    emu.add_app(CLIENT_ID, CLIENT_SECRET)
    emu.pause_notifications()
    yield emu
    emu.clear_faults()


@pytest.fixture()
def provider(emulator: tuple[GoogleEmulator, str]) -> GoogleProvider:
    _, url = emulator
    settings = Settings(
        table_name="unused",
        ssm_prefix="/unused",
        google_oauth_base_url=url,
        google_userinfo_url=f"{url}/v1/userinfo",
        google_calendar_base_url=f"{url}/calendar/v3",
    )
    from calbot.providers.google import _retryable

    http = ProviderHttp(sleep=lambda _s: None, retryable=_retryable, max_attempts=5)
    return GoogleProvider(settings, http)


def _creds(refresh_token: str, secret: str = CLIENT_SECRET) -> Credentials:
    return Credentials(
        provider="google",
        client_id=CLIENT_ID,
        client_secret=secret,
        refresh_token=refresh_token,
        scopes=SCOPES,
    )


def _account(google: GoogleEmulator, email: str = "sam.rivera@gmail.example") -> tuple[str, str]:
    acc = google.add_account(email, name="Sam Rivera", client_id=CLIENT_ID, time_zone="America/New_York")
    return email, acc["refresh_token"]


def _window(days: int = 28) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)  # the emulator's own clock is real time unless advanced
    return now - timedelta(days=1), now + timedelta(days=days)


def test_refresh_does_not_rotate_and_profile_is_the_email(
    google: GoogleEmulator, provider: GoogleProvider
) -> None:
    email, rt = _account(google)
    tokens = provider.refresh(_creds(rt))
    assert tokens.refresh_token is None  # Google refresh tokens do not rotate
    again = provider.refresh(_creds(rt))
    assert again.access_token != tokens.access_token
    profile = provider.profile(tokens.access_token)
    assert profile.account_id == email and profile.name == "Sam Rivera"


def test_auth_failures_are_typed(google: GoogleEmulator, provider: GoogleProvider) -> None:
    email, rt = _account(google)
    with pytest.raises(ProviderAuthError) as bad_client:
        provider.refresh(_creds(rt, secret="GOCSPX-wrong"))
    assert bad_client.value.kind == "invalid_client"
    google.revoke(email)
    with pytest.raises(ProviderAuthError) as revoked:
        provider.refresh(_creds(rt))
    assert revoked.value.kind == "invalid_grant"
    assert rt not in str(revoked.value) and CLIENT_SECRET not in str(bad_client.value)


def test_a_testing_apps_token_is_refused_after_7_days_as_invalid_grant(
    google: GoogleEmulator, provider: GoogleProvider
) -> None:
    google.add_app("testing-app.apps.googleusercontent.com", CLIENT_SECRET, testing=True)
    acc = google.add_account("tester@gmail.example", client_id="testing-app.apps.googleusercontent.com")
    creds = _creds(acc["refresh_token"]).model_copy(
        update={"client_id": "testing-app.apps.googleusercontent.com"}
    )
    assert provider.refresh(creds).access_token
    google.advance_clock(7 * 86400)
    with pytest.raises(ProviderAuthError) as expired:
        provider.refresh(creds)
    assert expired.value.kind == "invalid_grant" and expired.value.revoked


@pytest.mark.parametrize(
    "rule",
    [
        {"status": 400, "error": "temporarily_unavailable"},
        {"status": 401, "error": "unauthorized_client"},
        {"status": 500, "error": "internal_failure"},
    ],
    ids=["400-temporarily_unavailable", "401-unauthorized_client", "500"],
)
def test_token_errors_other_than_invalid_grant_or_client_are_transient(
    google: GoogleEmulator, provider: GoogleProvider, rule: dict
) -> None:
    """Only a revoked grant or a bad client means needs_reauth (PROTOCOLS), whatever the status."""
    _, rt = _account(google)
    google.add_fault(path="^/token$", times=-1, **rule)
    with pytest.raises(ProviderUnavailable) as transient:
        provider.refresh(_creds(rt))
    assert rule["error"] in transient.value.message and rt not in transient.value.message


def test_calendar_list_pages(google: GoogleEmulator, provider: GoogleProvider) -> None:
    email, rt = _account(google)
    for i in range(300):  # more than one page of 250
        google.add_calendar(email, summary=f"Team {i}", access_role="reader")
    token = provider.refresh(_creds(rt)).access_token
    google.clear_requests()
    calendars = provider.list_calendars(token)
    assert len(calendars) == 301
    primary = [c for c in calendars if c.is_primary]
    assert [c.id for c in primary] == [email] and primary[0].can_edit
    assert len([r for r in google.requests() if "calendarList" in r["path"]]) == 2


def test_full_then_incremental_sync_with_moves_cancellations_and_series(
    google: GoogleEmulator, provider: GoogleProvider
) -> None:
    email, rt = _account(google)
    token = provider.refresh(_creds(rt)).access_token
    start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=15, minute=0, second=0, microsecond=0)
    meet = google.add_event(
        email,
        email,
        start=start.isoformat(),
        end=(start + timedelta(hours=1)).isoformat(),
        summary="Sync",
        meet=True,
    )
    series = google.add_event(
        email,
        email,
        start=(start + timedelta(hours=3)).isoformat(),
        end=(start + timedelta(hours=3, minutes=30)).isoformat(),
        summary="Weekly",
        description="Join https://acme.zoom.us/j/123456789",
        recurrence=["RRULE:FREQ=WEEKLY;COUNT=3"],
    )
    full = provider.sync_calendar(token, email, cursor=None, window=_window())
    assert full.full and full.cursor
    by_id = {e.platform_id: e for e in full.upserts}
    assert by_id[meet["id"]].meeting_platform == "google_meet"
    instances = [e for e in full.upserts if e.series_platform_id == series["id"]]
    assert len(instances) == 3
    assert all(e.meeting_platform == "zoom" and e.recurrence_rule for e in instances)
    assert full.detail_fetches == 1  # the master once per series, not once per instance

    google.update_event(meet["id"], start=(start + timedelta(hours=1)).isoformat())
    google.cancel_event(instances[1].platform_id)
    inc = provider.sync_calendar(token, email, cursor=full.cursor, window=_window())
    assert not inc.full
    moved = {e.platform_id: e for e in inc.upserts}
    assert moved[meet["id"]].start == start + timedelta(hours=1)
    assert instances[1].platform_id in inc.removed

    quiet = provider.sync_calendar(token, email, cursor=inc.cursor, window=_window())
    assert quiet.upserts == [] and quiet.removed == []


def test_an_event_moved_outside_the_window_is_removed(
    google: GoogleEmulator, provider: GoogleProvider
) -> None:
    email, rt = _account(google)
    token = provider.refresh(_creds(rt)).access_token
    start = datetime.now(UTC) + timedelta(days=3)
    ev = google.add_event(email, email, start=start.isoformat(), end=(start + timedelta(hours=1)).isoformat())
    full = provider.sync_calendar(token, email, cursor=None, window=_window())
    far = start + timedelta(days=200)
    google.update_event(ev["id"], start=far.isoformat(), end=(far + timedelta(hours=1)).isoformat())
    inc = provider.sync_calendar(token, email, cursor=full.cursor, window=_window())
    assert inc.removed == [ev["id"]] and inc.upserts == []


def test_expired_sync_token_raises_for_a_full_resync(
    google: GoogleEmulator, provider: GoogleProvider
) -> None:
    email, rt = _account(google)
    token = provider.refresh(_creds(rt)).access_token
    full = provider.sync_calendar(token, email, cursor=None, window=_window())
    google.expire_sync_tokens(email)
    with pytest.raises(SyncTokenExpired):
        provider.sync_calendar(token, email, cursor=full.cursor, window=_window())


def test_rate_limit_403_is_retried_then_given_up(google: GoogleEmulator, provider: GoogleProvider) -> None:
    email, rt = _account(google)
    token = provider.refresh(_creds(rt)).access_token
    google.add_fault(path="/events$", status=403, reason="userRateLimitExceeded", times=2)
    assert provider.sync_calendar(token, email, cursor=None, window=_window()).cursor
    google.add_fault(path="/events$", status=429, times=-1)
    with pytest.raises(ProviderUnavailable):
        provider.sync_calendar(token, email, cursor=None, window=_window())


def test_watch_channel_carries_our_token_and_stops(google: GoogleEmulator, provider: GoogleProvider) -> None:
    email, rt = _account(google)
    token = provider.refresh(_creds(rt)).access_token
    sub = provider.create_subscription(
        token, calendar_id=email, notification_url="http://127.0.0.1:9/hook", client_state="secret-token-1"
    )
    assert sub.handle["resource_id"] and sub.expires_at > datetime.now(UTC) + timedelta(days=6)
    (channel,) = [c for c in google.channels() if c["id"] == sub.id]
    assert channel["token"] == "secret-token-1"
    assert provider.renew_subscription(token, sub.id) is None  # channels cannot be extended
    assert provider.delete_subscription(token, sub.id, handle=sub.handle) is True
    assert provider.delete_subscription(token, sub.id, handle=sub.handle) is False
    assert not google.channels(active_only=True)


@pytest.mark.parametrize("incremental", [False, True])
def test_a_410_on_a_series_master_removes_the_series_and_never_asks_for_a_full_resync(
    google: GoogleEmulator, provider: GoogleProvider, incremental: bool
) -> None:
    """GET events/{master} answering 410 Gone means that one event is deleted, not that our sync token
    died: the listing's instances go (with the master's id, so stored ones go too) and the round ends
    with its sync token, in one listing, full or incremental."""
    email, rt = _account(google)
    token = provider.refresh(_creds(rt)).access_token
    start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=15, minute=0, second=0, microsecond=0)
    single = google.add_event(
        email, email, start=start.isoformat(), end=(start + timedelta(hours=1)).isoformat(), summary="1:1"
    )
    series = google.add_event(
        email,
        email,
        start=(start + timedelta(hours=3)).isoformat(),
        end=(start + timedelta(hours=4)).isoformat(),
        summary="Weekly",
        recurrence=["RRULE:FREQ=WEEKLY;COUNT=3"],
    )
    cursor = None
    if incremental:
        cursor = provider.sync_calendar(token, email, cursor=None, window=_window()).cursor
        google.update_event(series["id"], summary="Weekly (renamed)")  # its instances change
    google.add_fault(path=f"/events/{series['id']}$", status=410, reason="deleted", times=-1)
    google.clear_requests()
    changes = provider.sync_calendar(token, email, cursor=cursor, window=_window())
    assert changes.cursor and changes.full is (not incremental)
    assert all(e.series_platform_id != series["id"] for e in changes.upserts)
    assert series["id"] in changes.removed
    assert len([r for r in changes.removed if r.startswith(series["id"] + "_")]) == 3
    if not incremental:
        assert [e.platform_id for e in changes.upserts] == [single["id"]]
    listings = [r for r in google.requests() if r["path"].endswith("/events")]
    master_gets = [r for r in google.requests() if r["path"].endswith(f"/events/{series['id']}")]
    assert len(listings) == 1 and len(master_gets) == 1  # fetched once, and no resync round


def test_a_huge_meeting_is_fetched_with_max_attendees_and_stored_small(
    google: GoogleEmulator, provider: GoogleProvider
) -> None:
    import json

    from calbot.providers.base import RAW_MAX_BYTES

    email, rt = _account(google)
    token = provider.refresh(_creds(rt)).access_token
    start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=15, minute=0, second=0, microsecond=0)
    crowd = [email] + [f"p{i}@example.org" for i in range(2000)]
    big = google.add_event(
        email,
        email,
        start=start.isoformat(),
        end=(start + timedelta(hours=1)).isoformat(),
        summary="Town hall",
        description="x" * 1_000_000 + " https://acme.zoom.us/j/555666777",
        attendees=crowd,
    )
    google.clear_requests()
    changes = provider.sync_calendar(token, email, cursor=None, window=_window())
    (event,) = [e for e in changes.upserts if e.platform_id == big["id"]]
    assert event.meeting_platform == "zoom"
    assert event.raw.get("attendeesOmitted") is True and [a["email"] for a in event.raw["attendees"]] == [
        email
    ]
    assert len(json.dumps(event.raw)) <= RAW_MAX_BYTES and event.raw["description_truncated"] is True
    listing = [r for r in google.requests() if r["path"].endswith("/events")]
    assert listing and all("maxAttendees=50" in r["query"] for r in listing)
