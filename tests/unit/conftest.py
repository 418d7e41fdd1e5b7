"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from calbot import timeutil

CLOCK_START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def slept() -> Iterator[list[float]]:
    """The core's clock stands still at CLOCK_START; every sleep is recorded and moves it."""
    moment = [CLOCK_START]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        moment[0] += timedelta(seconds=seconds)

    timeutil.set_clock(lambda: moment[0], sleep)
    try:
        yield waits
    finally:
        timeutil.set_clock()


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
