"""What the strict local AWS (local/aws_limits.py) found in our own calls, each fixed and pinned here."""

from __future__ import annotations

import pytest

from calbot.models import ChangeMessage
from calbot.services import notifications
from local.stack import LocalStack

LONG_ADDRESS = ("a" * 64 + ".") * 3 + "b@" + "c" * 40 + ".example"  # 241 characters, a valid length
UNICODE_ADDRESS = "josé.núñez@empresa.example"


@pytest.mark.parametrize("address", [LONG_ADDRESS, UNICODE_ADDRESS, "jane@contoso.example"])
def test_a_change_for_any_account_address_can_be_queued(inproc_stack: LocalStack, address: str) -> None:
    # SQS takes a FIFO MessageGroupId of 1-128 ASCII letters, digits and punctuation; the group used to
    # be the raw address, so a long or non-ASCII one could never be queued: its changes were lost.
    message = ChangeMessage(user_id="usr_0123456789abcdef", provider="outlook", account_id=address)
    notifications.enqueue(message, dedup="d" * 64)
    group = notifications.group_id(message)
    assert 1 <= len(group) <= 128 and group.isascii()
    assert group == notifications.group_id(message.model_copy(update={"account_id": address.upper()}))


def test_distinct_accounts_keep_distinct_groups() -> None:
    groups = {
        notifications.group_id(ChangeMessage(user_id="usr_1", provider="outlook", account_id=a))
        for a in (LONG_ADDRESS, LONG_ADDRESS.replace("b@", "x@"), UNICODE_ADDRESS, "jane@contoso.example")
    }
    assert len(groups) == 4
