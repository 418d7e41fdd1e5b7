"""Page cursors are opaque and tamper-evident: bound to the user and the query, signed with a key in SSM."""

from __future__ import annotations

import pytest

from calbot import cursor, ids
from calbot.errors import DomainError
from calbot.http import status_of
from local.stack import LocalStack


@pytest.fixture(autouse=True)
def _stack(inproc_stack: LocalStack) -> None:
    cursor._key = None  # the key lives in this stack's SSM


def test_round_trip_and_rejections() -> None:
    scope = cursor.scope_of("events", {"provider": "outlook", "time_min": None})
    token = cursor.encode("usr_a", scope, {"a": "2026-12-01T09:00:00Z#evt_x"})
    assert cursor.decode("usr_a", scope, token) == {"a": "2026-12-01T09:00:00Z#evt_x"}
    payload, mac = token.split(".")
    forged = [
        token[:-1] + ("A" if token[-1] != "A" else "B"),  # edited signature
        payload[:-2] + "xx." + mac,  # edited payload
        "garbage",
        "",
        ".",
        "a.b.c",
    ]
    for bad in forged:
        with pytest.raises(DomainError) as err:
            cursor.decode("usr_a", scope, bad)
        assert (status_of(err.value), err.value.code) == (400, "invalid_cursor")
    with pytest.raises(DomainError):
        cursor.decode("usr_b", scope, token)  # another user's cursor
    with pytest.raises(DomainError):
        cursor.decode("usr_a", cursor.scope_of("events", {"provider": "google"}), token)  # another query


def test_scope_ignores_paging_fields() -> None:
    assert cursor.scope_of(
        "events", {"provider": "outlook", "limit": "5", "sync": "true"}
    ) == cursor.scope_of("events", {"provider": "outlook", "limit": "50"})


def test_a_cursor_is_bound_to_the_listing_that_issued_it() -> None:
    # The same (empty) query on two listings: an events cursor must not page scheduled bots.
    token = cursor.encode("usr_a", cursor.scope_of("events", {}), {"a": "2026-12-01T09:00:00Z#evt_x"})
    with pytest.raises(DomainError) as err:
        cursor.decode("usr_a", cursor.scope_of("scheduled_bots", {}), token)
    assert (status_of(err.value), err.value.code) == (400, "invalid_cursor")


def test_event_ids_are_stable_and_unique_across_accounts() -> None:
    a = ids.event_id("usr_1", "outlook", "Jane@Acme.com", "AAMkAD=")
    assert a == ids.event_id("usr_1", "outlook", "jane@acme.com", "AAMkAD=")  # same account, any case
    assert a != ids.event_id("usr_1", "outlook", "john@acme.com", "AAMkAD=")
    assert a != ids.event_id("usr_2", "outlook", "jane@acme.com", "AAMkAD=")
    assert a != ids.event_id("usr_1", "google", "jane@acme.com", "AAMkAD=")
    # evt_, the account's 8-character prefix (one account's events are a range of ids), the event's 26
    assert a.startswith(ids.account_prefix("usr_1", "outlook", "JANE@acme.com")) and len(a) == 38
