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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from local.stack import LocalStack
from tests.dynamo_units import DynamoWrites, item_size

__all__ = [
    "CodeUnderTest",
    "DynamoWrites",
    "background_paused",
    "connect_new_account",
    "item_size",
    "virtual_time",
]


@pytest.fixture(scope="session")
def inproc_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(state_dir=Path(tmp_path_factory.mktemp("inproc-stack")), seed=False)
    stack.start()
    # Service tests call the services themselves: change notifications would start background syncs
    # (webhook -> queue -> worker) racing with what a test counts. The e2e suite covers that path.
    stack.graph.pause_notifications()
    stack.google.pause_notifications()
    # Nor do the cron jobs run in the background (the tests that need one run it themselves): a real
    # :20 would arm the far bots other tests count as deferred, a real 00:00 or 03:00 would schedule
    # and renew across every test's users while tests count bots and provider calls.
    stack.clock.cron.jobs = []
    _inproc_stacks.append(stack)
    yield stack
    _inproc_stacks.remove(stack)
    stack.stop()


_inproc_stacks: list[LocalStack] = []  # the session's in-process stack, once a test has started it


@contextmanager
def virtual_time(
    at: datetime | None = None,
    *,
    sleep_advances: bool = True,
    on_sleep: Callable[[float], object] | None = None,
) -> Iterator[list[datetime]]:
    """calbot's now() is moment[0] (`at`, or the real now), a list the test moves on; sleep() advances
    it (thread-safe; unless `sleep_advances` is False) after telling `on_sleep`. The previous time
    source comes back after.

    Meanwhile the in-process stack's background loop (due schedules, cron jobs, queue consumers) is
    paused (`background_paused`): that loop runs at real time, and what it ran would run under the
    test's time, handing other tests' bots to the launcher as if their meetings had ended (a CI
    failure, twice: an hourly arming job once, a delayed launch message once)."""
    from calbot import timeutil

    moment = [at or datetime.now(UTC)]
    lock = threading.Lock()

    def sleep(seconds: float) -> None:
        if on_sleep is not None:
            on_sleep(seconds)
        if sleep_advances:
            with lock:
                moment[0] += timedelta(seconds=seconds)

    saved = (timeutil._clock, timeutil._sleeper)
    with background_paused():
        timeutil.set_clock(lambda: moment[0], sleep)
        try:
            yield moment
        finally:
            timeutil.set_clock(*saved)


@pytest.fixture
def background_off() -> Iterator[None]:
    """`background_paused` for a whole test: asked for before monkeypatch, it outlasts the patches."""
    with background_paused():
        yield


@contextmanager
def background_paused() -> Iterator[None]:
    """The in-process stack's background loop off for a block (if a test has started the stack), the
    work it had started finished first: for a test that sets calbot's clock its own way."""
    paused = [stack for stack in _inproc_stacks if stack.clock.running]
    for stack in paused:
        stack.clock.stop()
    try:
        yield
    finally:
        for stack in paused:
            stack.clock.start()


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


def seed_outlook_connection(
    user_id: str,
    mail: str,
    acct: dict[str, Any],
    client_id: str,
    client_secret: str,
    *,
    limit: int,
    at: datetime,
) -> None:
    """Store one emulator account's connection as connect would (credentials in the vault, the record
    with its one calendar), without connect's provider calls and subscriptions: the many-accounts
    benches and tests seed hundreds of accounts this way. The emulator account is Graph's add_account
    answer."""
    from calbot import store, vault
    from calbot.models import CalendarInfo, Connection, Credentials
    from calbot.providers import get_provider

    path = vault.credential_path(user_id, "outlook", mail)
    vault.put(
        path,
        Credentials(
            provider="outlook",
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=acct["refresh_token"],
            scopes=get_provider("outlook").scopes,
        ),
    )
    store.create_connection(
        Connection(
            user_id=user_id,
            provider="outlook",
            account_id=mail,
            credential_path=path,
            webhook_url="-",
            calendars=[CalendarInfo(id=acct["calendars"][0]["id"], name="Calendar", is_primary=True)],
            created_at=at,
            updated_at=at,
        ),
        limit=limit,
    )


@pytest.fixture(params=["ssm", "dynamodb"])
def credential_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test once per credential backend (template parameter CredentialBackend), each from a cold
    container: no access token remembered in memory, no data key cached."""
    from calbot import envelope, tokencache
    from calbot.config import reset_settings

    monkeypatch.setenv("CREDENTIAL_BACKEND", request.param)
    reset_settings()
    tokencache.clear_memory()
    envelope.reset()
    yield str(request.param)
    monkeypatch.undo()
    reset_settings()
    tokencache.clear_memory()


@contextmanager
def batch_get_consistency() -> Iterator[list[bool]]:
    """The ConsistentRead of every BatchGetItem made inside the block, in order."""
    from calbot import aws

    seen: list[bool] = []

    def spy(params: dict[str, Any], **_: Any) -> None:
        seen.extend(bool(t.get("ConsistentRead")) for t in params.get("RequestItems", {}).values())

    events = aws.dynamodb().meta.events
    events.register("provide-client-params.dynamodb.BatchGetItem", spy)
    try:
        yield seen
    finally:
        events.unregister("provide-client-params.dynamodb.BatchGetItem", spy)


def secret_items(user_id: str) -> list[str]:
    """The sort keys of a user's encrypted secret items (CRED# credentials, TOKEN# cached tokens)."""
    from calbot import aws, store

    items = aws.dynamodb().query(
        TableName=store._table(),
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": store.user_pk(user_id)}},
        ProjectionExpression="SK",
    )["Items"]
    return sorted(i["SK"]["S"] for i in items if i["SK"]["S"].startswith(("CRED#", "TOKEN#")))


class AwsCalls:
    """Counts AWS API calls ("ssm:GetParameter", "kms:Decrypt", ...) made by the code under test,
    whatever client makes them (the Encryption SDK builds its own KMS client)."""

    def __init__(self, scope: CodeUnderTest) -> None:
        from collections import Counter

        self.scope = scope
        self.counts: Counter[str] = Counter()

    def wrap(self, original: Any) -> Any:
        calls = self

        def counted(client: Any, operation_name: str, api_params: Any) -> Any:
            if calls.scope.active():
                calls.counts[f"{client.meta.service_model.endpoint_prefix}:{operation_name}"] += 1
            return original(client, operation_name, api_params)

        return counted

    def of(self, service: str) -> dict[str, int]:
        return {k: v for k, v in self.counts.items() if k.startswith(service + ":")}

    def reset(self) -> None:
        self.counts.clear()


@pytest.fixture
def aws_calls(code_under_test: CodeUnderTest, monkeypatch: pytest.MonkeyPatch) -> AwsCalls:
    from botocore.client import BaseClient

    calls = AwsCalls(code_under_test)
    monkeypatch.setattr(BaseClient, "_make_api_call", calls.wrap(BaseClient._make_api_call))
    return calls
