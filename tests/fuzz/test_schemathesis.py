"""Schemathesis against the local stack, over every operation of the OpenAPI document it serves.

For each operation, valid (positive) and invalid (negative) requests generated from the document, as a
user with a connected emulator account and a valid API key. Every answer must be documented (status,
content type and body schema) and no answer may be a 5xx; a rejected (4xx) request must leave every
DynamoDB item exactly as it was (the table is scanned through boto3 against the stack's moto before
and after).

Bounded and repeatable: a few examples per operation and mode, derandomized (a fixed seed per test),
no example database and no shrinking. The virtual clock never moves, so no bot is ever launched and
no scheduled job runs: nothing here calls the Create Bot API.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote, urlparse

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from calbot.openapi import OPERATIONS
from tests.e2e.conftest import E2EStack, start_stack, stop_stack

pytestmark = [pytest.mark.slow, pytest.mark.fuzz]

# Per operation and mode: ~20 operations x 2 modes stay well under three minutes. FUZZ_MAX_EXAMPLES
# raises it for a deeper local run.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "12"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CLIENT_ID = "fuzz-client"
CLIENT_SECRET = "fuzz-secret-5e0a"
TEAMS = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_fuzz{n}%40thread.v2/0"


def _frozen(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class Fuzz:
    stack: E2EStack
    schema: Any
    key: str
    user_id: str
    table: str
    account_id: str
    event_ids: list[str]
    _dynamodb: Any = None
    _snapshot: dict[str, str] | None = None
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def snapshot(self) -> dict[str, str]:
        """Every item of the table, keyed by PK/SK (cached until a request may have changed it)."""
        if self._snapshot is None:
            if self._dynamodb is None:
                self._dynamodb = self.stack.boto("dynamodb")
            items: dict[str, str] = {}
            for page in self._dynamodb.get_paginator("scan").paginate(TableName=self.table):
                for item in page["Items"]:
                    if item["PK"]["S"].startswith("RATE#"):
                        continue  # per-key rate counters count every request, rejected ones too
                    items[f"{item['PK']['S']}|{item['SK']['S']}"] = _frozen(item)
            self._snapshot = items
        return self._snapshot

    def forget(self) -> None:
        self._snapshot = None

    def bot_ids(self) -> list[str]:
        resp = self.stack.api("GET", "/calendar/scheduled_bots", key=self.key)
        assert resp.status_code == 200, resp.text
        return [b["bot_id"] for b in resp.json()["results"]]


def table_changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    changed = [f"added {k}" for k in after.keys() - before.keys()]
    changed += [f"deleted {k}" for k in before.keys() - after.keys()]
    changed += [f"changed {k}" for k in before.keys() & after.keys() if before[k] != after[k]]
    return sorted(changed)


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    # No demo seed: the table holds only this user's items, so a scan per request stays cheap.
    stack = start_stack(tmp_path_factory.mktemp("fuzz-stack"), "--virtual-time", "--no-seed")
    try:
        stack.graph("POST", "/apps", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
        # Two accounts: the legacy disconnect with no scope then answers 400 ambiguous_disconnect rather
        # than disconnecting the account every other operation is fuzzed against.
        made = stack.connected_user(
            CLIENT_ID, CLIENT_SECRET, ["fuzz.user@acme.example", "fuzz.second@acme.example"]
        )
        account = made["accounts"][0]
        calendar = quote(account["calendars"][0]["id"], safe="")
        now = stack.clock_now().replace(second=0, microsecond=0)
        # Real targets for the positive examples: a single meeting and a weekly series, both linked.
        for n, extra in enumerate(
            [
                {},
                {
                    "recurrence": {
                        "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                        "range": {
                            "type": "numbered",
                            "startDate": str((now + timedelta(days=2)).date()),
                            "numberOfOccurrences": 6,
                        },
                    }
                },
            ]
        ):
            start: datetime = now + timedelta(days=2, hours=n)
            stack.graph(
                "POST",
                f"/accounts/{account['id']}/calendars/{calendar}/events",
                json={
                    "subject": f"Fuzz {n}",
                    "start": start.isoformat(),
                    "end": (start + timedelta(minutes=30)).isoformat(),
                    "online_meeting_url": TEAMS.format(n=n),
                    **extra,
                },
            )
        events = stack.api("GET", "/calendar/events", key=made["key"], params={"limit": 100})
        assert events.status_code == 200, events.text
        event_ids = [e["id"] for e in events.json()["results"]]
        assert event_ids
        # The document the stack serves, not the module: what a client would fetch.
        schema = schemathesis.openapi.from_url(f"{stack.api_url}/openapi.json")
        yield Fuzz(
            stack=stack,
            schema=schema,
            key=made["key"],
            user_id=made["user_id"],
            table=stack.env()["TABLE_NAME"],
            account_id=account["mail"],
            event_ids=event_ids,
        )
    finally:
        stop_stack(stack)


def _real_ids(fuzz: Fuzz, case: Any, data: st.DataObject) -> None:
    """Point some valid examples at things that exist, so the success paths are fuzzed too."""
    params = case.path_parameters or {}
    if "event_id" in params:
        params["event_id"] = data.draw(st.sampled_from([*fuzz.event_ids, params["event_id"]]))
    if "bot_id" in params:
        params["bot_id"] = data.draw(st.sampled_from([*fuzz.bot_ids(), params["bot_id"]]))
    if "account_id" in params and "user_id" not in params and case.method.upper() != "DELETE":
        # (a DELETE would disconnect the account the rest of the suite is fuzzed against)
        params["account_id"] = data.draw(st.sampled_from([fuzz.account_id, params["account_id"]]))
    if isinstance(case.body, dict) and "event_id" in case.body:
        case.body["event_id"] = data.draw(st.sampled_from([*fuzz.event_ids, case.body["event_id"]]))


OPERATION_IDS = [f"{op.method} {op.path}" for op in OPERATIONS]
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
# Invalid requests exist only for operations that take something (path, query or body).
CASES = [
    pytest.param(f"{op.method} {op.path}", mode, id=f"{op.method} {op.path} {mode.value}")
    for op in OPERATIONS
    for mode in (POSITIVE, NEGATIVE)
    if mode == POSITIVE or op.body or op.query or "{" in op.path
]


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_every_answer_is_documented_and_a_rejected_request_changes_nothing(
    fuzz: Fuzz, operation: str, mode: schemathesis.GenerationMode
) -> None:
    method, path = operation.split(" ", 1)
    api_operation = fuzz.schema[path][method]
    headers = {"Authorization": f"Token {fuzz.key}"}
    base_url = fuzz.stack.info["gateway_url"]

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=api_operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case: Any, data: st.DataObject) -> None:
        if mode == POSITIVE:
            _real_ids(fuzz, case, data)
        before = fuzz.snapshot()
        response = case.call(base_url=base_url, headers=headers, timeout=60)
        fuzz.forget()
        status = response.status_code
        case.validate_response(response, checks=CHECKS)
        if 400 <= status < 500:
            changes = table_changes(before, fuzz.snapshot())
            assert changes == [], f"{status} {case.as_curl_command()} changed the table: {changes[:10]}"

    try:
        run()
    except Unsatisfiable:
        # Only a bare string path parameter: every invalid value for it is unsendable in a URL.
        pytest.skip(f"no invalid request can be built for {operation}")


def test_every_operation_of_the_document_is_fuzzed(fuzz: Fuzz) -> None:
    served = {f"{m.upper()} {p}" for p, item in fuzz.schema.raw_schema["paths"].items() for m in item}
    assert served == set(OPERATION_IDS)
    for operation in OPERATION_IDS:
        method, path = operation.split(" ", 1)
        assert fuzz.schema[path][method].method.upper() == method


@pytest.fixture(scope="module")
def exhausted_key(fuzz: Fuzz) -> str:
    """Another key of the fuzz user whose per-minute window is already full: every keyed request with it
    is answered 429 rate_limited (the counter item is what calbot.ratelimit keeps, set at the limit)."""
    import hashlib

    key = fuzz.stack.admin("create-api-key", "--user-id", fuzz.user_id)["api_key"]
    key_id = "key_" + hashlib.sha256(key.encode()).hexdigest()[:16]
    t = int(fuzz.stack.clock_now().timestamp())
    window = t - t % 60
    ddb = fuzz._dynamodb or fuzz.stack.boto("dynamodb")
    ddb.put_item(
        TableName=fuzz.table,
        Item={
            "PK": {"S": f"RATE#{key_id}"},
            "SK": {"S": f"WINDOW#{window}"},
            "kind": {"S": "ratelimit"},
            "n": {"N": str(10**9)},
            "ttl": {"N": str(window + 3600)},
        },
    )
    return key


KEYED = [f"{op.method} {op.path}" for op in OPERATIONS if op.auth]


def positive_answers(
    fuzz: Fuzz,
    operation: str,
    key: str,
    *,
    max_examples: int,
    checks: list[Any],
    also: Callable[[Any], None] | None = None,
) -> list[int]:
    """Call `operation` with valid generated requests (schemathesis's positive mode) and `key`, validate
    each answer with `checks` (and `also`), and return the statuses seen."""
    method, path = operation.split(" ", 1)
    api_operation = fuzz.schema[path][method]
    statuses: list[int] = []

    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=api_operation.as_strategy(generation_mode=POSITIVE))
    def run(case: Any) -> None:
        response = case.call(
            base_url=fuzz.stack.info["gateway_url"],
            headers={"Authorization": f"Token {key}"},
            timeout=60,
        )
        statuses.append(response.status_code)
        case.validate_response(response, checks=checks)
        if also is not None:
            also(response)

    run()
    return statuses


@pytest.mark.parametrize("operation", KEYED)
def test_a_rate_limited_answer_is_documented_on_every_keyed_operation(
    fuzz: Fuzz, exhausted_key: str, operation: str
) -> None:
    """Issue 16: 429 rate_limited is an answer of every keyed operation, so the every-answer-documented
    checks above must see it (they would fail on an undocumented 429) — a valid request with a key
    that is out of requests for this minute, checked like every fuzzed answer."""
    statuses = positive_answers(fuzz, operation, exhausted_key, max_examples=2, checks=CHECKS)
    # A body or parameter the schema allows but the handler refuses never gets that far: the limiter
    # runs before the handler, so every answer here is the 429.
    assert statuses and set(statuses) == {429}, statuses


# A 503 is a server error by schemathesis's own check, so the 503 tests validate with the conformance
# checks alone: status, content type and body schema, exactly what "every answer is documented" means.
DOCUMENTED = [check for check in CHECKS if check is not not_a_server_error]


@contextmanager
def aws_failing(fuzz: Fuzz, service: str, error: str, *operations: str) -> Iterator[None]:
    """These operations of one AWS service answer `error` on every attempt; the faults are cleared
    whatever happens, so the module's other tests, before or after, run on a calm AWS.

    botocore's standard mode (calbot.aws: 5 retries) sleeps for real, not on the stack's virtual clock,
    but a non-throttling error backs off at most 25 ms x 2^i for DynamoDB (50 ms x 2^i otherwise):
    under 0.8 s (1.6 s) for all 5 retries. Its retry quota (500, 14 a retry, 1 back per later success)
    runs dry after about seven such requests; later ones fail at the first attempt, which ends in the
    same 503."""
    fuzz.stack.control("DELETE", "/aws/faults")
    try:
        fuzz.stack.control(
            "POST", "/aws/faults", json={"service": service, "error": error, "operations": list(operations)}
        )
        yield
    finally:
        fuzz.stack.control("DELETE", "/aws/faults")


def _unavailable(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "service_unavailable", response.text
    assert response.headers.get("retry-after"), dict(response.headers)


@pytest.mark.parametrize("operation", KEYED)
def test_a_service_unavailable_answer_is_documented_on_every_keyed_operation(
    fuzz: Fuzz, operation: str
) -> None:
    """Issue 16: 503 service_unavailable is an answer of every keyed operation — the authorizer cannot
    read the key store (its GetItem fails), allows with `unavailable` set, and the route answers 503
    before doing anything else, never 401 for a key that may well be valid. A valid request with the
    fuzz user's valid key while DynamoDB fails GetItem, checked against the document like every fuzzed
    answer (the checks fail on an undocumented 503); nothing else in DynamoDB is faulted."""
    fuzz.forget()
    before = fuzz.snapshot()
    with aws_failing(fuzz, "dynamodb", "InternalServerError", "GetItem"):
        statuses = positive_answers(
            fuzz, operation, fuzz.key, max_examples=1, checks=DOCUMENTED, also=_unavailable
        )
    assert statuses == [503], statuses
    fuzz.forget()
    # Answered before anything was done: nothing was written.
    assert table_changes(before, fuzz.snapshot()) == []


@pytest.mark.parametrize(
    "fault",
    [
        ("dynamodb", "InternalServerError", "BatchGetItem"),  # the subscriptions cannot be looked up
        ("sqs", "InternalError", "SendMessage"),  # the accepted notification cannot be queued
    ],
    ids=["subscription-lookup", "queue"],
)
def test_a_service_unavailable_answer_is_documented_on_the_webhook(
    fuzz: Fuzz, fault: tuple[str, str, str]
) -> None:
    """The unkeyed webhook answers 503 when AWS fails it, so Graph retries the delivery: a genuine
    notification (the emulator's own subscription for the fuzz account, with its clientState) while
    the subscription lookup (one BatchGetItem) or the queueing (SQS SendMessage, whose outage code is
    `InternalError` at HTTP 500: a 500 answer before issue 16's fix) fails, checked against the
    document. Nothing is queued, so nothing runs later. (A body that names no subscription, and the
    validation handshake, touch no AWS: those answer 202 / 200 and cannot answer 503.)"""
    subs = fuzz.stack.graph("GET", "/subscriptions").json()["value"]
    sub = next(s for s in subs if not s["expired"] and "/users/" in s["notification_url"])
    path = urlparse(sub["notification_url"]).path
    user_id, provider, account_id = path.split("/users/", 1)[1].split("/")
    assert user_id == fuzz.user_id, sub["notification_url"]
    webhook = next(op for op in OPERATIONS if op.operation_id == "receiveChangeNotifications")
    case = fuzz.schema[webhook.path][webhook.method].Case(
        path_parameters={"user_id": user_id, "provider": provider, "account_id": unquote(account_id)},
        body={
            "value": [
                {
                    "subscriptionId": sub["id"],
                    "clientState": sub["client_state"],
                    "changeType": "updated",
                    "resource": f"Users/{sub['account_id']}/Events/AAMkFuzz503",
                    "resourceData": {"id": "AAMkFuzz503", "@odata.etag": 'W/"fuzz503"'},
                }
            ]
        },
        media_type="application/json",
    )
    with aws_failing(fuzz, *fault):
        response = case.call(base_url=fuzz.stack.info["gateway_url"], timeout=60)
    case.validate_response(response, checks=DOCUMENTED)
    _unavailable(response)
