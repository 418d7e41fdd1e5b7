"""Attendance for the auto-schedule rules, parsed from both providers (PROTOCOLS "Attendance"): the
organizer, the user's own response, the invitees' count and domains, never the attendee list. Both
from realistic payloads and from what the emulators serve through the provider's own request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from werkzeug.test import Client

from calbot.providers.base import DOMAIN_LIMIT
from calbot.providers.google import MAX_ATTENDEES, google_attendance, normalize_google_event
from calbot.providers.outlook import EVENT_SELECT, graph_attendance, normalize_graph_event
from local.emulators.google import GoogleEmulator
from local.emulators.graph import GraphEmulator

ME = "jane@contoso.example"


def graph_item(**extra: Any) -> dict[str, Any]:
    return {
        "id": "AAMk-1",
        "subject": "Customer call",
        "start": {"dateTime": "2026-12-07T10:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-07T10:30:00.0000000", "timeZone": "UTC"},
        "type": "singleInstance",
        "isOrganizer": False,
        "responseStatus": {"response": "declined", "time": "2026-12-06T09:00:00Z"},
        "organizer": {"emailAddress": {"name": "Ann Buyer", "address": "ann@Fabrikam.example"}},
        "attendees": [
            {
                "type": "required",
                "status": {"response": "none", "time": "0001-01-01T00:00:00Z"},
                "emailAddress": {"name": "Jane", "address": ME},
            },
            {
                "type": "optional",
                "status": {"response": "accepted", "time": "0001-01-01T00:00:00Z"},
                "emailAddress": {"name": "Bob", "address": "bob@contoso.example"},
            },
            {
                "type": "resource",
                "status": {"response": "accepted", "time": "0001-01-01T00:00:00Z"},
                "emailAddress": {"name": "Room 4", "address": "room4@rooms.contoso.example"},
            },
        ],
        **extra,
    }


def test_graph_invitee_copy_gives_response_organizer_count_and_domains() -> None:
    event = normalize_graph_event("cal", graph_item())
    assert event.organizer_email == "ann@Fabrikam.example" and event.organizer_name == "Ann Buyer"
    assert event.response_status == "declined" and event.is_organizer is False
    assert event.attendees_count == 2  # the room is not a person
    assert event.attendee_domains == ["fabrikam.example", "contoso.example"]


def test_graph_responses_map_to_ours() -> None:
    for graph, ours in [
        ("tentativelyAccepted", "tentative"),
        ("accepted", "accepted"),
        ("notResponded", "none"),
        ("none", "none"),
        ("organizer", "organizer"),
    ]:
        item = graph_item(responseStatus={"response": graph})
        assert graph_attendance([item]).response_status == ours
    own = graph_attendance([graph_item(isOrganizer=True, responseStatus={"response": "organizer"})])
    assert own.is_organizer and own.response_status == "organizer"


def test_graph_occurrence_reads_attendance_from_its_master_and_its_own_answer_first() -> None:
    master = graph_item(id="M", type="seriesMaster", responseStatus={"response": "accepted"})
    occurrence = {
        "id": "O",
        "type": "occurrence",
        "seriesMasterId": "M",
        "start": master["start"],
        "end": master["end"],
    }
    event = normalize_graph_event("cal", occurrence, master=master)
    assert event.response_status == "accepted" and event.attendees_count == 2
    declined = normalize_graph_event("cal", occurrence, master=master, detail=graph_item())
    assert declined.response_status == "declined"


def test_graph_large_meeting_keeps_counts_and_capped_domains_not_the_list() -> None:
    people = [
        {"type": "required", "emailAddress": {"address": f"p{n}@d{n}.example"}, "status": {}}
        for n in range(500)
    ]
    event = normalize_graph_event("cal", graph_item(attendees=people))
    assert event.attendees_count == 500
    assert len(event.attendee_domains) == DOMAIN_LIMIT


def google_item(**extra: Any) -> dict[str, Any]:
    return {
        "id": "g1",
        "status": "confirmed",
        "summary": "Stand-up",
        "start": {"dateTime": "2026-12-07T10:00:00+01:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-12-07T10:15:00+01:00", "timeZone": "Europe/Berlin"},
        "organizer": {"email": "lead@contoso.example", "displayName": "Lead"},
        "attendees": [
            {"email": "lead@contoso.example", "organizer": True, "responseStatus": "accepted"},
            {"email": ME, "self": True, "responseStatus": "tentative"},
            {"email": "x@Partner.example", "responseStatus": "needsAction"},
            {
                "email": "c_188@resource.calendar.google.com",
                "resource": True,
                "responseStatus": "accepted",
            },
        ],
        **extra,
    }


def test_google_self_row_is_the_users_answer_and_the_organizer_row_is_not_counted() -> None:
    event = normalize_google_event("primary", google_item())
    assert event.response_status == "tentative" and not event.is_organizer
    assert event.organizer_email == "lead@contoso.example" and event.organizer_name == "Lead"
    assert event.attendees_count == 2  # me and the partner; not the organizer, not the room
    assert event.attendee_domains == ["contoso.example", "partner.example"]


def test_google_own_event_and_answers() -> None:
    own = google_attendance({"organizer": {"email": ME, "self": True}})
    assert own.is_organizer and own.response_status == "organizer" and own.attendees_count == 0
    for google, ours in [("needsAction", "none"), ("declined", "declined"), ("accepted", "accepted")]:
        item = google_item()
        item["attendees"][1]["responseStatus"] = google
        assert google_attendance(item).response_status == ours


def test_google_omitted_attendees_count_as_more_than_the_cap() -> None:
    item = google_item(
        attendees=[{"email": ME, "self": True, "responseStatus": "accepted"}], attendeesOmitted=True
    )
    assert google_attendance(item).attendees_count == MAX_ATTENDEES + 1


# --------------------------------------------------------------------------------------------------
# The emulators serve the real fields, read by the provider's own requests


def test_graph_emulator_invitee_answer_reaches_the_event() -> None:
    emu = GraphEmulator()
    emu.add_app("11111111-2222-3333-4444-555555555555", "s3cr3t~value")
    account = emu.add_account(
        client_id="11111111-2222-3333-4444-555555555555",
        user_principal_name=ME,
        display_name="Jane Doe",
        mail=ME,
    )
    client = Client(emu)
    token = client.post(
        "/common/oauth2/v2.0/token",
        data={
            "client_id": "11111111-2222-3333-4444-555555555555",
            "client_secret": "s3cr3t~value",
            "grant_type": "refresh_token",
            "refresh_token": account["refresh_token"],
            "scope": "offline_access User.Read Calendars.Read",
        },
    ).json["access_token"]
    start = datetime(2026, 12, 7, 10, tzinfo=UTC)
    made = emu.add_event(
        account["id"],
        account["calendars"][0]["id"],
        subject="Customer call",
        start=start.isoformat(),
        end=(start + timedelta(minutes=30)).isoformat(),
        organizer={"name": "Ann Buyer", "address": "ann@fabrikam.example"},
        attendees=[{"address": ME, "response": "tentativelyAccepted"}, "bob@contoso.example"],
    )
    body = client.get(
        f"/v1.0/me/events/{quote(made['id'])}?$select={EVENT_SELECT}",
        headers={"Authorization": f"Bearer {token}"},
    ).json
    event = normalize_graph_event("cal", body, detail=body)
    assert event.response_status == "tentative" and not event.is_organizer
    assert event.organizer_name == "Ann Buyer" and event.attendees_count == 2
    assert event.attendee_domains == ["fabrikam.example", "contoso.example"]


def test_google_emulator_self_row_and_organizer_reach_the_event() -> None:
    emu = GoogleEmulator(notification_coalesce_seconds=0.0)
    client_id, secret, email = "1-a.apps.googleusercontent.com", "GOCSPX-x", "sam@gmail.example"
    emu.add_app(client_id, secret)
    account = emu.add_account(email, name="Sam", time_zone="Europe/Berlin", client_id=client_id)
    client = Client(emu)
    token = client.post(
        "/token",
        data={
            "client_id": client_id,
            "client_secret": secret,
            "grant_type": "refresh_token",
            "refresh_token": account["refresh_token"],
        },
    ).json["access_token"]
    start = datetime(2026, 12, 7, 10, tzinfo=UTC)
    emu.add_event(
        email,
        "primary",
        summary="Vendor sync",
        start=start,
        end=start + timedelta(minutes=45),
        organizer={"email": "vic@vendor.example", "name": "Vic"},
        attendees=[
            {"email": "vic@vendor.example", "responseStatus": "accepted"},
            {"email": email, "responseStatus": "declined"},
        ],
    )
    items = client.get(
        "/calendar/v3/calendars/primary/events",
        query_string={"singleEvents": "true", "maxAttendees": str(MAX_ATTENDEES)},
        headers={"Authorization": f"Bearer {token}"},
    ).json["items"]
    event = normalize_google_event("primary", items[0])
    assert event.response_status == "declined" and not event.is_organizer
    assert event.organizer_email == "vic@vendor.example" and event.organizer_name == "Vic"
    assert event.attendee_domains == ["vendor.example", "gmail.example"]
    assert event.attendees_count == 1  # the organizer's row (organizer: true) is not an invitee
    assert [a.get("organizer") for a in items[0]["attendees"]] == [True, None]
