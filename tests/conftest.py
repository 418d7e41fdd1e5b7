"""Shared fixtures.

`inproc_stack`: the local stack (moto server, Graph emulator, gateway) started inside the test process,
for service tests that call the core services directly and need the real provider protocol (including
the Graph validation handshake, which calls back into our webhook through the gateway).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
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
