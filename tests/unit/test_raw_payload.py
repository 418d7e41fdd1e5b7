"""The provider payload as an event item stores it (calbot.store.events): deflated with a preset
dictionary of the providers' field names and the boilerplate of meeting bodies, its format named by its
first byte."""

from __future__ import annotations

import hashlib
import json
import zlib

import pytest

from bench.auto_schedule import invite_body
from calbot.store.events import _RAW_ZDICT_V1, _RAW_ZDICT_V2, _pack_raw, _unpack_raw

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
    # Format 2 (the body boilerplate added): what every event synced since has.
    v2 = bytes.fromhex(
        "0278f93126d5cfab568216014a564abe064a3a4ab0fcad64050e5b1d254876054a83322c500128cb0279a89956a91600704a187d"
    )
    assert _unpack_raw(v2) == _unpack_raw(v1)
    assert hashlib.sha256(_RAW_ZDICT_V2).hexdigest() == (
        "a5a56477de6188dd019dfb53457d13260373ad040cdc62d3e1bb3042fe8f5102"
    )
    with pytest.raises(ValueError):  # a format this code does not know is an error, never garbage
        _unpack_raw(b"\x09" + v1[1:])


def _deflated_with(dictionary: bytes, raw: dict) -> int:
    packer = zlib.compressobj(9, zdict=dictionary)
    data = json.dumps(raw, separators=(",", ":")).encode()
    return len(packer.compress(data) + packer.flush())


@pytest.mark.parametrize(
    "body",
    [
        invite_body("https://acme.zoom.us/j/84512345678")[:1000],  # as RAW_BODY_LIMIT keeps it
        '<html>\r\n<head>\r\n<meta http-equiv="Content-Type" content="text/html; charset=utf-8">\r\n'
        '<meta name="Generator" content="Microsoft Word 15 (filtered medium)">\r\n<style><!--\r\n'
        '/* Font Definitions */\r\n@font-face\r\n\t{font-family:"Cambria Math";\r\n'
        "\tpanose-1:2 4 5 3 5 4 6 3 2 4;}\r\n@font-face\r\n\t{font-family:Calibri;\r\n"
        "\tpanose-1:2 15 5 2 2 2 4 3 2 4;}\r\n/* Style Definitions */\r\np.MsoNormal, li.MsoNormal, "
        'div.MsoNormal\r\n\t{margin:0in;\r\n\tfont-size:11.0pt;\r\n\tfont-family:"Calibri",sans-serif;}',
    ],
    ids=["zoom-invitation", "desktop-outlook-head"],
)
def test_a_meeting_body_deflates_smaller_with_the_format_2_dictionary(body: str) -> None:
    raw = {**GRAPH_LIKE, "body": {"contentType": "html", "content": body}}
    packed = _pack_raw(raw)
    assert _unpack_raw(packed) == raw
    assert len(packed) - 1 < _deflated_with(_RAW_ZDICT_V1, raw) * 0.8


def test_a_payload_without_a_body_is_no_larger_with_format_2() -> None:
    assert len(_pack_raw(GRAPH_LIKE)) - 1 <= _deflated_with(_RAW_ZDICT_V1, GRAPH_LIKE)
