"""The Graph emulator's invitee answer (`POST /_control/events/{id}/respond`): what Graph's
accept / tentativelyAccept / decline do from the invitee's calendar client, seen by a sync client."""

from __future__ import annotations

from typing import Any

from werkzeug.test import Client

from local.emulators.graph import GraphEmulator
from tests.unit.test_graph_emulator import by_id, client, delta_url, emu, jane, sync  # noqa: F401

MAIL = "jane@contoso.example"  # the account `jane` is (add_account)


def test_an_invitee_declining_changes_their_row_and_delta_reports_the_event(
    emu: GraphEmulator,  # noqa: F811
    client: Client,  # noqa: F811
    jane: dict[str, Any],  # noqa: F811
) -> None:
    made = emu.add_event(
        jane["id"],
        jane["calendar_id"],
        subject="Invitation",
        start="2026-11-03T10:00:00Z",
        end="2026-11-03T10:30:00Z",
        organizer="host@customer.example",
        attendees=[{"address": MAIL, "type": "optional"}, "host@customer.example"],
    )
    _, link, _ = sync(client, delta_url(jane), jane["headers"])
    answer = client.post(
        f"/_control/events/{made['id']}/respond", json={"attendee": MAIL.upper(), "response": "declined"}
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    changed, _, _ = sync(client, link, jane["headers"])
    assert list(by_id(changed)) == [made["id"]]  # a new changeKey: delta reports it
    full = client.get(f"/v1.0/me/events/{made['id']}", headers=jane["headers"]).json
    rows = {a["emailAddress"]["address"]: a for a in full["attendees"]}
    mine = rows[MAIL]
    assert (mine["type"], mine["status"]["response"]) == ("optional", "declined")  # in its place
    assert rows["host@customer.example"]["status"]["response"] == "none"
    assert full["responseStatus"]["response"] == "declined"  # the invitee's own copy shows their answer
    for body, status in (
        ({"attendee": MAIL, "response": "maybe"}, 400),
        ({"attendee": MAIL}, 400),
    ):
        assert client.post(f"/_control/events/{made['id']}/respond", json=body).status_code == status
    emu.cancel_event(made["id"])
    cancelled = client.post(
        f"/_control/events/{made['id']}/respond", json={"attendee": MAIL, "response": "accepted"}
    )
    assert cancelled.status_code == 409
