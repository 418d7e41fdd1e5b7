"""Property tests (hypothesis) for the three pure parsers everything else trusts: meeting-link
detection, recurrence expansion and page cursors.

Derandomized with bounded examples: CI sees the same inputs every run and the file stays well under
30 s. A failure prints the shrunk input; add it as an explicit example next to the property.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from dateutil import rrule as du
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from calbot import cursor
from calbot.errors import DomainError
from calbot.http import status_of
from calbot.links import find_in_text, from_google_event, from_graph_event, match_url
from calbot.recurrence import Series, from_google, from_graph, occurrences
from calbot.timezones import to_zoneinfo, utc_to_local

PROFILE = settings(
    derandomize=True,
    max_examples=200,
    deadline=None,  # a shared CI machine: time limits per example would only add noise
    suppress_health_check=[HealthCheck.too_slow],
)

# --- meeting links ---------------------------------------------------------------------------------

_lower = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10)
_digits = st.text("0123456789", min_size=6, max_size=12).filter(lambda s: s[0] != "0")
_token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=4, max_size=24)


@st.composite
def platform_urls(draw: st.DrawFn) -> tuple[str, str]:
    """(normalised join URL, platform) for every platform we detect, in the forms invitations use."""
    kind = draw(
        st.sampled_from(
            ["zoom", "zoom_pwd", "meet", "teams", "teams_meet", "webex", "webex_jphp", "goto", "whereby"]
        )
    )
    if kind in ("zoom", "zoom_pwd"):
        sub = draw(st.sampled_from(["", "us02web.", "acme.", "us06web."]))
        url = f"https://{sub}zoom.us/j/{draw(_digits)}"
        if kind == "zoom_pwd":
            url += f"?pwd={draw(_token)}.1"
        return url, "zoom"
    if kind == "meet":
        code = "-".join(
            draw(st.text("abcdefghijklmnopqrstuvwxyz", min_size=n, max_size=n)) for n in (3, 4, 3)
        )
        return f"https://meet.google.com/{code}", "google_meet"
    if kind == "teams":
        thread = draw(_token)
        tid = draw(_token)
        return (
            f"https://teams.microsoft.com/l/meetup-join/19%3ameeting_{thread}%40thread.v2/0"
            f"?context=%7b%22Tid%22%3a%22{tid}%22%7d",
            "teams",
        )
    if kind == "teams_meet":
        return f"https://teams.microsoft.com/meet/{draw(_digits)}?p={draw(_token)}", "teams"
    if kind == "webex":
        return f"https://{draw(_lower)}.webex.com/meet/{draw(_lower)}.{draw(_lower)}", "webex"
    if kind == "webex_jphp":
        site = draw(_lower)
        return f"https://{site}.webex.com/{site}/j.php?MTID=m{draw(_token)}", "webex"
    if kind == "goto":
        return f"https://global.gotomeeting.com/join/{draw(_digits)}", "gotomeeting"
    room = draw(_lower.filter(lambda r: r not in ("about", "api", "blog", "help", "login", "org", "user")))
    return f"https://whereby.com/{room}-{draw(_lower)}", "whereby"


def _safelink(url: str) -> str:
    return (
        f"https://nam12.safelinks.protection.outlook.com/?url={quote(url, safe='')}"
        "&data=05%7C02%7Cjane%40contoso.com%7C5f1e&sdata=Zm9v%2BcXV4%3D&reserved=0"
    )


def _google_redirect(url: str) -> str:
    return f"https://www.google.com/url?q={quote(url, safe='')}&sa=D&source=calendar&ust=1733&usg=AOv"


@st.composite
def wrapped(draw: st.DrawFn, url: str) -> str:
    """`url` behind zero to three redirect layers, in any order."""
    for layer in draw(st.lists(st.sampled_from([_safelink, _google_redirect]), max_size=3)):
        url = layer(url)
    return url


# Prose that can hold no URL: no "/" (every candidate, with or without a scheme, needs one) and no ":".
_prose = st.text(st.characters(blacklist_characters="/:<>&\\", blacklist_categories=("Cs",)), max_size=60)


@st.composite
def documents(draw: st.DrawFn, url: str) -> str:
    """`url` embedded in plain text or HTML the way invitations and mail clients write it."""
    before, after = draw(_prose), draw(_prose)
    style = draw(st.sampled_from(["plain", "angle", "paren", "sentence", "href", "href_text", "nbsp"]))
    if style == "plain":
        return f"{before} {url}\n{after}"
    if style == "angle":  # Outlook's plain-text body: "Join <https://...>"
        return f"{before} <{url}> {after}"
    if style == "paren":
        return f"{before} ({url}). {after}"
    if style == "sentence":
        return f"{before} {url}. {after}"
    if style == "nbsp":
        return f"{html.escape(before)}&nbsp;{html.escape(url)}&nbsp;{html.escape(after)}"
    label = "Join the meeting" if style == "href" else html.escape(url)
    return (
        f"<html><body><p>{html.escape(before)}</p>"
        f'<a href="{html.escape(url)}" target="_blank">{label}</a><p>{html.escape(after)}</p></body></html>'
    )


@PROFILE
@given(data=st.data())
def test_any_platform_url_is_found_wrapped_and_embedded(data: st.DataObject) -> None:
    url, platform = data.draw(platform_urls())
    text = data.draw(documents(data.draw(wrapped(url))))
    link = find_in_text(text)
    assert link is not None, text
    assert (link.url, link.platform) == (url, platform)


@PROFILE
@given(data=st.data())
def test_platform_url_without_scheme_or_with_http_is_normalised(data: st.DataObject) -> None:
    url, platform = data.draw(platform_urls())
    variant = data.draw(st.sampled_from(["http://", "", "HTTPS://"])) + url.removeprefix("https://")
    link = match_url(variant)
    assert link is not None and (link.url, link.platform) == (url, platform)


# Look-alikes and the platforms' own non-meeting pages: never a join link.
_NOT_MEETING = [
    "https://zoom.us/pricing",
    "https://zoom.us.{w}.example/j/123456789",
    "https://{w}zoom.us/j/123456789",
    "https://example.com/j/123456789",
    "https://meet.google.com/",
    "https://meet.google.com.{w}.example/abc-defg-hij",
    "https://www.webex.com/meet/{w}",
    "https://whereby.com/pricing",
    "https://help.whereby.com/{w}",
    "https://teams.microsoft.com/downloads",
    "https://{w}.example.org/{w}?q=1",
    "https://www.google.com/url?q=https%3A%2F%2Fexample.com%2F{w}",
    "mailto:{w}@zoom.us?body=https://zoom.us/j/123456789",
]


@PROFILE
@given(
    parts=st.lists(
        st.one_of(_prose, st.builds(lambda t, w: t.format(w=w), st.sampled_from(_NOT_MEETING), _lower)),
        max_size=8,
    )
)
def test_text_without_a_platform_url_finds_nothing(parts: list[str]) -> None:
    assert find_in_text(" ".join(parts)) is None


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@PROFILE
@given(text=st.text(max_size=400))
@example(text="<a href='https://zoom.us:99999/j/1'>x</a> https://[::1/j/1 zoom.us:/j/1 &#99999999;")
def test_link_detection_never_raises_on_arbitrary_text(text: str) -> None:
    link = find_in_text(text)
    assert link is None or link.url.startswith("https://")
    match_url(text)


@PROFILE
@given(
    event=st.dictionaries(
        st.sampled_from(
            [
                "onlineMeeting",
                "location",
                "locations",
                "body",
                "bodyPreview",
                "conferenceData",
                "hangoutLink",
                "description",
                "onlineMeetingUrl",
            ]
        ),
        _json,
    )
)
def test_provider_event_parsers_never_raise_on_odd_shapes(event: dict[str, Any]) -> None:
    from_graph_event(event)
    from_google_event(event)


# --- recurrence ------------------------------------------------------------------------------------

# Zones with DST in either hemisphere, one without, and Windows names as Graph sends them.
_ZONES = [
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "Australia/Sydney",
    "America/Santiago",
    "Asia/Kolkata",
    "UTC",
    "Pacific Standard Time",
    "W. Europe Standard Time",
]
_GRAPH_DAY_NAMES = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]
_PY_WEEKDAY = {
    "monday": 0,
    "tuesday": 1,
    "wednesday": 2,
    "thursday": 3,
    "friday": 4,
    "saturday": 5,
    "sunday": 6,
}
_starts = st.dates(min_value=date(2024, 1, 1), max_value=date(2029, 12, 31))
_clock = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))


def _wall_clock_ok(instant: datetime, series: Series) -> bool:
    """The instant is the series' start time of day in its zone on some date, or - when that wall
    time does not exist that day (DST gap) - the instant that wall time is read as (fold=0)."""
    local = utc_to_local(instant, series.tz)
    wanted = series.dtstart_local.time()
    for day in (local.date(), local.date() - timedelta(days=1)):
        wall = datetime.combine(day, wanted)
        if wall.replace(tzinfo=series.tz, fold=0).astimezone(UTC) == instant:
            return True
    return False


def _check_basic(found: list[datetime], after: datetime, before: datetime, series: Series) -> None:
    assert found == sorted(set(found)), "sorted and unique"
    assert all(after < t < before for t in found), "inside the window"
    bad = [t for t in found if not _wall_clock_ok(t, series)]
    assert not bad, f"not at {series.dtstart_local.time()} local in {series.tz.key}: {bad[:3]}"


@st.composite
def graph_recurrences(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            ["daily", "weekly", "absoluteMonthly", "relativeMonthly", "absoluteYearly", "relativeYearly"]
        )
    )
    pattern: dict[str, Any] = {"type": kind, "interval": draw(st.integers(1, 3))}
    if kind == "weekly" or kind.startswith("relative"):
        size = (1, 7) if kind == "weekly" else (1, 2)
        pattern["daysOfWeek"] = draw(
            st.lists(st.sampled_from(_GRAPH_DAY_NAMES), min_size=size[0], max_size=size[1], unique=True)
        )
    if kind == "weekly":
        pattern["firstDayOfWeek"] = draw(st.sampled_from(_GRAPH_DAY_NAMES))
    if kind.startswith("absolute"):
        pattern["dayOfMonth"] = draw(st.integers(1, 31))
    if kind.startswith("relative"):
        pattern["index"] = draw(st.sampled_from(["first", "second", "third", "fourth", "last"]))
    if kind.endswith("Yearly"):
        pattern["month"] = draw(st.integers(1, 12))
        pattern["interval"] = 1
    start = draw(_starts)
    rng: dict[str, Any] = {
        "type": draw(st.sampled_from(["noEnd", "endDate", "numbered"])),
        "startDate": start.isoformat(),
    }
    if rng["type"] == "endDate":
        rng["endDate"] = (start + timedelta(days=draw(st.integers(0, 800)))).isoformat()
    if rng["type"] == "numbered":
        rng["numberOfOccurrences"] = draw(st.integers(1, 40))
    return {"pattern": pattern, "range": rng}


def _graph_series(recurrence: dict[str, Any], clock: time, zone: str) -> Series:
    begin = datetime.combine(date.fromisoformat(recurrence["range"]["startDate"]), clock)
    return from_graph(
        recurrence,
        start={"dateTime": begin.isoformat() + ".0000000", "timeZone": zone},
        end={"dateTime": (begin + timedelta(minutes=30)).isoformat() + ".0000000", "timeZone": zone},
    )


def _dateutil_instants(rule: du.rrule, tz: ZoneInfo, after: datetime, before: datetime) -> list[datetime]:
    """An independent expansion: dateutil in naive wall time, each wall time read in `tz` (fold=0)."""
    out = []
    for wall in rule:
        instant = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if instant >= before + timedelta(days=1):
            break
        if after < instant < before:
            out.append(instant)
    return sorted(set(out))


@PROFILE
@given(recurrence=graph_recurrences(), clock=_clock, zone=st.sampled_from(_ZONES))
@example(  # the US spring-forward gap: 02:30 does not exist on 2027-03-14
    recurrence={
        "pattern": {"type": "daily", "interval": 1},
        "range": {"type": "numbered", "startDate": "2027-03-10", "numberOfOccurrences": 10},
    },
    clock=time(2, 30),
    zone="America/New_York",
)
def test_graph_series_expand_sorted_in_window_and_at_local_wall_time(
    recurrence: dict[str, Any], clock: time, zone: str
) -> None:
    series = _graph_series(recurrence, clock, zone)
    rng = recurrence["range"]
    first_day = date.fromisoformat(rng["startDate"])
    after = datetime.combine(first_day - timedelta(days=2), time(), tzinfo=UTC)
    before = after + timedelta(days=3 * 366)
    found = occurrences(series, after=after, before=before)
    _check_basic(found, after, before, series)
    local_days = [utc_to_local(t, series.tz).date() for t in found]
    assert all(d >= first_day for d in local_days), "nothing before range.startDate"
    if rng["type"] == "numbered":
        assert len(found) <= rng["numberOfOccurrences"]
    if rng["type"] == "endDate":
        assert all(d <= date.fromisoformat(rng["endDate"]) for d in local_days), "endDate is inclusive"

    # Against dateutil where Graph and RFC 5545 mean the same thing (no month-end folding).
    pattern = recurrence["pattern"]
    if pattern["type"] not in ("daily", "weekly"):
        return
    tz = to_zoneinfo(zone)
    kwargs: dict[str, Any] = {"dtstart": datetime.combine(first_day, clock), "interval": pattern["interval"]}
    if pattern["type"] == "weekly":
        kwargs["byweekday"] = [_PY_WEEKDAY[d] for d in pattern["daysOfWeek"]]
        kwargs["wkst"] = _PY_WEEKDAY[pattern["firstDayOfWeek"]]
    if rng["type"] == "numbered":
        kwargs["count"] = rng["numberOfOccurrences"]
    if rng["type"] == "endDate":
        kwargs["until"] = datetime.combine(date.fromisoformat(rng["endDate"]), time(23, 59, 59))
    freq = du.DAILY if pattern["type"] == "daily" else du.WEEKLY
    assert found == _dateutil_instants(du.rrule(freq, **kwargs), tz, after, before)


_RRULE_DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


@st.composite
def google_rrules(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """(RRULE text, the same rule as dateutil.rrule keyword arguments, UNTIL still to be localised)."""
    freq = draw(st.sampled_from(["DAILY", "WEEKLY", "MONTHLY", "YEARLY"]))
    interval = draw(st.integers(1, 3))
    parts = [f"FREQ={freq}", f"INTERVAL={interval}"]
    kwargs: dict[str, Any] = {"freq": getattr(du, freq), "interval": interval}
    if freq in ("WEEKLY", "DAILY") and draw(st.booleans()):
        days = draw(st.lists(st.sampled_from(_RRULE_DAYS), min_size=1, max_size=4, unique=True))
        parts.append("BYDAY=" + ",".join(days))
        kwargs["byweekday"] = [_RRULE_DAYS.index(d) for d in days]
    if freq in ("MONTHLY", "YEARLY") and draw(st.booleans()):
        if draw(st.booleans()):
            days = draw(
                st.lists(
                    st.sampled_from([1, 2, 10, 15, 28, 29, 30, 31, -1]), min_size=1, max_size=3, unique=True
                )
            )
            parts.append("BYMONTHDAY=" + ",".join(map(str, days)))
            kwargs["bymonthday"] = days
        else:
            nth, day = draw(st.sampled_from([1, 2, 3, 4, -1])), draw(st.sampled_from(_RRULE_DAYS))
            parts.append(f"BYDAY={nth}{day}")
            kwargs["byweekday"] = [getattr(du, day)(nth)]
        if freq == "YEARLY":
            month = draw(st.integers(1, 12))
            parts.append(f"BYMONTH={month}")
            kwargs["bymonth"] = [month]
    end = draw(st.sampled_from(["none", "count", "until"]))
    if end == "count":
        kwargs["count"] = draw(st.integers(1, 30))
        parts.append(f"COUNT={kwargs['count']}")
    elif end == "until":
        kwargs["until_utc"] = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=draw(st.integers(0, 40_000)))
        parts.append("UNTIL=" + kwargs["until_utc"].strftime("%Y%m%dT%H%M%SZ"))
    return "RRULE:" + ";".join(parts), kwargs


@PROFILE
@given(
    rule=google_rrules(),
    start=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31)).map(
        lambda d: d.replace(second=0, microsecond=0, minute=d.minute - d.minute % 15)
    ),
    zone=st.sampled_from([z for z in _ZONES if " " not in z]),
)
def test_google_rrule_matches_dateutil_with_dtstart_counted(
    rule: tuple[str, dict[str, Any]], start: datetime, zone: str
) -> None:
    text, kwargs = rule
    # A BYMONTH whose BYMONTHDAY it never has (Feb 30) matches nothing; dateutil would scan to 9999.
    assume(not (kwargs.get("bymonth") == [2] and all(d in (30, 31) for d in kwargs.get("bymonthday", [0]))))
    series = from_google(
        [text],
        start={"dateTime": start.isoformat(), "timeZone": zone},
        end={"dateTime": (start + timedelta(hours=1)).isoformat(), "timeZone": zone},
    )
    after = datetime(2024, 12, 30, tzinfo=UTC)
    before = datetime(2031, 1, 1, tzinfo=UTC)
    found = occurrences(series, after=after, before=before)
    _check_basic(found, after, before, series)
    assert found and found[0] == series.dtstart_utc, "RFC 5545: DTSTART is always the first occurrence"

    # Oracle: dateutil from the same wall-clock DTSTART, UNTIL in local time; DTSTART counts once.
    dtstart = series.dtstart_local
    args = {k: v for k, v in kwargs.items() if k != "until_utc"}
    if "until_utc" in kwargs:
        args["until"] = utc_to_local(kwargs["until_utc"], series.tz)
    expected = set(_dateutil_instants(du.rrule(dtstart=dtstart, **args), series.tz, after, before))
    if "count" in args and series.dtstart_utc not in expected:
        args["count"] -= 1
        expected = set(
            _dateutil_instants(du.rrule(dtstart=dtstart, **args), series.tz, after, before)
            if args["count"]
            else []
        )
    expected.add(series.dtstart_utc)
    assert found == sorted(expected)
    if "count" in kwargs:
        assert len(found) <= kwargs["count"]
    if "until_utc" in kwargs:
        assert all(t <= kwargs["until_utc"] for t in found[1:]), "UNTIL bounds every rule occurrence"


# --- cursors ---------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _cursor_key() -> Iterator[None]:
    """A fixed signing key: cursor tests need no SSM (the key's storage is tested in service tests)."""
    saved = cursor._key
    cursor._key = bytes(range(32))
    yield
    cursor._key = saved


_ids = st.text(st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=40)
_payloads = st.dictionaries(st.text(max_size=20), _json, max_size=6)


def _rejected(user_id: str, scope: str, token: str) -> None:
    with pytest.raises(DomainError) as caught:
        cursor.decode(user_id, scope, token)
    assert (status_of(caught.value), caught.value.code) == (400, "invalid_cursor")


@PROFILE
@given(user_id=_ids, scope=_ids, data=_payloads)
def test_cursor_round_trips_any_payload(user_id: str, scope: str, data: dict[str, Any]) -> None:
    token = cursor.encode(user_id, scope, data)
    assert token.isascii() and " " not in token
    assert cursor.decode(user_id, scope, token) == data


@PROFILE
@given(user_id=_ids, scope=_ids, data=_payloads, where=st.integers(min_value=0), char=st.characters())
@example(user_id="u", scope="s", data={"k": 1}, where=10_000, char="é")  # non-ASCII in the MAC
def test_cursor_with_any_character_changed_is_rejected(
    user_id: str, scope: str, data: dict[str, Any], where: int, char: str
) -> None:
    token = cursor.encode(user_id, scope, data)
    i = where % len(token)
    assume(token[i] != char)
    _rejected(user_id, scope, token[:i] + char + token[i + 1 :])


@PROFILE
@given(user_id=_ids, scope=_ids, data=_payloads, cut=st.integers(min_value=1))
def test_truncated_cursor_is_rejected(user_id: str, scope: str, data: dict[str, Any], cut: int) -> None:
    token = cursor.encode(user_id, scope, data)
    _rejected(user_id, scope, token[: len(token) - 1 - cut % len(token)])


@PROFILE
@given(user_id=_ids, scope=_ids, data=_payloads, suffix=_ids)
def test_cursor_is_bound_to_user_and_query(
    user_id: str, scope: str, data: dict[str, Any], suffix: str
) -> None:
    token = cursor.encode(user_id, scope, data)
    _rejected(user_id + suffix, scope, token)
    if suffix != user_id:
        _rejected(suffix, scope, token)
    _rejected(user_id, scope + suffix, token)


@PROFILE
@given(token=st.text(max_size=80) | st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
@example(token="é.é")
@example(token="\udcff.x")
def test_arbitrary_cursor_text_is_rejected_cleanly(token: str) -> None:
    _rejected("usr_1", "scope", token)
