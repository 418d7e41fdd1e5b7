"""Issue 20 end to end, on Outlook and on Google: auto-schedule rules over HTTP like a user's curl.

One user per provider with a declined meeting, a tentative one, an all-day one, an internal stand-up,
an external customer call, a Webex meeting and a meeting on a second account: each rule switched on
alone gives exactly the expected bots through the real midnight job, and the preview said so first.
Then through the real notification path (emulator change notification -> webhook -> SYNC queue ->
sync worker): a meeting booked 3 minutes ahead gets its auto bot, whose Create Bot call lands at
start - 60 s; declining a meeting after its bot was scheduled cancels the bot (`rule_mismatch`, also in
the customer's bot.cancelled); a manual bot on an excluded meeting stays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.e2e.conftest import E2EStack

MS_CLIENT_ID = "rulesync-e2e-ms-client"
MS_CLIENT_SECRET = "rules-e2e-ms-secret-20aa"
G_CLIENT_ID = "620-rulesync-e2e.apps.googleusercontent.com"
G_CLIENT_SECRET = "GOCSPX-rules-e2e-secret-20bb"
DEFAULT = {"bot_name": "Rules Notetaker"}
ON_TIME = timedelta(seconds=2)  # the Create Bot call within 2 s of its join time
DOMAIN = "acme.example"  # the user's own domain (both accounts)
COLLEAGUE = f"colleague@{DOMAIN}"
CUSTOMER = "buyer@customer.example"

DECLINED, TENTATIVE, ALL_DAY = "Declined sync", "Tentative sync", "All-day offsite"
STANDUP, CUSTOMER_CALL, WEBEX, OTHER = "Team stand-up", "Customer call", "Webex review", "Other account sync"
ALL = {DECLINED, TENTATIVE, ALL_DAY, STANDUP, CUSTOMER_CALL, WEBEX, OTHER}
EXTERNAL = {DECLINED, TENTATIVE, CUSTOMER_CALL}  # someone of customer.example attends
# Every rule off: each case below switches one on.
BASE: dict[str, Any] = {"skip_declined": False, "skip_all_day": False}


@pytest.fixture(scope="module", autouse=True)
def apps(e2e: E2EStack) -> None:
    e2e.graph("POST", "/apps", json={"client_id": MS_CLIENT_ID, "client_secret": MS_CLIENT_SECRET})
    e2e.google("POST", "/apps", json={"client_id": G_CLIENT_ID, "client_secret": G_CLIENT_SECRET})


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class RulesUser:
    """A user with two connected accounts of one provider, both of DOMAIN, made over the API."""

    e2e: E2EStack
    provider: str
    tag: str
    key: str = ""
    mails: list[str] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    invited: dict[str, dict[str, str]] = field(default_factory=dict)  # platform id -> its attendees

    def __post_init__(self) -> None:
        self.mails = [f"rsync.{self.tag}.{i}@{DOMAIN}" for i in range(2)]
        if self.provider == "outlook":
            made = self.e2e.connected_user(MS_CLIENT_ID, MS_CLIENT_SECRET, self.mails)
            self.key, self.accounts = made["key"], made["accounts"]
            return
        self.key = self.e2e.admin("create-user", "--with-key")["api_key"]
        for mail in self.mails:
            acct = self.e2e.google(
                "POST",
                "/accounts",
                json={
                    "email": mail,
                    "name": mail.split("@")[0],
                    "client_id": G_CLIENT_ID,
                    "time_zone": "UTC",
                },
            ).json()
            resp = self.api(
                "POST",
                "/calendar/create_calendar",
                json={
                    "google_client_id": G_CLIENT_ID,
                    "google_client_secret": G_CLIENT_SECRET,
                    "google_refresh_token": acct["refresh_token"],
                },
            )
            assert resp.status_code == 201, resp.text
            self.accounts.append(acct)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.e2e.api(method, path, key=self.key, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.api(method, path, **kwargs)
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json()

    # -- the emulators: the user's calendars ---------------------------------------------------------

    def meeting(
        self,
        title: str,
        start: datetime,
        *,
        account: int = 0,
        link: str | None = None,
        all_day: bool = False,
        organizer: str | None = None,
        attendees: dict[str, str] | None = None,
        minutes: int = 30,
    ) -> str:
        """A meeting at the emulator (its platform id). `attendees`: address -> the answer, in the
        provider's words (accepted | tentative | declined | none); the user's own row says theirs."""
        link = link or f"https://acme.zoom.us/j/{abs(hash((self.tag, title))) % 10**9}"
        end = start + (timedelta(days=1) if all_day else timedelta(minutes=minutes))
        if self.provider == "outlook":
            acct = self.accounts[account]
            answers = {"tentative": "tentativelyAccepted"}
            body: dict[str, Any] = {
                "subject": title,
                "start": start.date().isoformat() if all_day else start.isoformat(),
                "end": end.date().isoformat() if all_day else end.isoformat(),
                "is_all_day": all_day,
                "location": link,
                "attendees": [
                    {"address": a, "response": answers.get(r, r)} for a, r in (attendees or {}).items()
                ],
            }
            if organizer:
                body["organizer"] = organizer
            calendar = quote(acct["calendars"][0]["id"], safe="")
            return str(
                self.e2e.graph(
                    "POST", f"/accounts/{acct['id']}/calendars/{calendar}/events", json=body
                ).json()["id"]
            )
        mail = self.mails[account]
        gbody: dict[str, Any] = {
            "summary": title,
            "start": start.date().isoformat() if all_day else start.isoformat(),
            "end": end.date().isoformat() if all_day else end.isoformat(),
            "all_day": all_day,
            "location": link,
            "attendees": [{"email": a, "responseStatus": _google(r)} for a, r in (attendees or {}).items()],
        }
        if organizer:
            gbody["organizer"] = organizer
        made = self.e2e.google("POST", f"/accounts/{quote(mail)}/calendars/{quote(mail)}/events", json=gbody)
        self.invited[made.json()["id"]] = dict(attendees or {})
        return str(made.json()["id"])

    def respond(self, platform_id: str, answer: str, account: int = 0) -> None:
        """The user answers an invitation in their calendar client."""
        mail = self.mails[account]
        if self.provider == "outlook":
            answers = {"tentative": "tentativelyAccepted"}
            self.e2e.graph(
                "POST",
                f"/events/{platform_id}/respond",
                json={"attendee": mail, "response": answers.get(answer, answer)},
            )
            return
        answers = {**self.invited[platform_id], mail: answer}  # Google takes the whole list back
        self.invited[platform_id] = answers
        rows = [{"email": a, "responseStatus": _google(r)} for a, r in answers.items()]
        self.e2e.google("PATCH", f"/events/{platform_id}", json={"attendees": rows})

    def retitle(self, platform_id: str, title: str) -> None:
        if self.provider == "outlook":
            self.e2e.graph("PATCH", f"/events/{platform_id}", json={"subject": title})
        else:
            self.e2e.google("PATCH", f"/events/{platform_id}", json={"summary": title})

    # -- the API --------------------------------------------------------------------------------------

    def events(self) -> dict[str, dict[str, Any]]:
        """The user's events of the next 2 days by title (read, not synced)."""
        now = self.e2e.clock_now()
        body = self.ok(
            "GET",
            "/calendar/get_events",
            params={
                "time_min": now.isoformat(),
                "time_max": (now + timedelta(days=2)).isoformat(),
                "limit": 100,
            },
        )
        return {e["title"]: e for e in body["results"]}

    def bots(self, status: str = "all") -> list[dict[str, Any]]:
        return list(self.ok("GET", "/calendar/scheduled_bots", params={"status": status})["results"])

    def live_auto_titles(self) -> set[str]:
        return {b["title"] for b in self.bots("Scheduled") if b["source"] == "auto"}

    def cancel_every_bot(self) -> None:
        for bot in self.bots("Scheduled"):
            self.ok("DELETE", f"/calendar/scheduled_bots/{bot['bot_id']}")

    def set_rules(self, rules: dict[str, Any]) -> dict[str, Any]:
        settings = self.ok("PUT", "/calendar/auto-schedule/rules", json=rules)
        assert {k: settings["rules"][k] for k in rules} == rules, settings
        return dict(settings)

    def preview(self) -> dict[str, dict[str, Any]]:
        return {
            r["title"]: r
            for r in self.ok("GET", "/calendar/auto-schedule/preview", params={"hours": 24})["results"]
        }

    def account_id(self, account: int) -> str:
        conns = self.ok("GET", "/calendar/connections")["connections"][self.provider]
        return str(next(c["account_id"] for c in conns if c["account_id"].lower() == self.mails[account]))


def _google(answer: str) -> str:
    return {"none": "needsAction"}.get(answer, answer)


def run_midnight_job(e2e: E2EStack) -> None:
    result = e2e.control("POST", "/cron/AutoScheduleJobFunction")
    assert result["ok"], result
    e2e.control("POST", "/queues/drain")


def calls_at(e2e: E2EStack, bot_id: str) -> list[datetime]:
    """When the Create Bot sink answered 2xx for this bot (the sink's clock is the stack's)."""
    calls = e2e.http.get(f"{e2e.info['bots_url']}/_control/calls", timeout=30).json()["value"]
    return [utc(c["time"]) for c in calls if c["body"]["custom_attributes"].get("scheduled_bot_id") == bot_id]


def hours_ahead(e2e: E2EStack, hours: float) -> datetime:
    return (e2e.clock_now() + timedelta(hours=hours)).replace(second=0, microsecond=0)


def seven_meetings(user: RulesUser) -> dict[str, str]:
    """The issue's seven meetings, all within the next 24 h; title -> platform id."""
    e2e, me = user.e2e, user.mails[0]
    tomorrow = (e2e.clock_now() + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        DECLINED: user.meeting(
            DECLINED,
            hours_ahead(e2e, 2),
            organizer=CUSTOMER,
            attendees={me: "declined", CUSTOMER: "accepted"},
        ),
        TENTATIVE: user.meeting(
            TENTATIVE,
            hours_ahead(e2e, 3),
            organizer=CUSTOMER,
            attendees={me: "tentative", CUSTOMER: "accepted"},
        ),
        ALL_DAY: user.meeting(ALL_DAY, tomorrow, all_day=True),
        STANDUP: user.meeting(STANDUP, hours_ahead(e2e, 4), minutes=15, attendees={COLLEAGUE: "accepted"}),
        CUSTOMER_CALL: user.meeting(
            CUSTOMER_CALL, hours_ahead(e2e, 5), attendees={CUSTOMER: "accepted", COLLEAGUE: "accepted"}
        ),
        WEBEX: user.meeting(
            WEBEX,
            hours_ahead(e2e, 6),
            link=f"https://acme.webex.com/meet/review{abs(hash(user.tag)) % 10**6}",
            attendees={COLLEAGUE: "accepted"},
        ),
        OTHER: user.meeting(OTHER, hours_ahead(e2e, 7), account=1, attendees={COLLEAGUE: "accepted"}),
    }


# Each rule switched on alone (over BASE): the meetings that keep a bot, and the reason the preview
# gives each of the others.
CASES: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("skip_declined", {"skip_declined": True}, {DECLINED: "declined"}),
    ("skip_tentative", {"skip_tentative": True}, {TENTATIVE: "tentative"}),
    ("skip_all_day", {"skip_all_day": True}, {ALL_DAY: "all_day"}),
    (
        "organized_by_me",
        {"meetings": "organized_by_me"},
        {DECLINED: "not_organizer", TENTATIVE: "not_organizer"},
    ),
    ("external", {"meetings": "external"}, {t: "internal" for t in ALL - EXTERNAL}),
    ("internal", {"meetings": "internal"}, {t: "external" for t in EXTERNAL}),
    ("platforms", {"platforms": ["zoom"]}, {WEBEX: "platform"}),
    ("title_exclude", {"title_exclude": ["STAND-UP"]}, {STANDUP: "title"}),
    ("title_include", {"title_include": ["sync"]}, {t: "title" for t in ALL - {DECLINED, TENTATIVE, OTHER}}),
    ("max_duration", {"max_duration_minutes": 120}, {ALL_DAY: "duration"}),
    ("min_duration", {"min_duration_minutes": 20}, {STANDUP: "duration"}),
    ("skip_without_attendees", {"skip_without_attendees": True}, {ALL_DAY: "no_attendees"}),
]


@pytest.mark.parametrize("provider", ["outlook", "google"])
def test_each_rule_alone_gives_exactly_the_expected_bots_and_the_preview_said_so(
    e2e: E2EStack, provider: str
) -> None:
    user = RulesUser(e2e, provider, f"alone.{provider}")
    meetings = seven_meetings(user)
    e2e.settle()  # synced through the notification path; auto-schedule is off: no bot
    assert set(user.events()) >= ALL and user.bots() == []
    enabled = user.ok(
        "POST",
        "/calendar/auto-schedule/enable",
        json={"default_bot_config": DEFAULT, "join_offset_seconds": 60, "rules": BASE},
    )
    assert enabled["enabled"] is True and enabled["last_run"]["scheduled"] == len(ALL)
    assert user.live_auto_titles() == ALL  # every rule off: all seven

    cases = [
        *CASES,
        (
            "accounts",
            {"accounts": [{"provider": provider, "account_id": user.account_id(0)}]},
            {OTHER: "account"},
        ),
    ]
    for name, rule, left_out in cases:
        user.cancel_every_bot()
        user.set_rules({**BASE, **rule})
        preview = user.preview()
        said = {t: (row["would_schedule"], row["reason"]) for t, row in preview.items() if t in ALL}
        expected = {t: (False, left_out[t]) if t in left_out else (True, "matched") for t in ALL}
        assert said == expected, name
        run_midnight_job(e2e)
        assert user.live_auto_titles() == ALL - set(left_out), name
    assert set(meetings) == ALL

    # Every rule off again: the job gives all seven their bots; then taking the second account out of
    # the rules cancels its meeting's auto bot at once (rule_mismatch), before any job or sync.
    user.set_rules(BASE)
    run_midnight_job(e2e)
    assert user.live_auto_titles() == ALL
    (other,) = [b for b in user.bots("Scheduled") if b["title"] == OTHER]
    user.set_rules({**BASE, "accounts": [{"provider": provider, "account_id": user.account_id(0)}]})
    (row,) = [b for b in user.bots() if b["bot_id"] == other["bot_id"]]
    assert (row["status"], row.get("reason")) == ("Cancelled", "rule_mismatch")
    assert user.live_auto_titles() == ALL - {OTHER}


@pytest.mark.parametrize("provider", ["outlook", "google"])
def test_a_meeting_booked_three_minutes_ahead_gets_its_auto_bot_on_time(e2e: E2EStack, provider: str) -> None:
    user = RulesUser(e2e, provider, f"late.{provider}")
    user.ok(
        "POST",
        "/calendar/auto-schedule/enable",
        json={"default_bot_config": DEFAULT, "join_offset_seconds": 60},
    )
    start = e2e.clock_now().replace(microsecond=0) + timedelta(minutes=3)
    user.meeting("Booked late", start, attendees={CUSTOMER: "accepted"})
    e2e.settle()  # change notification -> webhook -> SYNC queue -> sync worker: no GET, no job
    (bot,) = [b for b in user.bots("Scheduled") if b["title"] == "Booked late"]
    join = utc(bot["scheduled_join_time"])
    assert bot["source"] == "auto" and bot["bot_config"] == DEFAULT and join == start - timedelta(seconds=60)
    e2e.advance(join + timedelta(seconds=10))
    (at,) = calls_at(e2e, bot["bot_id"])
    assert join <= at <= join + ON_TIME, (at, join)
    (row,) = [b for b in user.bots() if b["bot_id"] == bot["bot_id"]]
    assert row["status"] == "Launched"


class Sink:
    """The stack's webhook receiver, registered as this user's endpoint for bot.cancelled."""

    def __init__(self, user: RulesUser) -> None:
        self.e2e, self.path = user.e2e, f"/hooks/rules-{user.tag}"
        made = user.api(
            "POST",
            "/webhooks",
            json={"url": user.e2e.info["webhook_sink_url"] + self.path, "event_types": ["bot.cancelled"]},
        )
        assert made.status_code == 201, made.text

    def cancelled(self, bot_id: str) -> list[str]:
        """The reasons the bot.cancelled events delivered for this bot carry."""
        self.e2e.control("POST", "/queues/drain")  # the virtual clock delivers queued events when told
        control = self.e2e.info["webhook_sink_control_url"] + "/_control/deliveries"
        got = requests.get(control, timeout=30).json()["value"]
        bodies = [json.loads(d["body"]) for d in got if d["path"] == self.path and d["status"] < 300]
        return [
            b["data"]["reason"]
            for b in bodies
            if b["type"] == "bot.cancelled" and b["data"]["bot_id"] == bot_id
        ]


@pytest.mark.parametrize("provider", ["outlook", "google"])
def test_declining_a_meeting_after_its_bot_was_scheduled_cancels_the_bot(
    e2e: E2EStack, provider: str
) -> None:
    user = RulesUser(e2e, provider, f"decline.{provider}")
    sink = Sink(user)
    user.ok("POST", "/calendar/auto-schedule/enable", json={"default_bot_config": DEFAULT})  # skip_declined
    me = user.mails[0]
    invitation = user.meeting(
        "Will decline",
        hours_ahead(e2e, 5),
        organizer=CUSTOMER,
        attendees={me: "accepted", CUSTOMER: "accepted"},
    )
    e2e.settle()  # the sync worker gives it its auto bot at once
    (auto,) = user.bots("Scheduled")
    assert (auto["title"], auto["source"]) == ("Will decline", "auto")
    user.respond(invitation, "declined")
    e2e.settle()  # change notification -> webhook -> SYNC queue -> sync worker: no GET, no job
    (row,) = [b for b in user.bots() if b["bot_id"] == auto["bot_id"]]
    assert (row["status"], row.get("reason")) == ("Cancelled", "rule_mismatch")
    assert sink.cancelled(auto["bot_id"]) == ["rule_mismatch"]  # the customer's webhook says why
    run_midnight_job(e2e)  # the job agrees: a declined meeting gets no bot back
    assert user.bots("Scheduled") == []
    user.respond(invitation, "accepted")  # accepted again: it matches again, and gets a bot at that sync
    e2e.settle()
    assert [(b["title"], b["source"]) for b in user.bots("Scheduled")] == [("Will decline", "auto")]


@pytest.mark.parametrize("provider", ["outlook", "google"])
def test_a_manual_bot_on_an_excluded_meeting_stays(e2e: E2EStack, provider: str) -> None:
    user = RulesUser(e2e, provider, f"manual.{provider}")
    user.ok("POST", "/calendar/auto-schedule/enable", json={"default_bot_config": DEFAULT})
    excluded = user.meeting("Hand picked", hours_ahead(e2e, 6), account=1)
    e2e.settle()
    assert user.live_auto_titles() == {"Hand picked"}
    # The second account is left out of the rules; the user schedules its meeting by hand.
    user.set_rules({"accounts": [{"provider": provider, "account_id": user.account_id(0)}]})
    event_id = user.events()["Hand picked"]["id"]
    manual = user.api("POST", f"/calendar/schedule/{event_id}", json={"bot_config": {"bot_name": "Mine"}})
    assert manual.status_code == 201, manual.text
    user.retitle(excluded, "Hand picked, renamed")  # a change of the excluded meeting reaches a sync
    e2e.settle()
    run_midnight_job(e2e)
    (kept,) = user.bots("Scheduled")
    assert (kept["bot_id"], kept["source"], kept["bot_config"]["bot_name"]) == (
        manual.json()["bot_id"],
        "manual",
        "Mine",
    )
