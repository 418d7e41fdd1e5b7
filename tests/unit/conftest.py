"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import virtual_time

CLOCK_START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def slept() -> Iterator[list[float]]:
    """The core's clock stands still at CLOCK_START; every sleep is recorded and moves it."""
    waits: list[float] = []
    with virtual_time(CLOCK_START, on_sleep=waits.append):
        yield waits


@pytest.fixture
def sped_up_moto_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process moto (no endpoint override, dummy credentials) with local/moto_speed's patches in."""
    from local.moto_speed import install_speedups

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for key, value in {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    install_speedups()


@pytest.fixture
def moto_beside_the_stack() -> Iterator[Any]:
    """In-process moto without resetting it, yielding a DynamoDB client; the tables the test creates are
    deleted after it. moto's backends are process-wide and the session's in-process stack
    (tests/conftest.py inproc_stack, which a unit test may have started) keeps its table there: a
    `with mock_aws()` reset it, and every service test after it lost the table."""
    import boto3
    from moto import mock_aws

    mock = mock_aws()
    mock.start(reset=False)
    try:
        client = boto3.client("dynamodb", region_name="us-east-1")
        before = set(_table_names(client))
        yield client
        for name in set(_table_names(client)) - before:
            client.delete_table(TableName=name)
    finally:
        mock.stop(remove_data=False)


def _table_names(client: Any) -> list[str]:
    return [n for page in client.get_paginator("list_tables").paginate() for n in page["TableNames"]]
