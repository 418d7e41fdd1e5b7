"""4/8 end to end: auto-scheduling through the real midnight job (run by the local clock), the SQS
fan-out and the worker, against two accounts, a manual schedule, a failing provider, and disabling."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import E2EStack

CLIENT_ID = "auto-e2e-client"
CLIENT_SECRET = "auto-e2e-secret-4471"
DEFAULT = {"bot_name": "Auto Notetaker", "audio_required": True}


@pytest.fixture(scope="module", autouse=True)
def app_registration(e2e: E2EStack) -> None:
    e2e.graph("POST", "/apps", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})


def run_midnight_job(e2e: E2EStack) -> dict[str, Any]:
    result = e2e.control("POST", "/cron/AutoScheduleJobFunction")
    assert result["ok"], result
    e2e.control("POST", "/queues/drain")
    return result["result"]


class User:
    def __init__(self, e2e: E2EStack, tag: str, n_accounts: int = 2) -> None:
        self.e2e = e2e
        made = e2e.connected_user(
            CLIENT_ID, CLIENT_SECRET, [f"auto.{tag}.{i}@acme.example" for i in range(n_accounts)]
        )
        self.key, self.user_id, self.accounts = made["key"], made["user_id"], made["accounts"]

    def meeting(self, subject: str, hours: float, account: int = 0, **extra: Any) -> dict[str, Any]:
        acct = self.accounts[account]
        start = (self.e2e.clock_now() + timedelta(hours=hours)).replace(second=0, microsecond=0)
        return self.e2e.graph(
            "POST",
            f"/accounts/{acct['id']}/calendars/{quote(acct['calendars'][0]['id'], safe='')}/events",
            json={
                "subject": subject,
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=30)).isoformat(),
                **extra,
            },
        ).json()

    def events(self) -> dict[str, dict[str, Any]]:
        now = self.e2e.clock_now()
        body = self.e2e.api(
            "GET",
            "/calendar/events",
            key=self.key,
            params={
                "time_min": now.isoformat(),
                "time_max": (now + timedelta(days=3)).isoformat(),
                "limit": 100,
            },
        ).json()
        return {e["title"]: e for e in body["results"]}

    def bots(self) -> list[dict[str, Any]]:
        return self.e2e.api(
            "GET", "/calendar/scheduled_bots", key=self.key, params={"status": "Scheduled"}
        ).json()["results"]


def test_every_linked_meeting_in_24h_gets_exactly_one_bot(e2e: E2EStack) -> None:
    user = User(e2e, "main")
    user.meeting(
        "Teams A", 3, online_meeting_url="https://teams.microsoft.com/l/meetup-join/19%3aautoa%40t/0"
    )
    user.meeting("Zoom B", 5, account=1, location="https://acme.zoom.us/j/4242")
    user.meeting("Meet C", 20, account=1, body_html="<p>https://meet.google.com/abc-defg-hij</p>")
    user.meeting("No link", 6)
    user.meeting("Too far", 30, online_meeting_url="https://teams.microsoft.com/l/meetup-join/19%3afar%40t/0")
    manual_ev = user.meeting("Manual D", 8, location="https://acme.webex.com/meet/manual")
    manual = e2e.api(
        "POST",
        f"/calendar/schedule/{user.events()['Manual D']['id']}",
        key=user.key,
        json={"bot_config": {"bot_name": "Hand picked"}},
    )
    assert manual.status_code == 201
    del manual_ev

    enabled = e2e.api(
        "POST",
        "/calendar/auto-schedule/enable",
        key=user.key,
        json={"default_bot_config": DEFAULT, "join_offset_seconds": 60},
    )
    assert enabled.status_code == 200, enabled.text
    body = enabled.json()
    assert body["enabled"] is True and body["default_bot_config"] == DEFAULT
    assert body["last_run"]["scheduled"] == 3 and body["last_run"]["skipped_existing"] == 1
    assert body["last_run"]["skipped_no_link"] == 1

    # The midnight job, twice, and concurrently with a manual schedule: never a second bot.
    ev = user.events()
    with ThreadPoolExecutor(2) as pool:
        job = pool.submit(run_midnight_job, e2e)
        late = pool.submit(
            lambda: e2e.api(
                "POST",
                f"/calendar/schedule/{ev['Teams A']['id']}",
                key=user.key,
                json={"bot_config": {"bot_name": "Late manual"}},
            )
        )
        assert job.result()["failed"] == 0 and late.result().status_code == 201  # manual wins over auto
    run_midnight_job(e2e)

    ev = user.events()
    by_title = {t: e["bots"] for t, e in ev.items()}
    assert all(len(by_title[t]) == 1 for t in ("Teams A", "Zoom B", "Meet C", "Manual D")), by_title
    assert by_title["No link"] == [] and "Too far" not in by_title or by_title["Too far"] == []
    bots = {b["title"]: b for b in user.bots()}
    assert bots["Zoom B"]["source"] == "auto" and bots["Zoom B"]["bot_config"] == DEFAULT
    assert bots["Meet C"]["bot_config"] == DEFAULT
    assert (
        bots["Manual D"]["source"] == "manual" and bots["Manual D"]["bot_config"]["bot_name"] == "Hand picked"
    )
    assert (
        bots["Teams A"]["source"] == "manual" and bots["Teams A"]["bot_config"]["bot_name"] == "Late manual"
    )
    settings = e2e.api("GET", "/calendar/auto-schedule/settings", key=user.key).json()
    assert settings["last_run"]["scheduled"] == 0 and settings["last_run"]["skipped_existing"] == 4

    # Disabled: a new meeting gets no bot from the job; existing bots stay.
    assert e2e.api("POST", "/calendar/auto-schedule/disable", key=user.key).json()["enabled"] is False
    user.meeting("After disable", 10, location="https://acme.zoom.us/j/999")
    run_midnight_job(e2e)
    assert user.events()["After disable"]["bots"] == []
    assert len(user.bots()) == 4


def test_one_users_failing_provider_does_not_stop_the_others(e2e: E2EStack) -> None:
    good, bad, revoked = User(e2e, "good", 1), User(e2e, "bad", 1), User(e2e, "revoked", 1)
    for user in (good, bad, revoked):
        user.meeting("Linked", 4, location="https://acme.zoom.us/j/1234")
        assert (
            e2e.api(
                "POST", "/calendar/auto-schedule/enable", key=user.key, json={"default_bot_config": DEFAULT}
            ).status_code
            == 200
        )
    good.meeting("New for good", 6, location="https://acme.zoom.us/j/5678")
    bad.meeting("New for bad", 6, location="https://acme.zoom.us/j/5679")
    e2e.graph(
        "POST",
        "/faults",
        json={"path": "calendarView/delta", "account": bad.accounts[0]["id"], "status": 503, "times": -1},
    )
    e2e.graph("POST", f"/accounts/{revoked.accounts[0]['id']}/revoke", json={"code": 70008})
    e2e.graph("POST", "/access-tokens/expire", json={"account": revoked.accounts[0]["id"]})
    try:
        run_midnight_job(e2e)
    finally:
        e2e.graph("DELETE", "/faults")
    assert {b["title"] for b in good.bots()} == {"Linked", "New for good"}
    bad_run = e2e.api("GET", "/calendar/auto-schedule/settings", key=bad.key).json()["last_run"]
    assert "provider_unavailable" in str(bad_run["partial_errors"])
    revoked_run = e2e.api("GET", "/calendar/auto-schedule/settings", key=revoked.key).json()["last_run"]
    assert "needs_reauth" in str(revoked_run["partial_errors"])
