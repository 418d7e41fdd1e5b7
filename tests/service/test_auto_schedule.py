"""services.auto_schedule: the window and its overlap, the sparse index, the worker's partial batches."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import aws, store
from calbot.models import EnableAutoScheduleRequest
from calbot.services import auto_schedule
from local.stack import LocalStack
from tests.conftest import connect_new_account, setting

CLIENT_ID = "auto-svc-client"
CLIENT_SECRET = "auto-svc-secret-5"
_n = itertools.count()


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> LocalStack:
    inproc_stack.graph.add_app(CLIENT_ID, CLIENT_SECRET)
    return inproc_stack


def user(stack: LocalStack) -> tuple[str, dict[str, Any]]:
    return connect_new_account(stack, CLIENT_ID, CLIENT_SECRET, prefix="auto")


def meeting(stack: LocalStack, acct: dict[str, Any], hours: float, subject: str) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=hours)
    stack.graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject=subject,
        start=start.isoformat(),
        end=(start + timedelta(minutes=30)).isoformat(),
        location=f"https://acme.zoom.us/j/{hours}",
    )


def test_the_window_covers_24h_plus_an_overlap_and_counts_what_it_skips(stack: LocalStack) -> None:
    user_id, acct = user(stack)
    meeting(stack, acct, 1, "soon")
    meeting(stack, acct, 25, "early tomorrow")  # inside the overlap: the next run may reach this user late
    meeting(stack, acct, 28, "later tomorrow")  # the next run's job
    view = auto_schedule.enable(
        user_id, EnableAutoScheduleRequest.model_validate({"default_bot_config": {"bot_name": "A"}})
    )
    assert view.enabled and view.last_run is not None and view.last_run.scheduled == 2
    titles = {b.title for b in store.upcoming_bots(user_id, after=datetime.now(UTC), limit=10)}
    assert titles == {"soon", "early tomorrow"}
    again = auto_schedule.run_for_user(user_id)
    assert again is not None and (again.scheduled, again.skipped_existing) == (0, 2)


def test_fan_out_reads_only_enabled_users_and_the_worker_reports_only_failing_ones(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    on, _ = user(stack)
    off, _ = user(stack)
    auto_schedule.enable(on, EnableAutoScheduleRequest())
    auto_schedule.enable(off, EnableAutoScheduleRequest())
    auto_schedule.disable(off)
    assert on in set(store.enabled_auto_users()) and off not in set(store.enabled_auto_users())

    queue = aws.sqs().create_queue(QueueName=f"fanout-test-{next(_n)}")["QueueUrl"]
    result = auto_schedule.fan_out(queue)
    bodies: list[dict[str, Any]] = []
    while True:
        got = aws.sqs().receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            break
        bodies += [json.loads(m["Body"]) for m in got]
    users = [u for b in bodies for u in b["user_ids"]]
    assert result["users_enqueued"] == len(users) and result["failed"] == 0
    assert result["messages"] == len(bodies) == -(-len(users) // auto_schedule.USERS_PER_MESSAGE)  # packed
    assert on in users and off not in users
    assert len({b["run_id"] for b in bodies}) == 1

    def flaky(user_id: str) -> None:
        if user_id == "usr_boom":
            raise RuntimeError("one user's failure")

    monkeypatch.setattr(auto_schedule, "run_for_user", flaky)
    records = [
        {"messageId": "m1", "body": json.dumps({"user_id": on, "run_id": "r"})},
        {"messageId": "m2", "body": json.dumps({"user_id": "usr_boom", "run_id": "r"})},
        {"messageId": "m3", "body": "not json"},
    ]
    # m2 is retried alone; m3 can never succeed, so it is dropped (logged), not retried forever.
    assert auto_schedule.consume({"Records": records}) == {"batchItemFailures": [{"itemIdentifier": "m2"}]}

    # Several users in a message: the failing one goes back to the queue alone, the message is done.
    monkeypatch.setattr(auto_schedule, "RETRY_DELAY_SECONDS", 0)
    ran: list[str] = []
    monkeypatch.setattr(auto_schedule, "run_for_user", lambda u: (flaky(u), ran.append(u))[0])
    with setting("AUTO_SCHEDULE_QUEUE_URL", queue):
        body = json.dumps({"user_ids": ["usr_a", "usr_boom", "usr_b"], "run_id": "r"})
        assert auto_schedule.consume({"Records": [{"messageId": "m4", "body": body}]}) == {
            "batchItemFailures": []
        }
        assert ran == ["usr_a", "usr_b"]
        got = aws.sqs().receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        assert [json.loads(m["Body"])["user_ids"] for m in got] == [["usr_boom"]]


@pytest.mark.parametrize("change", ["disable", "new_config"])
def test_a_settings_change_during_a_run_is_never_undone_by_the_run(stack: LocalStack, change: str) -> None:
    """The run has read the settings; the user changes them; then the run records its outcome. The
    user's change must survive (the run writes only its own fields), and so must the run's outcome."""
    user_id, acct = user(stack)
    meeting(stack, acct, 2, "in flight")
    auto_schedule.enable(
        user_id, EnableAutoScheduleRequest.model_validate({"default_bot_config": {"bot_name": "Old"}})
    )
    users_change = {
        "disable": lambda: auto_schedule.disable(user_id),
        "new_config": lambda: auto_schedule.enable(
            user_id, EnableAutoScheduleRequest.model_validate({"default_bot_config": {"bot_name": "New"}})
        ),
    }[change]
    state = {"armed": True}

    def before_write(params: dict[str, Any], model: Any, **_: Any) -> None:
        # The run's write of the settings item is about to leave: the user's request lands first.
        key = params.get("Key") or params.get("Item") or {}
        if state["armed"] and key.get("SK", {}).get("S") == "SETTINGS#AUTO" and model.name != "GetItem":
            state["armed"] = False
            users_change()

    events = aws.dynamodb().meta.events
    events.register("provide-client-params.dynamodb.*", before_write)
    try:
        outcome = auto_schedule.run_for_user(user_id)
    finally:
        events.unregister("provide-client-params.dynamodb.*", before_write)
    assert not state["armed"], "the run wrote no settings"
    settings = store.get_auto_settings(user_id)
    assert settings is not None and outcome is not None
    if change == "disable":
        assert settings.enabled is False
        assert user_id not in set(store.enabled_auto_users())  # out of the midnight job's index too
    else:
        assert settings.enabled and settings.default_bot_config == {"bot_name": "New"}
    assert settings.last_run == outcome  # the run's own fields are kept as well
