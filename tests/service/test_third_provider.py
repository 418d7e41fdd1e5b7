"""A third calendar provider, defined here and nowhere else, works end to end through the registry.

"FakeCal" is a made-up provider with its own connect fields (`fakecal_*`), its own aliases, its own
notification format (a JSON body naming the watch and its secret) and its own opaque subscription
handle. Its API is a small in-process fake (`FakeCalApi`). Registered from this module only, it
connects through the API (POST /calendar/create_calendar), is listed in its own group, syncs, gets a
bot scheduled, and a change notification to the webhook re-syncs it (the bot follows the moved
event); disconnecting stops its watches with the handle it made. Nothing outside this file knows it.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import Field
from werkzeug.test import Client

from calbot import store, vault
from calbot.admin import create_user
from calbot.auth import issue_api_key
from calbot.models import CalendarInfo, Credentials, Handle
from calbot.providers import registry
from calbot.providers.base import (
    AccountProfile,
    CalendarChanges,
    CalendarProvider,
    NormalizedEvent,
    ProviderAuthError,
    ProviderSubscription,
    TokenSet,
)
from calbot.timeutil import iso_z, now
from local.stack import LocalStack

NAME = "fakecal"
_n = itertools.count()


# --------------------------------------------------------------------------------------------------
# The provider's API: a tiny in-process fake


@dataclass
class FakeEvent:
    id: str
    title: str
    start: datetime
    end: datetime
    meeting_url: str | None
    version: int
    deleted: bool = False


@dataclass
class Watch:
    id: str
    account: str
    calendar_id: str
    url: str
    secret: str
    key: str  # what the API needs to stop it: our handle keeps it
    stopped: bool = False


@dataclass
class FakeCalApi:
    apps: dict[str, str] = field(default_factory=dict)  # client id -> secret
    grants: dict[str, str] = field(default_factory=dict)  # refresh token -> account email
    tokens: dict[str, str] = field(default_factory=dict)  # access token -> account email
    events: dict[str, dict[str, FakeEvent]] = field(default_factory=dict)  # account -> id -> event
    watches: dict[str, Watch] = field(default_factory=dict)
    version: int = 0
    sent: int = 0

    def add_account(self, client_id: str) -> tuple[str, str]:
        email = f"fc{next(_n)}@fakecal.example"
        refresh = f"frt_{secrets.token_hex(8)}"
        self.grants[refresh] = email
        self.events[email] = {}
        return email, refresh

    def put_event(self, account: str, event_id: str, start: datetime, **changes: Any) -> FakeEvent:
        self.version += 1
        event = FakeEvent(
            id=event_id,
            title=changes.get("title", "FakeCal sync"),
            start=start,
            end=start + timedelta(hours=1),
            meeting_url=changes.get("meeting_url", "https://zoom.us/j/1234567890"),
            version=self.version,
        )
        self.events[account][event_id] = event
        return event

    def account_of(self, access_token: str) -> str:
        account = self.tokens.get(access_token)
        if account is None:
            raise ProviderAuthError("FakeCal refused the access token.", kind="unauthorized")
        return account

    def notify(self, gateway: Any, account: str) -> list[int]:
        """What FakeCal sends when an account's calendar changed: one POST per live watch."""
        answers = []
        for watch in self.watches.values():
            if watch.account == account and not watch.stopped:
                self.sent += 1
                body = {"watch": watch.id, "secret": watch.secret, "seq": self.sent}
                answers.append(Client(gateway).post(urlsplit(watch.url).path, json=body).status_code)
        return answers


API = FakeCalApi()


class FakeCalProvider(CalendarProvider):
    name = NAME
    display_name = "FakeCal"
    scopes = "calendar.read"

    def __init__(self, api: FakeCalApi) -> None:
        self.api = api

    def refresh(self, creds: Credentials) -> TokenSet:
        if self.api.apps.get(creds.client_id) != creds.client_secret:
            raise ProviderAuthError("FakeCal does not know this app.", kind="invalid_client")
        account = self.api.grants.get(creds.refresh_token)
        if account is None:
            raise ProviderAuthError("FakeCal refused the refresh token.", kind="invalid_grant")
        access = f"fat_{secrets.token_hex(8)}"
        self.api.tokens[access] = account
        return TokenSet(access, None, now() + timedelta(hours=1), self.scopes)

    def profile(self, access_token: str) -> AccountProfile:
        account = self.api.account_of(access_token)
        return AccountProfile(account_id=account, email=account, name="Fake User", provider_user_id=account)

    def list_calendars(self, access_token: str) -> list[CalendarInfo]:
        account = self.api.account_of(access_token)
        return [CalendarInfo(id="main", name="Main", is_primary=True, owner_email=account)]

    def sync_calendar(
        self, access_token: str, calendar_id: str, *, cursor: str | None, window: tuple[datetime, datetime]
    ) -> CalendarChanges:
        account = self.api.account_of(access_token)
        since = int(cursor) if cursor else 0
        changes = CalendarChanges(upserts=[], removed=[], cursor=str(self.api.version), full=cursor is None)
        for event in self.api.events[account].values():
            if event.version <= since or (cursor is None and not window[0] <= event.start < window[1]):
                continue
            if event.deleted:
                changes.removed.append(event.id)
                continue
            changes.upserts.append(
                NormalizedEvent(
                    platform_id=event.id,
                    calendar_id=calendar_id,
                    start=event.start,
                    end=event.end,
                    title=event.title,
                    meeting_url=event.meeting_url,
                    meeting_platform="zoom" if event.meeting_url else None,
                )
            )
        return changes

    def create_subscription(
        self, access_token: str, *, calendar_id: str, notification_url: str, client_state: str
    ) -> ProviderSubscription:
        account = self.api.account_of(access_token)
        watch = Watch(
            f"w{next(_n)}", account, calendar_id, notification_url, client_state, secrets.token_hex(4)
        )
        self.api.watches[watch.id] = watch
        return ProviderSubscription(watch.id, calendar_id, now() + timedelta(days=3), {"key": watch.key})

    def get_subscription(self, access_token: str, known: ProviderSubscription) -> ProviderSubscription | None:
        watch = self.api.watches.get(known.id)
        return None if watch is None or watch.stopped else known

    def renew_subscription(self, access_token: str, subscription_id: str) -> ProviderSubscription | None:
        return None

    def delete_subscription(self, access_token: str, subscription_id: str, *, handle: Handle) -> bool:
        watch = self.api.watches.get(subscription_id)
        if watch is None or watch.stopped or handle.get("key") != watch.key:
            return False  # FakeCal stops a watch only by its key, which only our handle holds
        watch.stopped = True
        return True


# --------------------------------------------------------------------------------------------------
# Its entry in the registry


class FakeCalFields(registry.CredentialFields):
    required = ("fakecal_client_id", "fakecal_client_secret", "fakecal_refresh_token")

    fakecal_client_id: str | None = Field(default=None, min_length=1, max_length=64)
    fakecal_client_secret: str | None = Field(default=None, min_length=1, max_length=256)
    fakecal_refresh_token: str | None = Field(default=None, pattern=r"^frt_[0-9a-f]{16}$")

    def credentials(self) -> dict[str, str]:
        return {
            "client_id": self.fakecal_client_id or "",
            "client_secret": self.fakecal_client_secret or "",
            "refresh_token": self.fakecal_refresh_token or "",
        }


def verify(notice: registry.Notice, lookup: registry.Lookup) -> registry.Verdict:
    """FakeCal posts {"watch", "secret", "seq"}: the watch must be this account's, with its own secret."""
    body = notice.body or {}
    watch_id = str(body.get("watch", ""))[:64]
    sub = lookup([watch_id]).get(watch_id) if watch_id else None
    if sub is None or not registry.owns(sub, notice, body.get("secret")):
        return registry.Verdict(dropped=1)
    change = registry.Change(sub.account_id, dedup=registry.digest(sub.id, body.get("seq")))
    return registry.Verdict(accepted=1, changes=[change])


SPEC = registry.ProviderSpec(
    name=NAME,
    aliases=("fake-cal", "fc"),
    credentials=FakeCalFields,
    factory=lambda: FakeCalProvider(API),
    verify=verify,
)


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> Iterator[LocalStack]:
    registry.register(SPEC)
    API.apps["fc-app"] = "fc-secret"
    yield inproc_stack
    registry.unregister(NAME)


@pytest.fixture()
def user(stack: LocalStack) -> tuple[str, dict[str, str]]:
    user_id = create_user(f"fc{next(_n)}@example.com").user_id
    key, _ = issue_api_key(user_id)
    return user_id, {"Authorization": f"Token {key}"}


def fields(refresh_token: str, **extra: Any) -> dict[str, Any]:
    return {
        "fakecal_client_id": "fc-app",
        "fakecal_client_secret": "fc-secret",
        "fakecal_refresh_token": refresh_token,
        **extra,
    }


def api(stack: LocalStack) -> Client:
    return Client(stack.gateway)


# --------------------------------------------------------------------------------------------------


def test_a_third_provider_connects_syncs_schedules_and_resyncs_on_its_notification(
    stack: LocalStack, user: tuple[str, dict[str, str]]
) -> None:
    user_id, auth = user
    account, refresh = API.add_account("fc-app")
    start = (now() + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    API.put_event(account, "ev1", start)

    created = api(stack).post("/api/v1/calendar/create_calendar", json=fields(refresh), headers=auth)
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.json["provider"] == NAME and created.json["account_id"] == account
    assert created.json["watch_setup"]["subscriptions"] == 1
    conn = store.get_connection(user_id, NAME, account)
    assert conn is not None and conn.webhook_url.endswith(f"/{NAME}/{account.replace('@', '%40')}")
    creds = vault.get(conn.credential_path)  # built from FakeCal's own fields
    assert (creds.provider, creds.client_id, creds.refresh_token) == (NAME, "fc-app", refresh)
    (ref,) = conn.subscriptions
    assert ref.handle == {"key": API.watches[ref.id].key}  # the provider's handle, stored as it made it

    # Syncs (GET /calendar/events syncs, then reads) and schedules a bot on the synced event.
    events = api(stack).get(f"/api/v1/calendar/events?provider=fc&account_id={account}", headers=auth)
    assert events.status_code == 200, events.get_data(as_text=True)
    (event,) = events.json["results"]
    assert (event["provider"], event["platform_id"], event["meeting_platform"]) == (NAME, "ev1", "zoom")
    scheduled = api(stack).post(
        f"/api/v1/calendar/schedule/{event['id']}", json={"bot_config": {"bot_name": "Fake"}}, headers=auth
    )
    assert scheduled.status_code == 201, scheduled.get_data(as_text=True)
    assert scheduled.json["scheduled_join_time"] == iso_z(start - timedelta(seconds=60))

    # The meeting moves at FakeCal; its notification re-syncs the account and the bot follows.
    moved = start + timedelta(hours=3)
    API.put_event(account, "ev1", moved)
    assert API.notify(stack.gateway, account) == [202]
    stack.clock.drain()
    events = api(stack).get("/api/v1/calendar/get_events?provider=fakecal", headers=auth)
    assert [e["start_time"] for e in events.json["results"]] == [iso_z(moved)]
    bots = api(stack).get(
        f"/api/v1/calendar/scheduled_bots?provider=FakeCal&account_id={account}", headers=auth
    )
    assert bots.status_code == 200, bots.get_data(as_text=True)
    assert [b["scheduled_join_time"] for b in bots.json["results"]] == [iso_z(moved - timedelta(seconds=60))]

    # A forged notification (wrong secret) is dropped with the same answer, and syncs nothing.
    API.put_event(account, "ev1", moved + timedelta(hours=1))
    (watch,) = [w for w in API.watches.values() if w.account == account]
    forged = {"watch": watch.id, "secret": "not-the-secret", "seq": 999}
    assert api(stack).post(urlsplit(watch.url).path, json=forged).status_code == 202
    stack.clock.drain()
    events = api(stack).get("/api/v1/calendar/get_events?provider=fakecal", headers=auth)
    assert [e["start_time"] for e in events.json["results"]] == [iso_z(moved)]

    # Disconnecting stops its watch at FakeCal, addressed by the handle it made.
    gone = api(stack).delete(f"/api/v1/calendar/connections/fake-cal/{account}", headers=auth)
    assert gone.status_code == 200, gone.get_data(as_text=True)
    assert gone.json["subscriptions_stopped"] == 1 and API.watches[watch.id].stopped


def test_list_connections_groups_every_registered_provider(
    stack: LocalStack, user: tuple[str, dict[str, str]]
) -> None:
    user_id, auth = user
    listed = api(stack).get("/api/v1/calendar/connections", headers=auth)
    assert listed.status_code == 200
    assert listed.json["connections"] == {"outlook": [], "google": [], NAME: []}
    account, refresh = API.add_account("fc-app")
    assert (
        api(stack).post("/api/v1/calendar/create_calendar", json=fields(refresh), headers=auth).status_code
        == 201
    )
    listed = api(stack).get("/api/v1/calendar/connections", headers=auth).json
    assert [c["account_id"] for c in listed["connections"][NAME]] == [account] and listed["total"] == 1
    assert listed["connections"]["outlook"] == listed["connections"]["google"] == []
    for alias in ("fakecal", "FC", "fake-cal"):
        one = api(stack).get(f"/api/v1/calendar/connections/{alias}/{account}", headers=auth)
        assert one.status_code == 200 and one.json["provider"] == NAME
    assert api(stack).get(f"/api/v1/calendar/connections/fakecalx/{account}", headers=auth).status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        fields("not-a-fakecal-token"),  # its own pattern
        fields("frt_0123456789abcdef", fakecal_client_secret=None),  # all three are required
        {"fakecal_client_id": "fc-app"},
        fields("frt_0123456789abcdef", google_client_id="g"),  # one provider per request
        fields("frt_0123456789abcdef", fakecal_tenant="x"),  # a field no provider declares
    ],
    ids=["pattern", "secret-null", "incomplete", "two-providers", "unknown-field"],
)
def test_its_credential_fields_are_validated_with_a_400(
    stack: LocalStack, user: tuple[str, dict[str, str]], body: dict[str, Any]
) -> None:
    _, auth = user
    resp = api(stack).post("/api/v1/calendar/create_calendar", json=body, headers=auth)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.json["error"] == "invalid_request"
    text = json.dumps(resp.json)
    assert "fc-secret" not in text and "not-a-fakecal-token" not in text  # input is never echoed
