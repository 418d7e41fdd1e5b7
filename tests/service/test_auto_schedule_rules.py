"""Auto-schedule rules through the services and the handlers: storage with the settings, PUT
validation, the preview agreeing with what the job then does on both providers, per-user isolation."""

from __future__ import annotations

import copy
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import store
from calbot.models import (
    AutoScheduleRules,
    AutoScheduleSettings,
    CreateConnectionRequest,
    EnableAutoScheduleRequest,
    PreviewQuery,
)
from calbot.services import auto_schedule
from calbot.services.connect import connect_account
from calbot.services.sync import sync_user
from local.stack import LocalStack
from tests.conftest import connect_new_account
from tests.function_apps import ROOT, load_app

MS_ID, MS_SECRET = "rules-svc-ms-client", "rules-svc-ms-secret"
G_ID, G_SECRET = "777-rules.apps.googleusercontent.com", "GOCSPX-rules-svc-secret"
TEAMS = "https://teams.microsoft.com/l/meetup-join/19%3arules{n}%40thread.v2/0"
RULES_APP = load_app("auto_schedule_rules", "auto_schedule_rules_app_svc").handler
PREVIEW_APP = load_app("auto_schedule_preview", "auto_schedule_preview_app_svc").handler
_n = itertools.count()


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> LocalStack:
    inproc_stack.graph.add_app(MS_ID, MS_SECRET)
    inproc_stack.google.add_app(G_ID, G_SECRET)
    return inproc_stack


def api(function: str, user_id: str, *, body: Any = None, query: str = "") -> tuple[int, Any]:
    """The function's sample event (events/), as the caller `user_id`, with this body / query."""
    event = copy.deepcopy(json.loads((ROOT / "events" / f"{function}.json").read_text()))
    event["requestContext"]["authorizer"]["lambda"]["user_id"] = user_id
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
    event["rawQueryString"] = query
    event["queryStringParameters"] = dict(p.split("=", 1) for p in query.split("&")) if query else None
    handler = RULES_APP if function == "AutoScheduleRulesFunction" else PREVIEW_APP
    answer = handler(event, None)
    return answer["statusCode"], json.loads(answer["body"])


def at(hours: float) -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=hours)


def two_provider_user(stack: LocalStack) -> tuple[str, dict[str, Any], str]:
    """A user with a Graph account (contoso.example) and a Google one (gmail.example), and a meeting
    of each kind on them: (user id, Graph account, Google address)."""
    user_id, graph = connect_new_account(stack, MS_ID, MS_SECRET, prefix="rules")
    me = graph["mail"]
    email = f"rules.google{next(_n)}@gmail.example"
    google = stack.google.add_account(email, client_id=G_ID)
    connect_account(
        user_id,
        CreateConnectionRequest(
            google_client_id=G_ID, google_client_secret=G_SECRET, google_refresh_token=google["refresh_token"]
        ),
        base_url=stack.info["gateway_url"],
    )
    cal = graph["calendars"][0]["id"]

    def outlook(subject: str, hours: float, **extra: Any) -> None:
        extra.setdefault("online_meeting_url", TEAMS.format(n=next(_n)))
        stack.graph.add_event(
            graph["id"],
            cal,
            subject=subject,
            start=at(hours).isoformat(),
            end=at(hours + 0.5).isoformat(),
            **extra,
        )

    def gmeet(summary: str, hours: float, **extra: Any) -> None:
        stack.google.add_event(
            email, "primary", summary=summary, start=at(hours), end=at(hours + 0.5), meet=True, **extra
        )

    outlook(
        "G declined board",
        2,
        organizer="boss@contoso.example",
        attendees=[{"address": me, "response": "declined"}, "client@acme-customer.example"],
    )
    outlook("G internal standup", 3, attendees=["colleague@contoso.example"])
    outlook("G external customer call", 4, attendees=["buyer@acme-customer.example"])
    day = (datetime.now(UTC) + timedelta(days=1)).date()
    stack.graph.add_event(
        graph["id"],
        cal,
        subject="G all day offsite",
        start=day,
        end=day + timedelta(days=1),
        is_all_day=True,
        online_meeting_url=TEAMS.format(n=next(_n)),
    )
    gmeet(
        "O tentative partner sync",
        5,
        organizer={"email": "pat@partner.example", "name": "Pat"},
        attendees=[
            {"email": "pat@partner.example", "responseStatus": "accepted"},
            {"email": email, "responseStatus": "tentative"},
        ],
    )
    gmeet("O internal 1:1", 6, attendees=[{"email": email}, {"email": "colleague@contoso.example"}])
    gmeet("O external demo", 7, attendees=[{"email": email}, {"email": "lead@prospect.example"}])
    stack.google.add_event(email, "primary", summary="O no link", start=at(8), end=at(8.5))
    return user_id, graph, email


def previewed(user_id: str, hours: int = 24) -> dict[str, tuple[bool, str]]:
    result = auto_schedule.preview(user_id, PreviewQuery(hours=hours))
    return {r.title or "": (r.would_schedule, r.reason) for r in result.results}


def test_preview_tells_why_on_both_providers_and_the_job_then_does_exactly_that(stack: LocalStack) -> None:
    user_id, _, _ = two_provider_user(stack)
    sync_user(user_id)
    rules = {"meetings": "external", "skip_tentative": True}
    status, view = api("AutoScheduleRulesFunction", user_id, body=rules)
    assert status == 200 and view["enabled"] is False and view["rules"]["meetings"] == "external"
    assert previewed(user_id) == {
        "G declined board": (False, "declined"),
        "G internal standup": (False, "internal"),
        "G external customer call": (True, "matched"),
        "G all day offsite": (False, "all_day"),
        "O tentative partner sync": (False, "tentative"),
        "O internal 1:1": (False, "internal"),  # contoso.example is the user's Graph account's domain
        "O external demo": (True, "matched"),
        "O no link": (False, "no_link"),
    }
    would = {t for t, (yes, _) in previewed(user_id).items() if yes}

    view = auto_schedule.enable(user_id, EnableAutoScheduleRequest())
    assert view.rules == AutoScheduleRules.model_validate(rules)  # enable without rules keeps them
    bots = store.upcoming_bots(user_id, after=datetime.now(UTC), limit=50)
    assert {b.title for b in bots} == would
    assert view.last_run is not None
    run = view.last_run
    assert (run.scheduled, run.skipped_no_link, run.skipped_rules, run.skipped_existing) == (2, 1, 5, 0)
    after = previewed(user_id)
    assert {t for t, (_, reason) in after.items() if reason == "has_bot"} == would
    assert not any(yes for yes, _ in after.values())

    # Only within the asked hours: the 2-hour preview reaches the first timed meeting, not the next.
    short = previewed(user_id, hours=2)
    assert "G declined board" in short and "G internal standup" not in short


def test_rules_in_enable_and_the_defaults_skip_declined_and_all_day(stack: LocalStack) -> None:
    user_id, _, _ = two_provider_user(stack)
    view = auto_schedule.enable(user_id, EnableAutoScheduleRequest())
    assert view.rules == AutoScheduleRules()
    titles = {b.title for b in store.upcoming_bots(user_id, after=datetime.now(UTC), limit=50)}
    assert titles == {
        "G internal standup",
        "G external customer call",
        "O tentative partner sync",
        "O internal 1:1",
        "O external demo",
    }
    other, _, _ = two_provider_user(stack)
    only = {"meetings": "internal", "platforms": ["google_meet"]}
    view = auto_schedule.enable(other, EnableAutoScheduleRequest.model_validate({"rules": only}))
    assert view.rules.meetings == "internal" and view.rules.platforms == ["google_meet"]
    titles = {b.title for b in store.upcoming_bots(other, after=datetime.now(UTC), limit=50)}
    assert titles == {"O internal 1:1"}


def test_rules_are_stored_alone_and_old_settings_read_with_the_defaults(stack: LocalStack) -> None:
    user_id, _ = connect_new_account(stack, MS_ID, MS_SECRET, prefix="rulesstore")
    store.put_auto_settings(
        AutoScheduleSettings(
            user_id=user_id, enabled=True, updated_at=datetime.now(UTC), join_offset_seconds=120
        )
    )
    assert auto_schedule.get_settings_view(user_id).rules == AutoScheduleRules()
    status, view = api("AutoScheduleRulesFunction", user_id, body={"title_exclude": ["1:1"]})
    assert status == 200
    assert view["enabled"] is True and view["join_offset_seconds"] == 120  # untouched by the rules
    assert view["rules"]["title_exclude"] == ["1:1"] and view["rules"]["skip_declined"] is True
    assert user_id in set(store.enabled_auto_users())  # the index entry stays
    # A PUT replaces the whole object: omitted fields go back to their defaults.
    status, view = api("AutoScheduleRulesFunction", user_id, body={"skip_declined": False})
    assert view["rules"]["title_exclude"] == [] and view["rules"]["skip_declined"] is False
    assert auto_schedule.get_settings_view(user_id).rules.skip_declined is False


@pytest.mark.parametrize(
    "body",
    [
        {"meetings": "mine"},
        {"platforms": ["skype"]},
        {"skip_declined": "yes"},
        {"min_duration_minutes": 60, "max_duration_minutes": 10},
        {"accounts": [{"provider": "yahoo", "account_id": "a@b.example"}]},
        {"title_include": ["x"] * 51},
        {"extra": True},
        [],
        "not json",
    ],
)
def test_bad_rules_are_a_400_json_error_and_change_nothing(stack: LocalStack, body: Any) -> None:
    user_id = f"usr_rulesbad{next(_n)}"
    status, answer = api("AutoScheduleRulesFunction", user_id, body=body)
    assert status == 400 and answer["error"] in ("invalid_request", "invalid_json") and answer["message"]
    assert store.get_auto_settings(user_id) is None


@pytest.mark.parametrize("query", ["hours=0", "hours=169", "hours=x", "hours=24&other=1"])
def test_preview_hours_outside_1_to_168_are_a_400(stack: LocalStack, query: str) -> None:
    status, answer = api("AutoSchedulePreviewFunction", "usr_rules_preview_bad", query=query)
    assert status == 400 and answer["error"] == "invalid_request"


def test_each_user_sees_and_sets_only_their_own(stack: LocalStack) -> None:
    a, _, _ = two_provider_user(stack)
    b, _ = connect_new_account(stack, MS_ID, MS_SECRET, prefix="rulesb")
    sync_user(a)
    status, _ = api("AutoScheduleRulesFunction", b, body={"meetings": "organized_by_me"})
    assert status == 200
    assert auto_schedule.get_settings_view(a).rules == AutoScheduleRules()
    status, mine = api("AutoSchedulePreviewFunction", b, query="hours=168")
    assert status == 200 and mine == {"results": []}
    status, theirs = api("AutoSchedulePreviewFunction", a, query="hours=168")
    assert status == 200 and len(theirs["results"]) == 8
    assert set(theirs["results"][0]) == {
        "event_id",
        "title",
        "start_time",
        "provider",
        "account_id",
        "would_schedule",
        "reason",
    }
    assert {r["provider"] for r in theirs["results"]} == {"outlook", "google"}
