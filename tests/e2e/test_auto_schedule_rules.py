"""Auto-schedule rules end to end, over HTTP on the local stack: PUT the rules, see them in the
settings, and preview one user's Graph and Google meetings (declined, tentative, all-day, internal,
external) with the reason each would or would not get a bot; then enabling gives bots to exactly the
meetings the preview said would get one."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import E2EStack

MS_CLIENT_ID = "rules-e2e-ms-client"
MS_CLIENT_SECRET = "rules-e2e-ms-secret-3b7f"
G_CLIENT_ID = "391-rules-e2e.apps.googleusercontent.com"
G_CLIENT_SECRET = "GOCSPX-rules-e2e-secret-9a2c"
TEAMS = "https://teams.microsoft.com/l/meetup-join/19%3arules{n}%40thread.v2/0"


@pytest.fixture(scope="module", autouse=True)
def apps(e2e: E2EStack) -> None:
    e2e.graph("POST", "/apps", json={"client_id": MS_CLIENT_ID, "client_secret": MS_CLIENT_SECRET})
    e2e.google("POST", "/apps", json={"client_id": G_CLIENT_ID, "client_secret": G_CLIENT_SECRET})


class RulesUser:
    """A user with an Outlook account (contoso.example) and a Google one (gmail.example)."""

    def __init__(self, e2e: E2EStack, tag: str) -> None:
        self.e2e = e2e
        made = e2e.connected_user(MS_CLIENT_ID, MS_CLIENT_SECRET, [f"rules.{tag}@contoso.example"])
        self.key = made["key"]
        self.outlook = made["accounts"][0]
        self.me = self.outlook["mail"]
        self.gmail = f"rules.{tag}@gmail.example"
        acct = e2e.google(
            "POST", "/accounts", json={"email": self.gmail, "name": "Sam", "client_id": G_CLIENT_ID}
        ).json()
        resp = e2e.api(
            "POST",
            "/calendar/create_calendar",
            key=self.key,
            json={
                "google_client_id": G_CLIENT_ID,
                "google_client_secret": G_CLIENT_SECRET,
                "google_refresh_token": acct["refresh_token"],
            },
        )
        assert resp.status_code == 201, resp.text
        self.n = 0

    def at(self, hours: float) -> datetime:
        return (self.e2e.clock_now() + timedelta(hours=hours)).replace(second=0, microsecond=0)

    def outlook_meeting(self, subject: str, hours: float, **extra: Any) -> None:
        self.n += 1
        acct = self.outlook
        start = self.at(hours)
        body = {
            "subject": subject,
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=30)).isoformat(),
            "online_meeting_url": TEAMS.format(n=self.n),
            **extra,
        }
        cal = quote(acct["calendars"][0]["id"], safe="")
        resp = self.e2e.graph("POST", f"/accounts/{acct['id']}/calendars/{cal}/events", json=body)
        assert resp.status_code in (200, 201), resp.text

    def google_meeting(self, summary: str, hours: float, **extra: Any) -> None:
        start = self.at(hours)
        body = {
            "summary": summary,
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=30)).isoformat(),
            "meet": True,
            **extra,
        }
        path = f"/accounts/{quote(self.gmail)}/calendars/{quote(self.gmail)}/events"
        resp = self.e2e.google("POST", path, json=body)
        assert resp.status_code in (200, 201), resp.text

    def sync(self) -> None:
        now = self.e2e.clock_now()
        resp = self.e2e.api(
            "GET",
            "/calendar/events",
            key=self.key,
            params={"time_min": now.isoformat(), "time_max": (now + timedelta(days=2)).isoformat()},
        )
        assert resp.status_code == 200 and resp.json()["partial_errors"] == {}, resp.text

    def preview(self, hours: int = 24) -> dict[str, dict[str, Any]]:
        resp = self.e2e.api("GET", "/calendar/auto-schedule/preview", key=self.key, params={"hours": hours})
        assert resp.status_code == 200, resp.text
        return {r["title"]: r for r in resp.json()["results"]}


def test_rules_settings_and_preview_on_graph_and_google(e2e: E2EStack) -> None:
    user = RulesUser(e2e, "main")
    user.outlook_meeting(
        "Graph declined review",
        2,
        organizer="boss@contoso.example",
        attendees=[{"address": user.me, "response": "declined"}, "client@customer.example"],
    )
    user.outlook_meeting("Graph internal standup", 3, attendees=["colleague@contoso.example"])
    user.outlook_meeting("Graph external customer call", 4, attendees=["buyer@customer.example"])
    user.google_meeting(
        "Google tentative partner sync",
        5,
        organizer={"email": "pat@partner.example", "name": "Pat"},
        attendees=[
            {"email": "pat@partner.example", "responseStatus": "accepted"},
            {"email": user.gmail, "responseStatus": "tentative"},
        ],
    )
    day = (user.at(24)).date()
    user.google_meeting(
        "Google all-day offsite",
        0,
        all_day=True,
        start=day.isoformat(),
        end=(day + timedelta(days=1)).isoformat(),
    )
    user.google_meeting(
        "Google internal 1:1", 6, attendees=[{"email": user.gmail}, {"email": "ann@contoso.example"}]
    )
    user.google_meeting(
        "Google external demo", 7, attendees=[{"email": user.gmail}, {"email": "x@prospect.example"}]
    )
    user.sync()

    # The event rows show the attendance the rules read.
    now = e2e.clock_now()
    rows = e2e.api(
        "GET",
        "/calendar/get_events",
        key=user.key,
        params={"time_min": now.isoformat(), "time_max": (now + timedelta(days=2)).isoformat()},
    ).json()["results"]
    declined = next(r for r in rows if r["title"] == "Graph declined review")
    assert declined["response_status"] == "declined" and declined["attendees_count"] == 2
    assert declined["organizer"] == {"email": "boss@contoso.example", "name": "boss"}
    tentative = next(r for r in rows if r["title"] == "Google tentative partner sync")
    assert tentative["response_status"] == "tentative"
    assert tentative["organizer"] == {"email": "pat@partner.example", "name": "Pat"}

    # Defaults: declined and all-day are left out, the rest matches.
    reasons = {t: (r["would_schedule"], r["reason"]) for t, r in user.preview(48).items()}
    assert reasons == {
        "Graph declined review": (False, "declined"),
        "Graph internal standup": (True, "matched"),
        "Graph external customer call": (True, "matched"),
        "Google tentative partner sync": (True, "matched"),
        "Google all-day offsite": (False, "all_day"),
        "Google internal 1:1": (True, "matched"),
        "Google external demo": (True, "matched"),
    }

    rules = {"meetings": "external", "skip_tentative": True}
    resp = e2e.api("PUT", "/calendar/auto-schedule/rules", key=user.key, json=rules)
    assert resp.status_code == 200, resp.text
    assert resp.json()["rules"]["meetings"] == "external" and resp.json()["enabled"] is False
    settings = e2e.api("GET", "/calendar/auto-schedule/settings", key=user.key).json()
    assert settings["rules"] == resp.json()["rules"]
    assert settings["rules"]["skip_tentative"] is True and settings["rules"]["skip_declined"] is True

    preview = user.preview(48)
    reasons = {t: (r["would_schedule"], r["reason"]) for t, r in preview.items()}
    assert reasons == {
        "Graph declined review": (False, "declined"),
        "Graph internal standup": (False, "internal"),
        "Graph external customer call": (True, "matched"),
        "Google tentative partner sync": (False, "tentative"),
        "Google all-day offsite": (False, "all_day"),
        "Google internal 1:1": (False, "internal"),  # contoso.example is the user's own (Outlook) domain
        "Google external demo": (True, "matched"),
    }
    assert {r["provider"] for r in preview.values()} == {"outlook", "google"}

    # Enabling runs the same evaluator: bots for exactly the meetings the preview said.
    resp = e2e.api("POST", "/calendar/auto-schedule/enable", key=user.key, json={})
    assert resp.status_code == 200 and resp.json()["rules"]["meetings"] == "external"
    bots = e2e.api("GET", "/calendar/scheduled_bots", key=user.key, params={"status": "Scheduled"}).json()
    assert {b["title"] for b in bots["results"]} == {t for t, (yes, _) in reasons.items() if yes}
    after = user.preview(48)
    assert {t for t, r in after.items() if r["reason"] == "has_bot"} == {
        "Graph external customer call",
        "Google external demo",
    }


def test_bad_rules_and_preview_hours_are_json_400s(e2e: E2EStack) -> None:
    user = RulesUser(e2e, "bad")
    for body in ({"meetings": "mine"}, {"platforms": ["skype"]}, {"min_duration_minutes": -5}):
        resp = e2e.api("PUT", "/calendar/auto-schedule/rules", key=user.key, json=body)
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_request", resp.text
    for hours in (0, 169):
        resp = e2e.api("GET", "/calendar/auto-schedule/preview", key=user.key, params={"hours": hours})
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_request", resp.text
    settings = e2e.api("GET", "/calendar/auto-schedule/settings", key=user.key).json()
    assert settings["rules"]["meetings"] == "all"  # nothing was stored
