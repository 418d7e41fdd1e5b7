"""Pure parts of the Google provider: event normalisation, throttling detection, channel expiry."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import requests

from calbot.providers.google import _expiration, _retryable, normalize_google_event
from calbot.providers.http import ProviderHttp


def _resp(status: int, body: dict[str, Any]) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = json.dumps(body).encode()
    resp.headers["Content-Type"] = "application/json"
    return resp


def _error(status: int, reason: str) -> requests.Response:
    return _resp(status, {"error": {"code": status, "message": reason, "errors": [{"reason": reason}]}})


def test_meet_event_uses_conference_data_before_description() -> None:
    item = {
        "id": "evt1",
        "status": "confirmed",
        "summary": "Standup",
        "start": {"dateTime": "2026-11-26T09:00:00-08:00", "timeZone": "America/Los_Angeles"},
        "end": {"dateTime": "2026-11-26T09:30:00-08:00", "timeZone": "America/Los_Angeles"},
        "description": "Backup: https://zoom.us/j/123456789",
        "conferenceData": {
            "entryPoints": [
                {"entryPointType": "phone", "uri": "tel:+1-555-0100"},
                {"entryPointType": "video", "uri": "https://meet.google.com/abc-defg-hij"},
            ]
        },
        "organizer": {"email": "sam@example.com"},
        "iCalUID": "evt1@google.com",
    }
    event = normalize_google_event("primary", item)
    assert event.meeting_platform == "google_meet"
    assert event.meeting_url == "https://meet.google.com/abc-defg-hij"
    assert event.start == datetime(2026, 11, 26, 17, 0, tzinfo=UTC)
    assert event.timezone == "America/Los_Angeles"
    assert event.event_type == "single" and event.series_platform_id is None
    assert event.organizer_email == "sam@example.com"


def test_all_day_event() -> None:
    item = {"id": "d1", "start": {"date": "2026-12-01"}, "end": {"date": "2026-12-02"}, "summary": "Offsite"}
    event = normalize_google_event("primary", item)
    assert event.is_all_day
    assert event.start == datetime(2026, 12, 1, tzinfo=UTC)
    assert event.meeting_url is None


def test_instances_carry_series_rule_and_moved_ones_are_exceptions() -> None:
    master = {
        "id": "series1",
        "start": {"dateTime": "2026-11-02T10:00:00+01:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-11-02T10:30:00+01:00", "timeZone": "Europe/Berlin"},
        "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=MO", "EXDATE;TZID=Europe/Berlin:20261109T100000"],
    }
    plain = {
        "id": "series1_20261116T090000Z",
        "recurringEventId": "series1",
        "originalStartTime": {"dateTime": "2026-11-16T10:00:00+01:00", "timeZone": "Europe/Berlin"},
        "start": {"dateTime": "2026-11-16T10:00:00+01:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-11-16T10:30:00+01:00", "timeZone": "Europe/Berlin"},
        "hangoutLink": "https://meet.google.com/xyz-abcd-efg",
    }
    moved = {**plain, "id": "series1_20261123T090000Z"}
    moved["originalStartTime"] = {"dateTime": "2026-11-23T10:00:00+01:00", "timeZone": "Europe/Berlin"}
    moved["start"] = {"dateTime": "2026-11-23T14:00:00+01:00", "timeZone": "Europe/Berlin"}
    moved["end"] = {"dateTime": "2026-11-23T14:30:00+01:00", "timeZone": "Europe/Berlin"}
    a = normalize_google_event("primary", plain, master=master)
    b = normalize_google_event("primary", moved, master=master)
    assert a.event_type == "occurrence" and b.event_type == "exception"
    assert a.series_platform_id == b.series_platform_id == "series1"
    assert b.original_start == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert a.recurrence_rule and "FREQ=WEEKLY" in a.recurrence_rule
    assert a.recurrence == {"google": master["recurrence"]}
    assert a.meeting_platform == "google_meet"


def test_long_descriptions_are_trimmed_in_raw_but_the_link_is_found() -> None:
    item = {
        "id": "big",
        "start": {"dateTime": "2026-11-26T09:00:00Z"},
        "end": {"dateTime": "2026-11-26T10:00:00Z"},
        "description": "x" * 5000 + " https://acme.zoom.us/j/987654321?pwd=abc",
    }
    event = normalize_google_event("primary", item)
    assert event.meeting_platform == "zoom"
    assert len(event.raw["description"]) == 1000 and event.raw["description_truncated"] is True


def test_rate_limit_403s_are_retried_but_permission_403s_are_not() -> None:
    assert _retryable(_error(403, "rateLimitExceeded"))
    assert _retryable(_error(403, "userRateLimitExceeded"))
    assert _retryable(_error(429, "rateLimitExceeded"))
    assert _retryable(_resp(503, {}))
    assert not _retryable(_error(403, "forbidden"))
    assert not _retryable(_error(404, "notFound"))


def test_http_backs_off_on_rate_limited_403_then_succeeds() -> None:
    answers = [_error(403, "userRateLimitExceeded"), _error(403, "rateLimitExceeded"), _resp(200, {"ok": 1})]
    sleeps: list[float] = []
    http = ProviderHttp(sleep=sleeps.append, retryable=_retryable)
    http.session.request = lambda *a, **k: answers.pop(0)  # type: ignore[method-assign]
    resp = http.request("GET", "https://www.googleapis.com/calendar/v3/x")
    assert resp.status_code == 200
    assert len(sleeps) == 2 and sleeps[1] > 0  # exponential backoff between attempts
    assert http.requests_made == 3


def test_channel_expiration_is_milliseconds() -> None:
    assert _expiration("1795000000000") == datetime.fromtimestamp(1795000000, tz=UTC)
