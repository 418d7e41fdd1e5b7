"""Lambda's per-function concurrency on the local gateway (local/concurrency.py): at most N handler
runs of a function overlap (N = its ReservedConcurrentExecutions, else the local stand-in for the
account's pool); a synchronous invoke past it is throttled and API Gateway answers 500, while an
event source's invoke queues for a slot."""

from __future__ import annotations

import io
import json
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from local.concurrency import DEFAULT_LOCAL_CONCURRENCY, FunctionConcurrency, ReservationRefused, Throttled
from local.gateway import Gateway
from local.template import load_template

ROOT = Path(__file__).resolve().parents[2]

TEMPLATE = """\
Globals:
  Function:
    Runtime: python3.12
    Handler: app.handler
    Timeout: 30
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
  BusyFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: busy/
      ReservedConcurrentExecutions: 2
      Events:
        Busy: {Type: HttpApi, Properties: {ApiId: !Ref Api, Path: /busy, Method: GET}}
  PoolFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: pool/
      Events:
        Pool: {Type: HttpApi, Properties: {ApiId: !Ref Api, Path: /pool, Method: GET}}
  ZeroFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: zero/
      ReservedConcurrentExecutions: 0
      Events:
        Zero: {Type: HttpApi, Properties: {ApiId: !Ref Api, Path: /zero, Method: GET}}
"""

# Counts the runs that overlap and holds each until the test lets them all go.
BLOCKING = """
    import threading

    LOCK = threading.Lock()
    RUNNING = [0]
    PEAK = [0]
    STARTED = []
    GO = threading.Event()

    def handler(event, context):
        with LOCK:
            RUNNING[0] += 1
            PEAK[0] = max(PEAK[0], RUNNING[0])
            STARTED.append(1)
        try:
            GO.wait(20)
        finally:
            with LOCK:
                RUNNING[0] -= 1
        return {"statusCode": 200, "body": "{}"}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("busy", "pool", "zero"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "app.py").write_text(textwrap.dedent(BLOCKING))
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    return tmp_path / "template.yaml"


@pytest.fixture
def log() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def gateway(project: Path, log: io.StringIO) -> Iterator[Gateway]:
    gateway = Gateway(load_template(project, stack_name="t"), log=log, concurrency=3)
    yield gateway
    for fn in ("BusyFn", "PoolFn", "ZeroFn"):
        _module(gateway, fn).GO.set()  # no handler outlives its test


def _module(gateway: Gateway, logical_id: str) -> Any:
    return sys.modules[gateway.handler(logical_id).__module__]


def _eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait (a liveness bound, not a timing claim) until `condition` holds."""
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def _get_concurrently(gateway: Gateway, path: str, n: int) -> tuple[list[threading.Thread], list[Any]]:
    answers: list[Any] = []
    lock = threading.Lock()

    def get() -> None:
        answer = Client(gateway).get(path)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=get, daemon=True) for _ in range(n)]
    for thread in threads:
        thread.start()
    return threads, answers


def test_reserved_concurrency_lets_that_many_run_and_the_rest_get_api_gateways_500(
    gateway: Gateway, log: io.StringIO
) -> None:
    busy = _module(gateway, "BusyFn")
    threads, answers = _get_concurrently(gateway, "/busy", 6)
    # Two run (ReservedConcurrentExecutions: 2, though the local pool would allow 3); the other four
    # are refused at once, while those two still hold their slots.
    _eventually(lambda: len(answers) == 4, "four requests answered while two handlers run")
    assert busy.RUNNING[0] == 2
    for answer in answers:
        assert answer.status_code == 500
        assert json.loads(answer.get_data(as_text=True)) == {"message": "Internal Server Error"}
    busy.GO.set()
    for thread in threads:
        thread.join(20)
    assert sorted(a.status_code for a in answers) == [200, 200, 500, 500, 500, 500]
    assert busy.PEAK[0] == 2 and len(busy.STARTED) == 2  # a throttled request never reaches the handler
    stats = gateway.concurrency.stats()["BusyFn"]
    assert stats == {
        "limit": 2,
        "reserved": True,
        "running": 0,
        "peak": 2,
        "throttles": 4,
        "waits": 0,
        "held": 0,
    }
    assert "BusyFn throttled (1 so far)" in log.getvalue()


def test_a_function_without_reserved_concurrency_gets_the_local_pool(gateway: Gateway) -> None:
    pool = _module(gateway, "PoolFn")
    threads, answers = _get_concurrently(gateway, "/pool", 5)
    _eventually(lambda: len(answers) == 2, "two requests refused while three handlers run")
    assert [a.status_code for a in answers] == [500, 500]
    assert pool.RUNNING[0] == 3
    pool.GO.set()
    for thread in threads:
        thread.join(20)
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 500, 500]
    assert pool.PEAK[0] == 3
    assert gateway.concurrency.stats()["PoolFn"]["reserved"] is False


def test_event_source_invocations_queue_for_a_slot_instead_of_failing(gateway: Gateway) -> None:
    busy = _module(gateway, "BusyFn")
    results: list[Any] = []
    lock = threading.Lock()

    def invoke() -> None:
        out = gateway.invoke_function("BusyFn", {"Records": []})  # how the clock invokes (SQS, Scheduler)
        with lock:
            results.append(out)

    threads = [threading.Thread(target=invoke, daemon=True) for _ in range(5)]
    for thread in threads:
        thread.start()
    _eventually(lambda: gateway.concurrency.stats()["BusyFn"]["waits"] == 3, "three invocations queued")
    assert busy.RUNNING[0] == 2 and results == []
    busy.GO.set()
    for thread in threads:
        thread.join(20)
    assert results == [{"statusCode": 200, "body": "{}"}] * 5
    assert busy.PEAK[0] == 2 and len(busy.STARTED) == 5
    assert gateway.concurrency.stats()["BusyFn"]["throttles"] == 0


def test_reserved_concurrency_zero_throttles_every_invocation(gateway: Gateway) -> None:
    assert Client(gateway).get("/zero").status_code == 500
    with pytest.raises(Throttled) as refused:
        gateway.invoke_function("ZeroFn", {})  # even an event source's: it would wait forever
    assert refused.value.payload["errorType"] == "TooManyRequestsException"
    assert refused.value.payload["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert _module(gateway, "ZeroFn").STARTED == []


def test_a_held_function_is_throttled_until_its_slots_are_given_back(gateway: Gateway) -> None:
    assert gateway.concurrency.hold("BusyFn") == 2
    assert Client(gateway).get("/busy").status_code == 500
    assert gateway.concurrency.unhold("BusyFn") == 2
    busy = _module(gateway, "BusyFn")
    busy.GO.set()
    assert Client(gateway).get("/busy").status_code == 200


def test_a_slot_is_given_back_when_the_handler_cannot_even_be_imported(project: Path) -> None:
    (project.parent / "busy" / "app.py").write_text("raise ImportError('broken package')\n")
    gateway = Gateway(load_template(project, stack_name="t"), log=io.StringIO(), concurrency=3)
    for _ in range(3):  # more than the two slots: each failed import released its own
        assert Client(gateway).get("/busy").status_code == 500
    assert gateway.concurrency.stats()["BusyFn"]["running"] == 0
    assert gateway.concurrency.throttles("BusyFn") == 0


def test_the_local_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, project: Path) -> None:
    template = load_template(project, stack_name="t")
    monkeypatch.delenv("LOCAL_LAMBDA_CONCURRENCY", raising=False)
    assert FunctionConcurrency(template).limit("PoolFn") == DEFAULT_LOCAL_CONCURRENCY
    monkeypatch.setenv("LOCAL_LAMBDA_CONCURRENCY", "7")
    limits = FunctionConcurrency(template)
    assert (limits.limit("PoolFn"), limits.limit("BusyFn"), limits.limit("ZeroFn")) == (7, 2, 0)
    monkeypatch.setenv("LOCAL_LAMBDA_CONCURRENCY", "0")
    with pytest.raises(ValueError):
        FunctionConcurrency(template)


def test_the_real_templates_reserved_concurrency_is_read() -> None:
    template = load_template(ROOT / "template.yaml", stack_name="calbot-local")
    launcher = template.function("BotLauncherFunction")
    default = template.resolve({"Ref": "LauncherReservedConcurrency"})
    assert launcher.reserved_concurrency == int(default)
    assert template.function("WebhookFunction").reserved_concurrency is None


def test_reservations_must_leave_lambdas_unreserved_minimum_or_the_stack_refuses_to_start() -> None:
    # Lambda keeps 100 of the account's limit unreserved (the whole limit when it is under 100): a
    # deployment reserving more fails, and so does the local stack's start.
    template = load_template(ROOT / "template.yaml", stack_name="calbot-local")
    reserved = template.function("BotLauncherFunction").reserved_concurrency
    assert reserved
    FunctionConcurrency(template, account_limit=reserved + 100)
    with pytest.raises(ReservationRefused, match=r"below its minimum value of \[100\]"):
        FunctionConcurrency(template, account_limit=reserved + 99)
    with pytest.raises(ReservationRefused, match=r"below its minimum value of \[10\]"):
        Gateway(template, account_concurrency=10, enforce_iam=False)
    # LauncherReservedConcurrency=0 reserves nothing (not Lambda's 0, which would stop every launch):
    # the launcher shares the pool, and a new account's limit of 10 takes the stack.
    unreserved = load_template(
        ROOT / "template.yaml",
        parameter_overrides={"LauncherReservedConcurrency": "0"},
        stack_name="calbot-local",
    )
    assert unreserved.function("BotLauncherFunction").reserved_concurrency is None
    limits = FunctionConcurrency(unreserved, local_limit=7, account_limit=10)
    assert limits.limit("BotLauncherFunction") == 7


def test_the_account_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    template = load_template(ROOT / "template.yaml", stack_name="calbot-local")
    monkeypatch.setenv("LOCAL_ACCOUNT_CONCURRENCY", "50")
    with pytest.raises(ReservationRefused, match=r"\[50\]"):
        FunctionConcurrency(template)
    monkeypatch.delenv("LOCAL_ACCOUNT_CONCURRENCY")
    assert FunctionConcurrency(template).account_limit == 1000
