"""Shared fixtures.

`inproc_stack`: the local stack (moto server, Graph emulator, gateway) started inside the test process,
for service tests that call the core services directly and need the real provider protocol (including
the Graph validation handshake, which calls back into our webhook through the gateway).
"""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from local.stack import LocalStack
from tests.dynamo_units import DynamoWrites, item_size

__all__ = ["CodeUnderTest", "DynamoWrites", "connect_new_account", "item_size"]


@pytest.fixture(scope="session")
def inproc_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(state_dir=Path(tmp_path_factory.mktemp("inproc-stack")), seed=False)
    stack.start()
    # Service tests call the services themselves: change notifications would start background syncs
    # (webhook -> queue -> worker) racing with what a test counts. The e2e suite covers that path.
    stack.graph.pause_notifications()
    stack.google.pause_notifications()
    yield stack
    stack.stop()


@contextmanager
def setting(variable: str, value: str) -> Iterator[None]:
    """A function setting (environment variable) replaced for a block; the cached settings follow."""
    from calbot.config import get_settings

    before = os.environ.get(variable)
    os.environ[variable] = value
    get_settings.cache_clear()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = before
        get_settings.cache_clear()


def renewal_night() -> Counter[str]:
    """The 03:00 renewal job, then the renewal worker over every message it queued, in-process and on
    a queue of the test's own (the stack's clock feeds the real one to its worker in the background):
    the outcomes by kind. Subscriptions the worker put back after a failure wait out their delay."""
    from calbot import aws
    from calbot.services import subscriptions

    sqs = aws.sqs()
    queue = sqs.create_queue(QueueName=f"renewal-test-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    with setting("RENEWAL_QUEUE_URL", queue):  # where the worker puts failed subscriptions back
        job = subscriptions.run_renewal(queue)
        assert job["failed"] == 0
        counts: Counter[str] = Counter()
        while got := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
            for m in got:
                record = {"messageId": m["MessageId"], "body": m["Body"]}
                counts.update(subscriptions.renew_batch({"Records": [record]})[1])
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
        return counts


class CodeUnderTest:
    """Which threads are running the code under test: the test's own thread, and the pool workers while
    they run work that the code under test submitted (sync fans accounts out to a ThreadPoolExecutor).

    The in-process stack shares calbot's clients with its own threads (the clock firing schedules and
    draining queues, the servers): a counter hooked on a shared client must not count their calls, or
    a test's count depends on what else happened to run meanwhile (issue 16: a DeleteItem and a PutItem
    from the clock made test_one_update_item_and_one_write_unit_per_request fail on a loaded machine).
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._local.active = True  # the thread that made it: the test's

    def active(self) -> bool:
        return getattr(self._local, "active", False)

    def submit_wrapper(self, submit: Any) -> Any:
        scope = self

        def tracked_submit(pool: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            if not scope.active():
                return submit(pool, fn, *args, **kwargs)

            def run(*a: Any, **kw: Any) -> Any:
                before = scope.active()
                scope._local.active = True
                try:
                    return fn(*a, **kw)
                finally:
                    scope._local.active = before

            return submit(pool, run, *args, **kwargs)

        return tracked_submit


@pytest.fixture
def code_under_test(monkeypatch: pytest.MonkeyPatch) -> CodeUnderTest:
    from concurrent.futures import ThreadPoolExecutor

    scope = CodeUnderTest()
    monkeypatch.setattr(ThreadPoolExecutor, "submit", scope.submit_wrapper(ThreadPoolExecutor.submit))
    return scope


@pytest.fixture
def ddb_writes(code_under_test: CodeUnderTest) -> Iterator[DynamoWrites]:
    from calbot import aws

    counter = DynamoWrites(code_under_test)
    events = aws.dynamodb().meta.events
    counter.attach(events)
    yield counter
    counter.detach(events)


_accounts = itertools.count()


def connect_new_account(
    stack: LocalStack,
    client_id: str,
    client_secret: str,
    *,
    user_id: str | None = None,
    prefix: str = "svc",
    **account: Any,
) -> tuple[str, dict[str, Any]]:
    """A user (new unless given) with one more connected emulator account: (user_id, emulator account)."""
    from calbot.admin import create_user
    from calbot.models import CreateConnectionRequest
    from calbot.services.connect import connect_account

    mail = f"{prefix}{next(_accounts)}@contoso.example"
    user_id = user_id or create_user(mail).user_id
    acct = stack.graph.add_account(client_id=client_id, mail=mail, user_principal_name=mail, **account)
    connect_account(
        user_id,
        CreateConnectionRequest(
            microsoft_client_id=client_id,
            microsoft_client_secret=client_secret,
            microsoft_refresh_token=acct["refresh_token"],
        ),
        base_url=stack.info["gateway_url"],
    )
    return user_id, {**acct, "mail": mail}
