"""The provider payload as an event item stores it (calbot.store.events): deflated with a preset
dictionary of the providers' field names, its format named by its first byte."""

from __future__ import annotations

import json
import zlib

import pytest

from calbot.store.events import _pack_raw, _unpack_raw

GRAPH_LIKE = {
    "@odata.etag": 'W/"D494xQgsp/eTbwvgwa+V3+XOCrDOsQ=="',
    "id": "AAMkAGI2mdsZ3Idpb_zgKj1OPkpxqLEAErc5z8Yq",
    "createdDateTime": "2026-12-06T18:05:54.3060580Z",
    "lastModifiedDateTime": "2026-12-06T18:05:54.3060840Z",
    "originalStartTimeZone": "UTC",
    "originalEndTimeZone": "UTC",
    "reminderMinutesBeforeStart": 15,
    "isReminderOn": True,
    "hasAttachments": False,
    "subject": "Weekly sync",
    "importance": "normal",
    "sensitivity": "normal",
    "isAllDay": False,
    "isCancelled": False,
    "isOrganizer": True,
    "responseRequested": True,
    "showAs": "busy",
    "type": "singleInstance",
    "isOnlineMeeting": True,
    "onlineMeetingProvider": "teamsForBusiness",
    "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
    "body": {"contentType": "html", "content": ""},
    "start": {"dateTime": "2026-12-06T19:05:00.0000000", "timeZone": "UTC"},
    "end": {"dateTime": "2026-12-06T19:35:00.0000000", "timeZone": "UTC"},
    "location": {"displayName": "", "locationType": "default", "uniqueIdType": "unknown"},
}


def test_a_payload_round_trips_and_the_dictionary_makes_it_smaller() -> None:
    packed = _pack_raw(GRAPH_LIKE)
    assert _unpack_raw(packed) == GRAPH_LIKE
    plain = zlib.compress(json.dumps(GRAPH_LIKE, separators=(",", ":")).encode(), 9)
    assert len(packed) < len(plain) * 0.8


def test_stored_payloads_stay_readable() -> None:
    # Written with format 1: changing its dictionary would make every stored payload unreadable.
    v1 = bytes.fromhex(
        "0178f94204de56ab568216014a564abe064a3a4ab0fcad64050e5b1d254876054a83322c500128cb0279a89956a91600704a187d"
    )
    assert _unpack_raw(v1) == {"subject": "M0", "isAllDay": False, "showAs": "busy", "type": "singleInstance"}
    with pytest.raises(ValueError):  # a format this code does not know is an error, never garbage
        _unpack_raw(b"\x02" + v1[1:])
