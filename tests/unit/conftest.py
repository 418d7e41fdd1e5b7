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
