"""The queue workers never start a unit of work they have no time left to finish: it goes back to the
queue (a batch item failure) untouched, instead of being killed half-way at the function's Timeout."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from calbot import deadline, store
from calbot.deadline import Deadline
from calbot.models import AutoScheduleMessage, ChangeMessage, EnableAutoScheduleRequest
from calbot.services import auto_schedule, notifications
from local.stack import LocalStack
from tests.conftest import connect_new_account

CLIENT_ID = "worker-deadline-client"
CLIENT_SECRET = "worker-deadline-secret-31"


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> Iterator[LocalStack]:
    inproc_stack.graph.add_app(CLIENT_ID, CLIENT_SECRET)
    yield inproc_stack


def test_the_sync_worker_hands_back_messages_it_has_no_time_for(stack: LocalStack) -> None:
    user_id, acct = connect_new_account(stack, CLIENT_ID, CLIENT_SECRET, prefix="wdl")
    message = ChangeMessage(user_id=user_id, provider="outlook", account_id=acct["mail"])
    records = [{"messageId": f"m{i}", "body": message.model_dump_json()} for i in range(2)]
    stack.graph.clear_requests()
    with deadline.active(Deadline.after(notifications.MESSAGE_SECONDS - 5)):
        answer = notifications.consume({"Records": records})
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m0"}, {"itemIdentifier": "m1"}]}
    assert stack.graph.requests(account=acct["id"]) == []  # not started at all
    with deadline.active(Deadline.after(120)):
        assert notifications.consume({"Records": records[:1]}) == {"batchItemFailures": []}
    assert stack.graph.requests(account=acct["id"]) != []


def test_the_auto_schedule_worker_hands_back_users_it_has_no_time_for(stack: LocalStack) -> None:
    user_id, _ = connect_new_account(stack, CLIENT_ID, CLIENT_SECRET, prefix="wdl")
    auto_schedule.enable(user_id, EnableAutoScheduleRequest.model_validate({"default_bot_config": {}}))
    record = {"messageId": "u1", "body": AutoScheduleMessage(user_id=user_id, run_id="r1").model_dump_json()}
    before = store.get_auto_settings(user_id)
    assert before is not None
    with deadline.active(Deadline.after(auto_schedule.USER_SECONDS - 5)):
        assert auto_schedule.consume({"Records": [record]}) == {
            "batchItemFailures": [{"itemIdentifier": "u1"}]
        }
    after = store.get_auto_settings(user_id)
    assert after is not None and after.last_run_at == before.last_run_at  # the user's run never started
    with deadline.active(Deadline.after(300)):
        assert auto_schedule.consume({"Records": [record]}) == {"batchItemFailures": []}
    ran = store.get_auto_settings(user_id)
    assert ran is not None and ran.last_run_at is not None and ran.last_run_at != before.last_run_at
