"""6/8 end to end: Google Calendar as a second provider, mixed with Outlook on one user.

Everything goes over HTTP like a user's curl: connect (create_calendar), events from both providers, a
bot on a Meet event, a moved Google event moving its bot through a real channel notification, forged
channel notifications dropped, an expired sync token recovered, Google credential failures. The
shared connection limit is shown on a stack of its own (limit 2); the renewal job in
tests/service/test_google_connect.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from calbot.scheduler import lead
from tests.e2e.conftest import E2EStack, start_stack, stop_stack

MS_CLIENT_ID = "google-e2e-ms-client"
MS_CLIENT_SECRET = "google-e2e-ms-secret-8d2e"
G_CLIENT_ID = "284-google-e2e.apps.googleusercontent.com"
G_CLIENT_SECRET = "GOCSPX-google-e2e-secret-4c1d"


@pytest.fixture(scope="module", autouse=True)
def apps(e2e: E2EStack) -> None:
    e2e.graph("POST", "/apps", json={"client_id": MS_CLIENT_ID, "client_secret": MS_CLIENT_SECRET})
    e2e.google("POST", "/apps", json={"client_id": G_CLIENT_ID, "client_secret": G_CLIENT_SECRET})


class MixedUser:
    """A user with one Outlook and one Google account, connected through the API."""

    def __init__(self, e2e: E2EStack, tag: str) -> None:
        self.e2e = e2e
        made = e2e.connected_user(MS_CLIENT_ID, MS_CLIENT_SECRET, [f"google.{tag}@contoso.example"])
        self.key, self.user_id = made["key"], made["user_id"]
        self.outlook = made["accounts"][0]
        self.gmail = f"{tag}.rivera@gmail.example"
        acct = e2e.google(
            "POST",
            "/accounts",
            json={
                "email": self.gmail,
                "name": "Sam Rivera",
                "client_id": G_CLIENT_ID,
                "time_zone": "America/New_York",
            },
        ).json()
        self.google_refresh_token = acct["refresh_token"]
        resp = self.connect_google()
        assert resp.status_code == 201, resp.text
        self.connection = resp.json()

    def connect_google(self, **extra: Any) -> Any:
        return self.e2e.api(
            "POST",
            "/calendar/create_calendar",
            key=self.key,
            json={
                "google_client_id": G_CLIENT_ID,
                "google_client_secret": G_CLIENT_SECRET,
                "google_refresh_token": self.google_refresh_token,
                **extra,
            },
        )

    def add_google(self, start: datetime, minutes: int = 60, **extra: Any) -> dict[str, Any]:
        return self.e2e.google(
            "POST",
            f"/accounts/{quote(self.gmail)}/calendars/{quote(self.gmail)}/events",
            json={
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=minutes)).isoformat(),
                **extra,
            },
        ).json()

    def add_outlook(self, start: datetime, **extra: Any) -> dict[str, Any]:
        acct = self.outlook
        return self.e2e.graph(
            "POST",
            f"/accounts/{acct['id']}/calendars/{quote(acct['calendars'][0]['id'], safe='')}/events",
            json={"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat(), **extra},
        ).json()

    def events(self, sync: bool = False, **params: Any) -> list[dict[str, Any]]:
        now = self.e2e.clock_now()
        resp = self.e2e.api(
            "GET",
            "/calendar/events" if sync else "/calendar/get_events",
            key=self.key,
            params={
                "time_min": (now - timedelta(days=1)).isoformat(),
                "time_max": (now + timedelta(days=60)).isoformat(),
                "limit": 100,
                **params,
            },
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["partial_errors"] == {}
        return body["results"]

    def bot(self, bot_id: str) -> dict[str, Any]:
        # Any status: the default listing shows live bots only, and tests look up cancelled ones too.
        bots = self.e2e.api("GET", "/calendar/scheduled_bots", key=self.key, params={"status": "all"}).json()[
            "results"
        ]
        return next(b for b in bots if b["bot_id"] == bot_id)


def _at(e2e: E2EStack, days: int, hour: int) -> datetime:
    return (e2e.clock_now() + timedelta(days=days)).replace(hour=hour, minute=0, second=0, microsecond=0)


def test_one_user_with_outlook_and_google_sees_both_and_a_moved_meet_moves_its_bot(e2e: E2EStack) -> None:
    user = MixedUser(e2e, "mixed")
    conn = user.connection
    assert conn["provider"] == "google" and conn["account_id"] == user.gmail
    assert conn["watch_setup"]["subscriptions"] == 1 and conn["status"] == "active"
    assert conn["webhook_url"].endswith(f"/google/{quote(user.gmail)}")
    listed = e2e.api("GET", "/calendar/connections", key=user.key).json()
    assert listed["total"] == 2
    assert [c["account_id"] for c in listed["connections"]["google"]] == [user.gmail]
    assert len(listed["connections"]["outlook"]) == 1

    # within ARM_WITHIN (36 h) with its move: armed by a schedule, not deferred to the arming job
    start = (e2e.clock_now() + timedelta(hours=26)).replace(minute=0, second=0, microsecond=0)
    meet = user.add_google(start, summary="Design review", meet=True)
    weekly = user.add_google(
        _at(e2e, 3, 14),
        summary="Weekly 1:1",
        description="Join: https://acme.zoom.us/j/5551234567?pwd=abc",
        recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"],
    )
    teams = user.add_outlook(
        _at(e2e, 2, 17),
        subject="Teams sync",
        online_meeting_url="https://teams.microsoft.com/l/meetup-join/19%3ax/0",
    )
    events = user.events(sync=True)
    e2e.settle()
    by_platform = {e["platform_id"]: e for e in events}
    g_event = by_platform[meet["id"]]
    assert g_event["provider"] == "google" and g_event["account_id"] == user.gmail
    assert g_event["meeting_platform"] == "google_meet" and g_event["meeting_url"].startswith(
        "https://meet.google.com/"
    )
    assert by_platform[teams["id"]]["provider"] == "outlook"
    series = [e for e in events if e["series_id"] and e["title"] == "Weekly 1:1"]
    assert len(series) == 4 and all(e["meeting_platform"] == "zoom" and e["is_recurring"] for e in series)
    assert {e["provider"] for e in events} == {"outlook", "google"}
    only_google = user.events(provider="google", account_id=user.gmail)
    assert {e["provider"] for e in only_google} == {"google"}
    assert {e["platform_id"] for e in series} <= {e["platform_id"] for e in only_google}
    assert all(e["platform_id"].startswith(weekly["id"] + "_") for e in series)

    resp = e2e.api(
        "POST",
        f"/calendar/schedule/{g_event['id']}",
        key=user.key,
        json={"bot_config": {"bot_name": "Notetaker"}},
    )
    assert resp.status_code == 201, resp.text
    bot_id = resp.json()["bot_id"]

    # The meeting moves at Google: the channel notification reaches the webhook, the worker syncs only
    # that account, and the bot and its EventBridge schedule follow.
    e2e.google("DELETE", "/notifications")
    e2e.graph("DELETE", "/requests")
    new_start = start + timedelta(hours=2)
    e2e.google(
        "PATCH",
        f"/events/{meet['id']}",
        json={"start": new_start.isoformat(), "end": (new_start + timedelta(hours=1)).isoformat()},
    )
    e2e.settle()
    sent = e2e.google("GET", "/notifications").json()["value"]
    assert sent and all(n["status"] in (200, 202) for n in sent)
    assert {n["headers"]["X-Goog-Resource-State"] for n in sent} == {"exists"}
    bot = user.bot(bot_id)
    assert bot["status"] == "Scheduled"
    assert bot["scheduled_join_time"] == (new_start - timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # the move re-armed it under the next generation's name, its lead before joining (issue 18)
    sched = {s["name"]: s for s in e2e.control("GET", "/schedules")["value"]}[f"launch-{bot_id}-g1"]
    fires = new_start - timedelta(seconds=60) - lead(bot_id)
    assert sched["at"].startswith(fires.strftime("%Y-%m-%dT%H:%M"))
    assert (
        e2e.graph("GET", f"/requests?account={user.outlook['id']}").json()["value"] == []
    )  # Outlook untouched

    # Cancelled at Google: the bot is cancelled.
    e2e.google("POST", f"/events/{meet['id']}/cancel")
    e2e.settle()
    assert user.bot(bot_id)["status"] == "Cancelled"

    # The bot launches for a Google meeting too. A meeting minutes away, so the shared stack's clock
    # barely moves (other suites' meetings must stay ahead of it).
    soon = (e2e.clock_now() + timedelta(minutes=7)).replace(second=0, microsecond=0)
    quick = user.add_google(
        soon, minutes=30, summary="Quick sync", meet="https://meet.google.com/qck-sync-now"
    )
    e2e.settle()  # its channel notification syncs it in
    event = next(e for e in user.events() if e["platform_id"] == quick["id"])
    resp = e2e.api("POST", f"/calendar/schedule/{event['id']}", key=user.key, json={})
    assert resp.status_code == 201, resp.text
    launch_bot = resp.json()["bot_id"]
    e2e.advance(soon)
    launched = next(e for e in user.events() if e["id"] == event["id"])["bots"]
    assert [(b["id"], b["status"]) for b in launched] == [(launch_bot, "Launched")]
    calls = [
        c
        for c in e2e.http.get(f"{e2e.info['bots_url']}/_control/calls", timeout=30).json()["value"]
        if c["body"]["custom_attributes"].get("scheduled_bot_id") == launch_bot
    ]
    assert len(calls) == 1 and calls[0]["body"]["meeting_link"] == "https://meet.google.com/qck-sync-now"


def test_forged_channel_notifications_are_dropped(e2e: E2EStack) -> None:
    user = MixedUser(e2e, "forged")
    (channel,) = [
        c for c in e2e.google("GET", "/channels").json()["value"] if c["address"].endswith(quote(user.gmail))
    ]
    start = _at(e2e, 4, 10)
    user.events(sync=True)
    e2e.settle()  # no sync message of earlier changes is left for the drain below to act on
    e2e.google("POST", "/notifications/pause")
    try:
        user.add_google(start, summary="Quiet change", meet=True)  # nothing will tell us
        e2e.google("DELETE", "/requests")
        url = channel["address"]
        base = {
            "X-Goog-Channel-ID": channel["id"],
            "X-Goog-Resource-ID": channel["resource_id"],
            "X-Goog-Resource-State": "exists",
            "X-Goog-Message-Number": "99",
        }
        forged = [
            {**base, "X-Goog-Channel-Token": "not-the-channel-token"},
            base,  # no token at all
            {**base, "X-Goog-Channel-Token": channel["token"], "X-Goog-Resource-ID": "someone-else"},
            {**base, "X-Goog-Channel-Token": channel["token"], "X-Goog-Channel-ID": "unknown-channel"},
        ]
        for headers in forged:
            resp = e2e.http.post(url, headers=headers, timeout=30)
            assert resp.status_code == 202 and resp.text == ""
        other_user_url = url.replace(f"/users/{user.user_id}/", "/users/usr_someone_else/")
        resp = e2e.http.post(
            other_user_url, headers={**base, "X-Goog-Channel-Token": channel["token"]}, timeout=30
        )
        assert resp.status_code == 202
        e2e.control("POST", "/queues/drain")
        assert e2e.google("GET", "/requests").json()["value"] == []  # nothing synced
        assert "Quiet change" not in {e["title"] for e in user.events() if not e["is_deleted"]}
        # The genuine token (the emulator's own delivery) does trigger the sync.
        resp = e2e.http.post(url, headers={**base, "X-Goog-Channel-Token": channel["token"]}, timeout=30)
        assert resp.status_code == 202
        e2e.control("POST", "/queues/drain")
        assert "Quiet change" in {e["title"] for e in user.events()}
    finally:
        e2e.google("POST", "/notifications/resume")


def test_an_expired_sync_token_recovers_with_a_full_sync(e2e: E2EStack) -> None:
    user = MixedUser(e2e, "gone")
    keep = user.add_google(_at(e2e, 5, 9), summary="Stays", meet=True)
    drop = user.add_google(_at(e2e, 5, 11), summary="Will be deleted", meet=True)
    user.events(sync=True)
    e2e.settle()
    e2e.google("POST", "/notifications/pause")
    try:
        e2e.google("POST", f"/accounts/{quote(user.gmail)}/sync-tokens/expire")
        e2e.google("DELETE", f"/events/{drop['id']}")
        added = user.add_google(_at(e2e, 6, 9), summary="New while the token was dead", meet=True)
        e2e.google("DELETE", "/requests")
        events = user.events(sync=True, provider="google")
        statuses = [
            r["status"] for r in e2e.google("GET", "/requests").json()["value"] if "/events" in r["path"]
        ]
        assert 410 in statuses and statuses[-1] == 200  # the 410 was met and a full sync followed
        titles = {e["title"] for e in events if not e["is_deleted"]}
        assert {"Stays", "New while the token was dead"} <= titles and "Will be deleted" not in titles
        assert keep["id"] in {e["platform_id"] for e in events} and added["id"] in {
            e["platform_id"] for e in events
        }
        # and the next incremental sync works from the new token
        e2e.google("DELETE", "/requests")
        user.events(sync=True, provider="google")
        statuses = [
            r["status"] for r in e2e.google("GET", "/requests").json()["value"] if "/events" in r["path"]
        ]
        assert statuses == [200]
    finally:
        e2e.google("POST", "/notifications/resume")


def test_google_credentials_failures_and_replace(e2e: E2EStack) -> None:
    user = MixedUser(e2e, "creds")
    again = user.connect_google()
    assert again.status_code == 409 and again.json()["error"] == "already_connected"
    replaced = user.connect_google(replace=True)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["watch_setup"]["subscriptions"] == 1  # the live channel was kept
    assert (
        len(
            [
                c
                for c in e2e.google("GET", "/channels?active=true").json()["value"]
                if c["address"].endswith(quote(user.gmail))
            ]
        )
        == 1
    )
    bad = e2e.api(
        "POST",
        "/calendar/create_calendar",
        key=user.key,
        json={
            "google_client_id": G_CLIENT_ID,
            "google_client_secret": "GOCSPX-wrong",
            "google_refresh_token": "1//x",
        },
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_credentials"
    assert "client" in bad.json()["message"].lower()
    # A revoked grant mid-life: the next sync marks the connection needs_reauth, the Outlook one stays fine.
    e2e.google("POST", f"/accounts/{quote(user.gmail)}/revoke", json={})
    e2e.google("POST", "/access-tokens/expire", json={})
    resp = e2e.api("GET", "/calendar/events", key=user.key)
    assert resp.status_code == 200
    errors = resp.json()["partial_errors"]
    assert (
        list(errors) == [f"google::{user.gmail}"]
        and errors[f"google::{user.gmail}"]["error"] == "needs_reauth"
    )
    conns = e2e.api("GET", "/calendar/connections", key=user.key).json()["connections"]
    assert conns["google"][0]["status"] == "needs_reauth" and conns["outlook"][0]["status"] == "active"
    # Re-consent gives a new refresh token; connecting again re-authorizes in place.
    user.google_refresh_token = e2e.google(
        "POST", f"/accounts/{quote(user.gmail)}/refresh-token", json={"client_id": G_CLIENT_ID}
    ).json()["refresh_token"]
    fixed = user.connect_google()
    assert fixed.status_code == 200 and fixed.json()["status"] == "active"


def test_the_connection_limit_counts_google_and_outlook_together(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """On a stack whose limit is 2: one Outlook + one Google fill it; a third of either kind is refused."""
    stack = start_stack(
        tmp_path_factory.mktemp("limit-stack"),
        "--virtual-time",
        "--no-seed",
        "--parameter-overrides",
        "ConnectionLimit=2",
    )
    try:
        stack.graph("POST", "/apps", json={"client_id": MS_CLIENT_ID, "client_secret": MS_CLIENT_SECRET})
        stack.google("POST", "/apps", json={"client_id": G_CLIENT_ID, "client_secret": G_CLIENT_SECRET})
        user = MixedUser(stack, "limit")  # Outlook first, then Google: both 201
        listed = stack.api("GET", "/calendar/connections", key=user.key).json()
        assert (listed["total"], listed["limit"]) == (2, 2)
        extra = stack.google(
            "POST", "/accounts", json={"email": "third.limit@gmail.example", "client_id": G_CLIENT_ID}
        ).json()
        refused = stack.api(
            "POST",
            "/calendar/create_calendar",
            key=user.key,
            json={
                "google_client_id": G_CLIENT_ID,
                "google_client_secret": G_CLIENT_SECRET,
                "google_refresh_token": extra["refresh_token"],
            },
        )
        assert refused.status_code == 400 and refused.json()["error"] == "connection_limit_reached"
        assert refused.json()["message"].startswith(  # names the provider refused (issue 16)
            "Maximum of 2 google calendar connections per user reached"
        )
        ms = stack.graph(
            "POST",
            "/accounts",
            json={
                "client_id": MS_CLIENT_ID,
                "mail": "third.limit@contoso.example",
                "user_principal_name": "third.limit@contoso.example",
            },
        ).json()
        refused = stack.api(
            "POST",
            "/calendar/create_outlook_calendar",
            key=user.key,
            json={
                "microsoft_client_id": MS_CLIENT_ID,
                "microsoft_client_secret": MS_CLIENT_SECRET,
                "microsoft_refresh_token": ms["refresh_token"],
            },
        )
        assert refused.status_code == 400 and refused.json()["error"] == "connection_limit_reached"
        # nothing was left watching for the refused accounts
        assert [
            c
            for c in stack.google("GET", "/channels?active=true").json()["value"]
            if "third.limit" in c["address"]
        ] == []
    finally:
        stop_stack(stack)
