"""Counters count only the calls of the code under test, never those of the in-process stack's own
threads (the clock, the servers) that share calbot's clients (issue 16: a flaky write count)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from calbot import aws
from calbot.config import get_settings
from local.stack import LocalStack
from tests.conftest import DynamoWrites


def _put(name: str) -> None:
    aws.dynamodb().put_item(
        TableName=get_settings().table_name,
        Item={"PK": {"S": f"COUNTERTEST#{name}"}, "SK": {"S": "X"}},
    )


def test_dynamo_writes_counts_the_test_and_its_pool_workers_not_other_threads(
    inproc_stack: LocalStack, ddb_writes: DynamoWrites
) -> None:
    _put("test-thread")
    with ThreadPoolExecutor(max_workers=2) as pool:  # what sync does with accounts
        list(pool.map(_put, ["worker-1", "worker-2"]))

    def elsewhere() -> None:  # like the clock thread firing a schedule meanwhile
        _put("other-thread")
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(_put, "other-pool").result()

    other = threading.Thread(target=elsewhere)
    other.start()
    other.join()
    assert ddb_writes.calls == ["PutItem"] * 3
    assert ddb_writes.items == 3
