"""FIFO ids on the sync queue: SQS takes a MessageGroupId / MessageDeduplicationId of 1-128 printable
ASCII characters; ours must fit whatever the user or account id holds, one group per account."""

from __future__ import annotations

import re

import pytest

from calbot.models import ChangeMessage
from calbot.services import notifications

SQS_ID = re.compile(r"^[!-~]{1,128}$")
LONG_USER = "usr_" + "u" * 60  # the longest user id a message takes (64)
ADDRESS_320 = ("a" * 63 + ".") * 4 + "b@" + "c" * 54 + ".example"  # 320 characters
NON_ASCII = "josé.núñez@empresa.example"


def message(user_id: str, account_id: str, provider: str = "outlook") -> ChangeMessage:
    return ChangeMessage(user_id=user_id, provider=provider, account_id=account_id)  # type: ignore[arg-type]


def test_the_long_address_is_320_characters() -> None:
    assert len(ADDRESS_320) == 320 and len(LONG_USER) == 64


@pytest.mark.parametrize("account_id", [ADDRESS_320, NON_ASCII, "jane@contoso.example"])
@pytest.mark.parametrize("user_id", [LONG_USER, "usr_1"])
def test_a_group_id_always_fits_sqs_and_is_the_same_for_every_message_of_the_account(
    user_id: str, account_id: str
) -> None:
    group = notifications.group_id(message(user_id, account_id))
    assert SQS_ID.match(group) and len(group) <= 128
    # hashed: neither the address nor the user id shows in the queue's message attributes
    assert account_id.lower() not in group and user_id not in group
    # the same account however its address is cased, and whatever the message is about
    again = message(user_id, account_id.upper()).model_copy(update={"kind": "renew", "subscription_id": "s"})
    assert notifications.group_id(again) == group


def test_each_account_has_its_own_group() -> None:
    pairs = [
        (u, p, a)
        for u in (LONG_USER, LONG_USER[:-1] + "v", "usr_1")
        for p in ("outlook", "google")
        for a in (ADDRESS_320, ADDRESS_320[:-9] + "d.example", NON_ASCII, "jane@contoso.example")
    ]
    groups = {notifications.group_id(message(u, a, p)) for u, p, a in pairs}
    assert len(groups) == len(pairs)


@pytest.mark.parametrize("dedup", ["d" * 64, "x" * 129 + "1", "x" * 129 + "2", "é" * 10])
def test_a_deduplication_id_always_fits_sqs_and_is_never_cut_short(dedup: str) -> None:
    got = notifications.deduplication_id(dedup)
    assert SQS_ID.match(got)
    assert got == dedup if SQS_ID.match(dedup) else got != dedup[:128]


def test_long_deduplication_ids_sharing_a_prefix_stay_distinct() -> None:
    a, b = "x" * 129 + "1", "x" * 129 + "2"
    assert notifications.deduplication_id(a) != notifications.deduplication_id(b)
