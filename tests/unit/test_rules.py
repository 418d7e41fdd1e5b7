"""The one auto-schedule rule evaluator (calbot.rules): every reason, in order, and the
external/internal rule across a user's several accounts and domains."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from calbot.models import AutoScheduleRules, AutoScheduleSettings, Event
from calbot.rules import RuleContext, Verdict, evaluate, is_external

NOW = datetime(2026, 12, 7, 8, tzinfo=UTC)
ACCOUNTS = frozenset({("outlook", "jane@contoso.example"), ("google", "jane.doe@gmail.example")})
# Jane's accounts: a work one at contoso.example, a personal one at gmail.example, and a second work
# domain (an acquired company) she connected on Outlook too.
DOMAINS = frozenset({"contoso.example", "gmail.example", "fabrikam-acquired.example"})
CTX = RuleContext(now=NOW, domains=DOMAINS, accounts=ACCOUNTS)


def event(**extra: Any) -> Event:
    fields: dict[str, Any] = {
        "event_id": "evt_1",
        "user_id": "u1",
        "provider": "outlook",
        "account_id": "Jane@Contoso.example",
        "calendar_id": "cal",
        "platform_id": "p1",
        "title": "Weekly sync",
        "start_time": NOW + timedelta(hours=2),
        "end_time": NOW + timedelta(hours=2, minutes=30),
        "meeting_url": "https://teams.microsoft.com/l/meetup-join/19%3ameeting",
        "meeting_platform": "teams",
        "response_status": "accepted",
        "attendees_count": 2,
        "attendee_domains": ["contoso.example"],
        "created_at": NOW,
        "updated_at": NOW,
    }
    return Event(**(fields | extra))


def verdict(rules: dict[str, Any] | None = None, ctx: RuleContext = CTX, **extra: Any) -> Verdict:
    return evaluate(event(**extra), AutoScheduleRules(**(rules or {})), ctx)


def test_defaults_match_a_plain_meeting() -> None:
    assert verdict() == Verdict(True, "matched")


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"is_deleted": True}, "cancelled"),
        ({"meeting_url": None, "meeting_platform": None}, "no_link"),
        ({"start_time": NOW - timedelta(minutes=1)}, "started"),
        ({"response_status": "declined"}, "declined"),
        ({"is_all_day": True}, "all_day"),
        ({"account_id": "old@contoso.example"}, "account"),  # not connected (or being disconnected)
    ],
)
def test_default_rules_skip(extra: dict[str, Any], reason: str) -> None:
    assert verdict(**extra) == Verdict(False, reason)  # type: ignore[arg-type]


def test_defaults_keep_tentative_and_no_attendees_but_the_switches_skip_them() -> None:
    assert verdict(response_status="tentative").would_schedule
    assert verdict({"skip_tentative": True}, response_status="tentative").reason == "tentative"
    assert verdict(attendees_count=0).would_schedule
    assert verdict({"skip_without_attendees": True}, attendees_count=0).reason == "no_attendees"
    assert verdict({"skip_declined": False}, response_status="declined").would_schedule
    assert verdict({"skip_all_day": False}, is_all_day=True).would_schedule


def test_started_counts_the_join_offset() -> None:
    ctx = RuleContext(now=NOW, domains=DOMAINS, accounts=ACCOUNTS, join_offset_seconds=600)
    assert verdict(ctx=ctx, start_time=NOW + timedelta(minutes=10)).reason == "started"
    assert verdict(ctx=ctx, start_time=NOW + timedelta(minutes=11)).would_schedule


def test_organized_by_me() -> None:
    rules = {"meetings": "organized_by_me"}
    assert verdict(rules, is_organizer=False).reason == "not_organizer"
    assert verdict(rules, is_organizer=True, response_status="organizer").would_schedule


@pytest.mark.parametrize(
    ("domains", "external"),
    [
        ([], False),  # nobody but me
        (["contoso.example"], False),  # work colleagues
        (["gmail.example", "contoso.example"], False),  # my personal account's domain is mine too
        (["fabrikam-acquired.example"], False),  # the second work domain I connected
        (["contoso.example", "customer.example"], True),  # one outsider makes it external
        (["sub.contoso.example"], True),  # a subdomain is another domain
    ],
)
def test_external_and_internal_across_several_accounts_and_domains(
    domains: list[str], external: bool
) -> None:
    assert is_external(event(attendee_domains=domains), DOMAINS) is external
    ext = verdict({"meetings": "external"}, attendee_domains=domains)
    internal = verdict({"meetings": "internal"}, attendee_domains=domains)
    assert ext == (Verdict(True, "matched") if external else Verdict(False, "internal"))
    assert internal == (Verdict(False, "external") if external else Verdict(True, "matched"))


def test_a_meeting_on_the_personal_account_is_internal_to_the_work_domain_too() -> None:
    """The user's domains are those of every connected account, whichever account the meeting is on."""
    google = {"provider": "google", "account_id": "jane.doe@gmail.example"}
    assert verdict({"meetings": "internal"}, attendee_domains=["contoso.example"], **google).would_schedule
    only_work = RuleContext(now=NOW, domains=frozenset({"gmail.example"}), accounts=ACCOUNTS)
    assert verdict({"meetings": "internal"}, only_work, attendee_domains=["contoso.example"]).reason == (
        "external"
    )


def test_platforms_titles_durations_and_accounts() -> None:
    assert verdict({"platforms": ["zoom"]}).reason == "platform"
    assert verdict({"platforms": ["zoom", "teams"]}).would_schedule
    assert verdict({"platforms": ["zoom"]}, meeting_platform=None).reason == "platform"
    assert verdict({"title_include": ["CUSTOMER"]}).reason == "title"
    assert verdict({"title_include": ["customer"]}, title="Customer call").would_schedule
    assert verdict({"title_exclude": ["Sync"]}).reason == "title"
    assert verdict({"title_include": ["x"]}, title=None).reason == "title"
    assert verdict({"min_duration_minutes": 31}).reason == "duration"
    assert verdict({"min_duration_minutes": 30, "max_duration_minutes": 30}).would_schedule
    assert verdict({"max_duration_minutes": 29}).reason == "duration"
    google_only = {"accounts": [{"provider": "google", "account_id": "jane.doe@gmail.example"}]}
    assert verdict(google_only).reason == "account"
    work = {"accounts": [{"provider": "microsoft", "account_id": "JANE@contoso.example"}]}
    assert verdict(work).would_schedule  # alias and case are the same account


def test_the_first_failing_rule_is_the_reason() -> None:
    rules = {"meetings": "external", "platforms": ["zoom"], "skip_tentative": True}
    assert verdict(rules, response_status="tentative").reason == "tentative"
    assert verdict(rules, is_deleted=True, meeting_url=None).reason == "cancelled"


@pytest.mark.parametrize(
    "bad",
    [
        {"meetings": "mine"},
        {"platforms": ["skype"]},
        {"skip_declined": "yes"},
        {"title_include": [""]},
        {"min_duration_minutes": -1},
        {"min_duration_minutes": 60, "max_duration_minutes": 30},
        {"accounts": [{"provider": "yahoo", "account_id": "a@b.example"}]},
        {"accounts": [{"provider": "google"}]},
        {"unknown": 1},
    ],
)
def test_bad_rules_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AutoScheduleRules.model_validate(bad)


def test_old_stored_settings_read_with_default_rules() -> None:
    stored = {"user_id": "u1", "enabled": True, "updated_at": "2026-12-01T00:00:00Z"}
    assert AutoScheduleSettings.model_validate(stored).rules == AutoScheduleRules()
    assert AutoScheduleRules().model_dump() == {
        "meetings": "all",
        "platforms": None,
        "skip_declined": True,
        "skip_tentative": False,
        "skip_all_day": True,
        "skip_without_attendees": False,
        "title_include": [],
        "title_exclude": [],
        "min_duration_minutes": None,
        "max_duration_minutes": None,
        "accounts": None,
    }
