"""3/8 end to end: bots scheduled over HTTP, fired by the local clock (virtual time, so no sleeping)
into the real launcher, which calls the Create Bot API sink."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
import requests

from calbot.scheduler import lead
from tests.e2e.conftest import E2EStack

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "sched-e2e-client"
CLIENT_SECRET = "sched-e2e-secret-8c1d"
TEAMS = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_e2e{n}%40thread.v2/0"


@pytest.fixture(scope="module", autouse=True)
def app_registration(e2e: E2EStack) -> None:
    e2e.graph("POST", "/apps", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})


def sink_calls(e2e: E2EStack, *bot_ids: str) -> list[dict[str, Any]]:
    """Create Bot calls the sink recorded, for these bots only when named (time moves for every test)."""
    calls = e2e.http.get(f"{e2e.info['bots_url']}/_control/calls", timeout=30).json()["value"]
    if bot_ids:
        calls = [c for c in calls if c["body"]["custom_attributes"].get("scheduled_bot_id") in bot_ids]
    return calls


def schedules(e2e: E2EStack) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in e2e.control("GET", "/schedules")["value"]}


class User:
    def __init__(self, e2e: E2EStack, n_accounts: int = 1) -> None:
        self.e2e = e2e
        tag = len(e2e.responses)
        made = e2e.connected_user(
            CLIENT_ID, CLIENT_SECRET, [f"sched.{tag}.{i}@acme.example" for i in range(n_accounts)]
        )
        self.key, self.user_id, self.accounts = made["key"], made["user_id"], made["accounts"]

    def meeting(self, start: datetime, minutes: int = 60, account: int = 0, **extra: Any) -> dict[str, Any]:
        acct = self.accounts[account]
        cal = quote(acct["calendars"][0]["id"], safe="")
        body = {
            "subject": "Meeting",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=minutes)).isoformat(),
            **extra,
        }
        return self.e2e.graph("POST", f"/accounts/{acct['id']}/calendars/{cal}/events", json=body).json()

    def events(self, since: datetime | None = None) -> list[dict[str, Any]]:
        now = self.e2e.clock_now()
        resp = self.e2e.api(
            "GET",
            "/calendar/events",
            key=self.key,
            params={
                "time_min": (since or now - timedelta(days=1)).isoformat(),
                "time_max": (now + timedelta(days=120)).isoformat(),
                "limit": 100,
            },
        )
        assert resp.status_code == 200 and resp.json()["partial_errors"] == {}, resp.text
        return resp.json()["results"]

    def event_for(self, platform_id: str) -> dict[str, Any]:
        rows = [e for e in self.events() if e["platform_id"] == platform_id]
        assert rows, f"{platform_id} not synced"
        return rows[0]

    def schedule(self, event_id: str, **body: Any) -> requests.Response:
        return self.e2e.api("POST", f"/calendar/schedule/{event_id}", key=self.key, json=body)


def test_schedule_a_teams_meeting_fire_it_and_launch_exactly_once(e2e: E2EStack) -> None:
    user = User(e2e)
    start = (e2e.clock_now() + timedelta(days=1)).replace(second=0, microsecond=0)
    link = TEAMS.format(n=1)
    ev = user.event_for(user.meeting(start, online_meeting_url=link)["id"])
    resp = user.schedule(ev["id"], bot_config={"bot_name": "Scribe", "transcription": {"provider": "x"}})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    join = start - timedelta(seconds=60)
    assert body["scheduled_join_time"] == body["ScheduledJoinTime"] == join.strftime("%Y-%m-%dT%H:%M:%SZ")
    sched = schedules(e2e)[f"launch-{body['bot_id']}"]
    # its lead (5 to 13 minutes, from its id) before joining: it only arms the delayed launch message
    assert sched["at"].startswith((join - lead(body["bot_id"])).strftime("%Y-%m-%dT%H:%M:%S"))
    assert sched["target_function"] == "BotLauncherFunction" and sched["action_after_completion"] == "DELETE"

    listed = e2e.api("GET", "/calendar/scheduled_bots", key=user.key).json()["results"]
    assert [b["bot_id"] for b in listed] == [body["bot_id"]] and listed[0]["status"] == "Scheduled"

    e2e.advance(join + timedelta(seconds=5))  # the launcher no longer sleeps: time must reach the join time
    calls = sink_calls(e2e, body["bot_id"])
    assert len(calls) == 1
    assert calls[0]["body"]["meeting_link"] == link and calls[0]["body"]["bot_name"] == "Scribe"
    assert calls[0]["body"]["custom_attributes"]["scheduled_bot_id"] == body["bot_id"]
    assert f"launch-{body['bot_id']}" not in schedules(e2e)  # ran, then deleted itself
    bots = [e for e in user.events() if e["id"] == ev["id"]][0]["bots"]
    assert [(b["id"], b["status"]) for b in bots] == [(body["bot_id"], "Launched")]

    # A duplicate delivery of the same schedule input (Scheduler is at-least-once) makes no second bot.
    event_file = e2e.state_dir / "dup-launch.json"
    event_file.write_text(json.dumps({"action": "launch", "user_id": user.user_id, "bot_id": body["bot_id"]}))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "local.invoke",
            "BotLauncherFunction",
            "-e",
            str(event_file),
            "--state-dir",
            str(e2e.state_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["skipped"] == "Launched"
    assert len(sink_calls(e2e, body["bot_id"])) == 1


def test_fifty_concurrent_posts_make_one_bot_and_two_accounts_share_it(e2e: E2EStack) -> None:
    user = User(e2e, n_accounts=2)
    # within ARM_WITHIN (36 h): armed by a schedule at once, not deferred to the arming job
    start = (e2e.clock_now() + timedelta(hours=26)).replace(second=0, microsecond=0)
    link = TEAMS.format(n=50)
    ev = user.event_for(user.meeting(start, online_meeting_url=link)["id"])
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: user.schedule(ev["id"]), range(50)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201] + [409] * 49, statuses
    bot_id = next(r.json()["bot_id"] for r in results if r.status_code == 201)
    assert {r.json()["bot_id"] for r in results if r.status_code == 409} == {bot_id}
    assert [n for n in schedules(e2e) if n.startswith("launch-") and bot_id in n] == [f"launch-{bot_id}"]

    # The same meeting (same link, same start) on the second account: one bot, not two.
    other = user.event_for(user.meeting(start, account=1, online_meeting_url=link)["id"])
    dup = user.schedule(other["id"])
    assert dup.status_code == 409 and dup.json()["bot_id"] == bot_id


def test_patch_moves_delete_removes_and_a_cancel_before_firing_wins(e2e: E2EStack) -> None:
    user = User(e2e)
    # within ARM_WITHIN (36 h) with its move: armed by schedules, not deferred to the arming job
    start = (e2e.clock_now() + timedelta(hours=27)).replace(second=0, microsecond=0)
    ev = user.event_for(user.meeting(start, location="https://acme.zoom.us/j/8081")["id"])
    bot_id = user.schedule(ev["id"]).json()["bot_id"]
    new_join = start + timedelta(hours=1)
    patched = e2e.api(
        "PATCH",
        f"/calendar/scheduled_bots/{bot_id}",
        key=user.key,
        json={"scheduled_join_time": new_join.isoformat(), "bot_name": "Late joiner"},
    )
    assert patched.status_code == 200 and patched.json()["scheduled_join_time"].startswith(
        new_join.strftime("%Y-%m-%dT%H:%M")
    )
    # re-armed under the next generation's name, its lead before the new join time (issue 18)
    assert schedules(e2e)[f"launch-{bot_id}-g1"]["at"].startswith(
        (new_join - lead(bot_id)).strftime("%Y-%m-%dT%H:%M")
    )
    assert f"launch-{bot_id}" not in schedules(e2e)

    deleted = e2e.api("DELETE", f"/calendar/scheduled_bots/{bot_id}", key=user.key)
    assert deleted.status_code == 200 and deleted.json()["status"] == "Cancelled"
    assert f"launch-{bot_id}-g1" not in schedules(e2e)
    assert e2e.api("DELETE", f"/calendar/scheduled_bots/{bot_id}", key=user.key).status_code == 409
    assert e2e.api("DELETE", "/calendar/scheduled_bots/sb_nope", key=user.key).status_code == 404
    e2e.advance(new_join + timedelta(minutes=5))
    assert sink_calls(e2e, bot_id) == []  # cancelled: never launched


def test_weekly_series_all_occurrences_one_occurrence_from_date_and_the_recurrence_chain(
    e2e: E2EStack,
) -> None:
    user = User(e2e)
    now = e2e.clock_now()
    first_day = (now + timedelta(days=7 - now.weekday() + 1)).date()  # a Tuesday at least a week away
    master = user.meeting(
        datetime(first_day.year, first_day.month, first_day.day, 9, 0),
        minutes=30,
        time_zone="Eastern Standard Time",
        online_meeting_url=TEAMS.format(n="weekly"),
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"]},
            "range": {"type": "numbered", "startDate": str(first_day), "numberOfOccurrences": 14},
        },
    )
    occurrences = sorted(
        (e for e in user.events() if e["series_id"] and e["title"] == "Meeting"),
        key=lambda e: e["start_time"],
    )
    assert len(occurrences) == 14 and all(o["is_recurring"] and o["recurrence_rule"] for o in occurrences)
    del master

    made = user.schedule(occurrences[0]["id"], schedule_all_occurrences=True, occurrence_limit=10).json()
    assert len(made["bots"]) == 10
    local_times = {
        datetime.fromisoformat(b["occurrence_start"].replace("Z", "+00:00"))
        .astimezone(ZoneInfo("America/New_York"))
        .strftime("%a %H:%M")
        for b in made["bots"]
    }
    assert local_times == {"Tue 09:00"}  # 09:00 New York every week, whatever the UTC offset

    cut = made["bots"][6]["occurrence_start"]
    cancelled = e2e.api(
        "DELETE", f"/calendar/schedule/{occurrences[0]['id']}", key=user.key, json={"from_date": cut}
    ).json()
    assert cancelled["cancelled"] == 4
    one = user.schedule(occurrences[0]["id"], occurrence_date=occurrences[12]["start_time"]).json()
    assert [b["occurrence_start"] for b in one["bots"]] == [occurrences[12]["start_time"]]

    not_rec = user.event_for(user.meeting(now + timedelta(days=4), location="https://acme.zoom.us/j/1")["id"])
    bad = e2e.api(
        "POST",
        "/calendar/toggle-recurrence",
        key=user.key,
        json={"event_id": not_rec["id"], "recurring_enabled": True},
    )
    assert bad.status_code == 400 and bad.json()["error"] == "not_recurring"


def test_a_recurring_bot_leads_to_the_next_occurrences_bot_until_toggled_off(e2e: E2EStack) -> None:
    user = User(e2e)
    now = e2e.clock_now()
    day = (now + timedelta(days=10)).date()
    user.meeting(
        datetime(day.year, day.month, day.day, 15, 0),
        minutes=30,
        online_meeting_url=TEAMS.format(n="chain"),
        recurrence={
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "numbered", "startDate": str(day), "numberOfOccurrences": 5},
        },
    )
    occ = sorted((e for e in user.events() if e["series_id"]), key=lambda e: e["start_time"])
    first = user.schedule(occ[0]["id"], recurring_event=True).json()
    assert [b["occurrence_start"] for b in first["bots"]] == [occ[0]["start_time"]]

    end_of_first = datetime.fromisoformat(occ[0]["end_time"].replace("Z", "+00:00"))
    e2e.advance(end_of_first + timedelta(minutes=1))  # launch, meeting over, reschedule fires
    assert len(sink_calls(e2e, first["bot_id"])) == 1
    upcoming = e2e.api("GET", "/calendar/scheduled_bots", key=user.key).json()["results"]
    assert [(b["occurrence_start"], b["source"]) for b in upcoming] == [(occ[1]["start_time"], "recurrence")]
    chained = upcoming[0]["bot_id"]

    off = e2e.api(
        "POST",
        "/calendar/toggle-recurrence",
        key=user.key,
        json={"event_id": occ[0]["id"], "recurring_enabled": False},
    )
    assert off.status_code == 200 and off.json()["recurring_enabled"] is False
    # The default listing shows live bots only (API.md, revised): the cancelled one is listed by status.
    assert e2e.api("GET", "/calendar/scheduled_bots", key=user.key).json()["results"] == []
    after = e2e.api("GET", "/calendar/scheduled_bots", key=user.key, params={"status": "Cancelled"}).json()[
        "results"
    ]
    assert [(b["bot_id"], b["status"], b["reason"]) for b in after] == [
        (chained, "Cancelled", "recurrence_disabled")
    ]
    live = e2e.api("GET", "/calendar/scheduled_bots", key=user.key, params={"status": "Scheduled"}).json()
    assert live["results"] == []
    e2e.advance(end_of_first + timedelta(days=2))
    assert sink_calls(e2e, chained) == []  # the chained bot was cancelled and never launched
    bots = [b for e in user.events(since=now) for b in e["bots"]]
    assert {b["status"] for b in bots} == {"Launched", "Cancelled"} and len(bots) == 2


def test_another_users_ids_are_404_on_every_scheduling_route(e2e: E2EStack) -> None:
    owner, stranger = User(e2e), User(e2e)
    start = (e2e.clock_now() + timedelta(days=5)).replace(second=0, microsecond=0)
    ev = owner.event_for(owner.meeting(start, online_meeting_url=TEAMS.format(n="iso"))["id"])
    bot_id = owner.schedule(ev["id"]).json()["bot_id"]
    key = stranger.key
    attempts = [
        ("POST", f"/calendar/schedule/{ev['id']}", {}),
        ("DELETE", f"/calendar/schedule/{ev['id']}", {}),
        ("PATCH", f"/calendar/scheduled_bots/{bot_id}", {"bot_name": "hijack"}),
        ("DELETE", f"/calendar/scheduled_bots/{bot_id}", None),
        ("POST", "/calendar/toggle-recurrence", {"event_id": ev["id"], "recurring_enabled": False}),
        ("POST", "/calendar/auto-reschedule", {"event_id": ev["id"]}),
    ]
    for method, path, body in attempts:
        resp = e2e.api(method, path, key=key, json=body)
        assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
    assert e2e.api("GET", "/calendar/scheduled_bots", key=key).json()["results"] == []
    mine = e2e.api("GET", "/calendar/scheduled_bots", key=owner.key).json()["results"]
    assert [(b["bot_id"], b["status"], b["bot_config"]) for b in mine] == [(bot_id, "Scheduled", {})]
    cross = e2e.api(
        "POST", "/calendar/auto-reschedule", key=key, json={"event_id": ev["id"], "user_id": owner.user_id}
    )
    assert cross.status_code == 403


def test_a_series_is_scheduled_and_cancelled_by_its_series_id(e2e: E2EStack) -> None:
    """Issue 16 / API.md Scheduling: `{event_id}` may be an event row's `series_id` (404 before)."""
    user = User(e2e)
    now = e2e.clock_now()
    first_day = (now + timedelta(days=3)).date()
    user.meeting(
        datetime(first_day.year, first_day.month, first_day.day, 15, 0),
        minutes=30,
        online_meeting_url=TEAMS.format(n="byseries"),
        recurrence={
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "numbered", "startDate": str(first_day), "numberOfOccurrences": 5},
        },
    )
    occurrences = sorted((e for e in user.events() if e["series_id"]), key=lambda e: e["start_time"])
    assert len(occurrences) == 5
    series_id = occurrences[0]["series_id"]
    assert series_id not in {o["id"] for o in occurrences}  # a series id is no event row's id

    made = user.schedule(series_id, bot_config={"bot_name": "Series"})
    assert made.status_code == 201, made.text
    assert [b["occurrence_start"] for b in made.json()["bots"]] == [occurrences[0]["start_time"]]
    again = user.schedule(series_id)
    assert again.status_code == 409 and again.json()["bot_id"] == made.json()["bot_id"]
    rest = user.schedule(series_id, schedule_all_occurrences=True)
    assert rest.status_code == 201, rest.text
    assert [b["occurrence_start"] for b in rest.json()["bots"]] == [o["start_time"] for o in occurrences[1:]]

    cancelled = e2e.api(
        "DELETE", f"/calendar/schedule/{series_id}", key=user.key, json={"cancel_all_occurrences": True}
    )
    assert cancelled.status_code == 200 and cancelled.json()["cancelled"] == 5, cancelled.text
    unknown = user.schedule("evt_" + "z" * 26)
    assert unknown.status_code == 404 and unknown.json()["error"] == "event_not_found"


def test_scheduled_bots_lists_live_bots_by_default_and_any_status_after_its_time(e2e: E2EStack) -> None:
    """Issue 16 / API.md (revised): the default is the live bots ahead, soonest first (no cancelled
    ones); `status=<one>` lists that status whatever the join time (ahead soonest first, then past
    newest first, with remote_bot_id / reason); `status=all` lists every bot; pages follow `next`."""
    user = User(e2e)
    now = e2e.clock_now().replace(second=0, microsecond=0)
    starts = {
        "launched": now + timedelta(hours=2, minutes=7),
        "failed": now + timedelta(hours=3, minutes=13),
        "scheduled": now + timedelta(days=1, minutes=17),
        "cancelled": now + timedelta(days=1, hours=1, minutes=19),
    }
    bots = {}
    for n, (name, start) in enumerate(starts.items()):
        ev = user.event_for(user.meeting(start, online_meeting_url=TEAMS.format(n=f"list{n}"))["id"])
        resp = user.schedule(ev["id"], bot_config={"bot_name": name})
        assert resp.status_code == 201, resp.text
        bots[name] = resp.json()["bot_id"]
    assert e2e.api("DELETE", f"/calendar/scheduled_bots/{bots['cancelled']}", key=user.key).status_code == 200

    def listed(**params: Any) -> list[tuple[str, str]]:
        resp = e2e.api("GET", "/calendar/scheduled_bots", key=user.key, params=params)
        assert resp.status_code == 200, resp.text
        return [(b["bot_id"], b["status"]) for b in resp.json()["results"]]

    name_of = {v: k for k, v in bots.items()}
    assert [name_of[b] for b, _ in listed()] == ["launched", "failed", "scheduled"]  # no cancelled bot

    e2e.advance(starts["launched"])
    e2e.advance(starts["failed"] - timedelta(seconds=130))
    e2e.http.post(f"{e2e.info['bots_url']}/_control/faults", json={"status": 400, "times": 1}, timeout=30)
    e2e.advance(starts["failed"])
    e2e.http.delete(f"{e2e.info['bots_url']}/_control/faults", timeout=30)

    assert listed() == [(bots["scheduled"], "Scheduled")]
    launched = e2e.api("GET", "/calendar/scheduled_bots", key=user.key, params={"status": "Launched"}).json()
    assert [b["bot_id"] for b in launched["results"]] == [bots["launched"]]
    assert launched["results"][0]["remote_bot_id"]
    failed = e2e.api("GET", "/calendar/scheduled_bots", key=user.key, params={"status": "Failed"}).json()
    assert [(b["bot_id"], b["reason"]) for b in failed["results"]] == [
        (bots["failed"], "create_bot_rejected_400")
    ]
    assert listed(status="Cancelled") == [(bots["cancelled"], "Cancelled")]
    every = [name_of[b] for b, _ in listed(status="all")]
    assert every == ["scheduled", "cancelled", "failed", "launched"]  # ahead soonest first, then past

    # One bot a page: the `next` links walk the same order across the ahead/past boundary.
    paged, url = [], f"{e2e.api_url}/calendar/scheduled_bots?status=all&limit=1"
    while url:
        page = e2e.http.get(url, headers={"Authorization": f"Token {user.key}"}, timeout=30).json()
        paged += [name_of[b["bot_id"]] for b in page["results"]]
        assert page["has_more"] == (page["next"] is not None)
        url = page["next"]
    assert paged == every
