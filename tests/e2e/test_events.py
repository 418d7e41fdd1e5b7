"""2/8 end to end: sync and read events over HTTP against the local stack, with the Graph emulator's
request log as the witness of what was (and was not) called."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import E2EStack

CLIENT_ID = "events-e2e-client"
CLIENT_SECRET = "events-e2e-secret-31ab"
BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)


def at(hours: float) -> str:
    return (BASE + timedelta(hours=hours)).isoformat()


@pytest.fixture(scope="module", autouse=True)
def app_registration(e2e: E2EStack) -> None:
    e2e.graph("POST", "/apps", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})


class Account:
    def __init__(self, e2e: E2EStack, mail: str) -> None:
        self.e2e, self.mail = e2e, mail
        made = e2e.graph(
            "POST", "/accounts", json={"client_id": CLIENT_ID, "mail": mail, "user_principal_name": mail}
        ).json()
        self.id, self.refresh_token, self.calendar = (
            made["id"],
            made["refresh_token"],
            made["calendars"][0]["id"],
        )

    def add(self, subject: str, start: str, end: str, **extra: Any) -> dict[str, Any]:
        return self.e2e.graph(
            "POST",
            f"/accounts/{self.id}/calendars/{quote(self.calendar, safe='')}/events",
            json={"subject": subject, "start": start, "end": end, **extra},
        ).json()

    def requests(self) -> list[dict[str, Any]]:
        return self.e2e.graph("GET", f"/requests?account={self.id}").json()["value"]


def new_user(e2e: E2EStack, *mails: str) -> tuple[str, list[Account]]:
    key = e2e.admin("create-user", "--with-key")["api_key"]
    accounts = [Account(e2e, m) for m in mails]
    for acct in accounts:
        resp = e2e.api(
            "POST",
            "/calendar/create_outlook_calendar",
            key=key,
            json={
                "microsoft_client_id": CLIENT_ID,
                "microsoft_client_secret": CLIENT_SECRET,
                "microsoft_refresh_token": acct.refresh_token,
            },
        )
        assert resp.status_code == 201, resp.text
    return key, accounts


def events(e2e: E2EStack, key: str, path: str = "/calendar/events", **params: Any) -> dict[str, Any]:
    resp = e2e.api("GET", path, key=key, params={"time_min": at(-1), "time_max": at(24 * 30), **params})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_two_accounts_overlapping_meetings_and_scoping(e2e: E2EStack) -> None:
    key, (work, home) = new_user(e2e, "overlap.work@acme.example", "overlap.home@outlook.example")
    w = work.add(
        "Standup", at(0), at(1), online_meeting_url="https://teams.microsoft.com/l/meetup-join/19%3ax%40t/0"
    )
    h = home.add("Dentist call", at(0.5), at(1.5), location="https://us02web.zoom.us/j/85551234567?pwd=xyz")
    work.add("Offsite", at(48)[:10], at(72)[:10], is_all_day=True)

    body = events(e2e, key)
    assert body["partial_errors"] == {} and body["has_more"] is False and body["next"] is None
    rows = body["results"]
    assert [r["title"] for r in rows] == ["Standup", "Dentist call", "Offsite"]  # by start time
    by_platform = {r["platform_id"]: r for r in rows}
    assert by_platform[w["id"]]["account_id"] == "overlap.work@acme.example"
    assert by_platform[h["id"]]["account_id"] == "overlap.home@outlook.example"
    assert (
        by_platform[w["id"]]["meeting_platform"] == "teams"
        and by_platform[h["id"]]["meeting_platform"] == "zoom"
    )
    assert all(r["provider"] == "outlook" and r["start_time"].endswith("Z") and r["bots"] == [] for r in rows)
    assert by_platform[w["id"]]["start_time"] == BASE.strftime("%Y-%m-%dT%H:%M:%SZ")
    allday = next(r for r in rows if r["is_all_day"])
    assert allday["start_time"].endswith("T00:00:00Z") and "raw" not in allday or allday["raw"] is None
    assert len({r["id"] for r in rows}) == 3 and all(r["id"].startswith("evt_") for r in rows)

    # Scoped to one account: only that account is called at the emulator, only its events come back.
    e2e.settle()  # notification-driven syncs of earlier changes must not land in the request log below
    e2e.graph("DELETE", "/requests")
    work.add("Late addition", at(3), at(4))
    scoped = events(e2e, key, provider="microsoft", account_id="OVERLAP.WORK@acme.example")
    assert {r["account_id"] for r in scoped["results"]} == {"overlap.work@acme.example"}
    assert "Late addition" in [r["title"] for r in scoped["results"]]
    assert home.requests() == [] and work.requests()
    # Stable ids across syncs; raw only on request.
    again = events(e2e, key, include_raw="true")
    assert {r["id"] for r in again["results"]} >= {r["id"] for r in rows}
    assert all(isinstance(r["raw"], dict) for r in again["results"])


def test_paging_230_events_with_limit_50_returns_each_exactly_once(e2e: E2EStack) -> None:
    key, (acct,) = new_user(e2e, "busy.calendar@acme.example")
    made = {acct.add(f"Meeting {i:03d}", at(i * 0.5), at(i * 0.5 + 0.25))["id"] for i in range(230)}
    seen: list[str] = []
    pages = []
    page = events(e2e, key, limit=50)
    while True:
        pages.append(page)
        seen += [r["platform_id"] for r in page["results"]]
        if not page["next"]:
            break
        resp = e2e.http.get(page["next"], headers={"Authorization": f"Token {key}"}, timeout=60)
        assert resp.status_code == 200, resp.text
        page = resp.json()
    assert [len(p["results"]) for p in pages] == [50, 50, 50, 50, 30]
    assert len(seen) == 230 and set(seen) == made
    assert pages[-1]["has_more"] is False and pages[0]["previous"] is None
    # previous from page 3 is page 2, exactly
    back = e2e.http.get(pages[2]["previous"], headers={"Authorization": f"Token {key}"}, timeout=60).json()
    assert [r["id"] for r in back["results"]] == [r["id"] for r in pages[1]["results"]]
    # A tampered cursor, or one used by another user, is a 400.
    tampered = pages[0]["next"].replace("cursor=", "cursor=x")
    assert e2e.http.get(tampered, headers={"Authorization": f"Token {key}"}, timeout=30).status_code == 400
    other = e2e.admin("create-user", "--with-key")["api_key"]
    stolen = e2e.http.get(pages[0]["next"], headers={"Authorization": f"Token {other}"}, timeout=30)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_cursor"


def test_moved_and_cancelled_meetings_and_expired_delta_token(e2e: E2EStack) -> None:
    key, (acct,) = new_user(e2e, "changes@acme.example")
    moving = acct.add("Moving", at(1), at(2), location="https://meet.google.com/abc-defg-hij")
    cancelled = acct.add("Cancelled", at(3), at(4), location="https://acme.webex.com/meet/jane")
    first = {r["platform_id"]: r for r in events(e2e, key)["results"]}
    assert set(first) == {moving["id"], cancelled["id"]}

    e2e.graph("PATCH", f"/events/{moving['id']}", json={"start": at(10), "end": at(11)})
    e2e.graph("POST", f"/events/{cancelled['id']}/cancel")
    after = {r["platform_id"]: r for r in events(e2e, key)["results"]}
    assert after[moving["id"]]["start_time"] == (BASE + timedelta(hours=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert after[moving["id"]]["id"] == first[moving["id"]]["id"]
    assert after[cancelled["id"]]["is_deleted"] is True

    e2e.settle()
    e2e.graph("POST", "/notifications/pause")  # this request, not a notification-driven sync, meets the 410
    try:
        e2e.graph("POST", f"/accounts/{acct.id}/delta/expire")
        late = acct.add("After expiry", at(20), at(21))
        e2e.graph("DELETE", "/requests")
        recovered = {r["platform_id"]: r for r in events(e2e, key)["results"]}
        assert late["id"] in recovered and not recovered[moving["id"]]["is_deleted"]
        statuses = [r["status"] for r in acct.requests() if "delta" in r["path"]]
        assert 410 in statuses and statuses[-1] == 200  # the 410 was not swallowed: a full resync followed
    finally:
        e2e.graph("POST", "/notifications/resume")


def test_a_failing_account_yields_partial_errors_while_the_other_returns(e2e: E2EStack) -> None:
    key, (good, bad) = new_user(e2e, "good.one@acme.example", "flaky.one@acme.example")
    # The fault first: the sync worker, woken by the adds' notifications, must not store the flaky
    # account's meeting before Graph fails for it.
    e2e.graph(
        "POST", "/faults", json={"path": "calendarView/delta", "account": bad.id, "status": 503, "times": -1}
    )
    try:
        good.add("Good meeting", at(1), at(2))
        bad.add("Flaky meeting", at(1), at(2))
        body = events(e2e, key)
    finally:
        e2e.graph("DELETE", "/faults")
    assert [r["title"] for r in body["results"]] == ["Good meeting"]
    assert body["partial_errors"]["outlook::flaky.one@acme.example"]["error"] == "provider_unavailable"

    e2e.graph("POST", f"/accounts/{bad.id}/revoke", json={"code": 70008})
    e2e.graph("POST", "/access-tokens/expire", json={"account": bad.id})
    body = events(e2e, key)
    assert body["partial_errors"]["outlook::flaky.one@acme.example"]["error"] == "needs_reauth"
    assert "Good meeting" in [r["title"] for r in body["results"]]
    conn = e2e.api("GET", "/calendar/connections/outlook/flaky.one%40acme.example", key=key).json()
    assert conn["status"] == "needs_reauth"

    cals = e2e.api("GET", "/calendar/calendars", key=key).json()
    assert [c["account_id"] for c in cals["calendars"]] == ["good.one@acme.example"]
    assert "outlook::flaky.one@acme.example" in cals["partial_errors"]
    alias = e2e.api("GET", "/calendar", key=key).json()
    assert {c["account_id"]: c["status"] for c in alias["connections"]} == {
        "good.one@acme.example": "active",
        "flaky.one@acme.example": "needs_reauth",
    }


def test_a_throttled_account_answers_within_the_time_limit_and_the_worker_finishes_it(e2e: E2EStack) -> None:
    key, (slow,) = new_user(e2e, "throttled.one@acme.example")
    # Notifications held throughout: a sync by the worker would use up the two 429s meant for this
    # request, and would store the meeting whether or not the request handed its account over.
    e2e.graph("POST", "/notifications/pause")
    try:
        slow.add("Throttled meeting", at(3), at(4))
        # Graph asks for 15 s, twice: the first wait fits the route's 29 s, the second would not.
        rule = {
            "path": "calendarView/delta",
            "account": slow.id,
            "status": 429,
            "retry_after": 15,
            "times": 2,
        }
        e2e.graph("POST", "/faults", json=rule)
        try:
            body = events(e2e, key)
        finally:
            e2e.graph("DELETE", "/faults")
        error = body["partial_errors"]["outlook::throttled.one@acme.example"]
        assert error["error"] == "provider_unavailable" and "in the background" in error["message"]
        assert "Throttled meeting" not in [r["title"] for r in body["results"]]
        overran = [
            o for o in e2e.control("GET", "/overruns")["value"] if o["function"] == "ListEventsFunction"
        ]
        assert overran == []
        # The account was handed to the sync worker, which finishes it.
        e2e.control("POST", "/queues/drain")
        stored = events(e2e, key, path="/calendar/get_events")
        assert "Throttled meeting" in [r["title"] for r in stored["results"]]
    finally:
        e2e.graph("POST", "/notifications/resume")


def test_get_events_never_calls_the_provider(e2e: E2EStack) -> None:
    key, (acct,) = new_user(e2e, "readonly@acme.example")
    acct.add("Stored", at(1), at(2))
    events(e2e, key)  # one sync stores it
    e2e.settle()
    e2e.graph("POST", "/notifications/pause")  # no notification-driven sync either: only get_events acts
    try:
        e2e.graph("DELETE", "/requests")
        acct.add("Not yet synced", at(3), at(4))
        body = events(e2e, key, path="/calendar/get_events")
        assert [r["title"] for r in body["results"]] == ["Stored"]
        assert events(e2e, key, sync="false")["results"][0]["title"] == "Stored"
        assert acct.requests() == []  # zero requests to the emulator for that account
    finally:
        e2e.graph("POST", "/notifications/resume")


def test_query_validation(e2e: E2EStack) -> None:
    key = e2e.demo_key
    for params, error in [
        ({"account_id": "jane@contoso.example"}, "invalid_request"),
        ({"limit": "0"}, "invalid_request"),
        ({"limit": "101"}, "invalid_request"),
        ({"time_min": "yesterday"}, "invalid_request"),
        ({"provider": "yahoo"}, "invalid_request"),
        ({"time_min": at(5), "time_max": at(1)}, "invalid_request"),
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
    ]:
        resp = e2e.api("GET", "/calendar/events", key=key, params=params)
        assert resp.status_code == 400 and resp.json()["error"] == error, (params, resp.text)
    assert e2e.api("GET", "/calendar/events").status_code == 401
