"""SSM values are cached for params.PARAMETER_MAX_AGE_SECONDS, not forever: a rotated key is picked up
by a warm container once that much time has passed, and not read again before then."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import base as powertools_base

from calbot import aws, botapi, cursor, params
from calbot.config import get_settings
from local.stack import LocalStack


class _Clock:
    """Moves the wall clock Powertools' parameter cache reads its expiry from (datetime.now())."""

    def __init__(self) -> None:
        self.offset = timedelta()
        clock = self

        class _Shifted(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> Any:
                return datetime.now(tz) + clock.offset

        self.datetime = _Shifted


@pytest.fixture
def clock(inproc_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Clock]:
    moved = _Clock()
    monkeypatch.setattr(powertools_base, "datetime", moved.datetime)
    monkeypatch.setattr(cursor, "_key", None)  # read the key from this stack's SSM
    aws.reset_clients()  # a fresh client, so a fresh parameter cache
    yield moved
    aws.reset_clients()  # later tests must not see the values this one cached


@pytest.fixture
def get_parameter_calls() -> Iterator[list[str]]:
    """Names of the GetParameter calls this test's thread makes (other threads are not counted)."""
    me = threading.get_ident()
    seen: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        if threading.get_ident() == me:
            seen.append(params["Name"])

    events = aws.ssm().meta.events
    events.register("provide-client-params.ssm.GetParameter", record)
    yield seen
    events.unregister("provide-client-params.ssm.GetParameter", record)


@pytest.fixture
def rotate() -> Iterator[Callable[[str, str], None]]:
    """Overwrites a parameter; the stack is shared, so each original value is put back afterwards."""
    originals: dict[str, str | None] = {}
    ssm = boto3.session.Session().client("ssm")  # its own client: the calls counted are the code's only

    def put(name: str, value: str) -> None:
        if name not in originals:
            try:
                originals[name] = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
            except ssm.exceptions.ParameterNotFound:
                originals[name] = None
        ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)

    yield put
    for name, original in originals.items():
        if original is None:
            ssm.delete_parameter(Name=name)
        else:
            ssm.put_parameter(Name=name, Value=original, Type="SecureString", Overwrite=True)


def test_a_rotated_bot_api_key_is_used_once_max_age_has_passed(
    clock: _Clock, get_parameter_calls: list[str], rotate: Callable[[str, str], None]
) -> None:
    name = get_settings().bot_api_key_param
    assert name
    rotate(name, "key-before")
    assert botapi._api_key() == "key-before"
    rotate(name, "key-after")
    clock.offset = timedelta(seconds=params.PARAMETER_MAX_AGE_SECONDS - 5)
    assert botapi._api_key() == "key-before"  # still cached: no SSM read
    assert get_parameter_calls == [name]
    clock.offset = timedelta(seconds=params.PARAMETER_MAX_AGE_SECONDS + 1)
    assert botapi._api_key() == "key-after"
    assert get_parameter_calls == [name, name]


def test_a_rotated_cursor_signing_key_is_used_once_max_age_has_passed(
    clock: _Clock, get_parameter_calls: list[str], rotate: Callable[[str, str], None]
) -> None:
    scope = cursor.scope_of("events", {})
    token = cursor.encode("usr_a", scope, {"a": "x"})  # creates the key if missing, never overwrites it
    name = get_parameter_calls[0]
    assert name.endswith("/internal/cursor-signing-key")
    rotate(name, secrets.token_hex(32))
    clock.offset = timedelta(seconds=params.PARAMETER_MAX_AGE_SECONDS - 5)
    assert cursor.decode("usr_a", scope, token) == {"a": "x"}  # the cached key still verifies it
    assert get_parameter_calls == [name]
    clock.offset = timedelta(seconds=params.PARAMETER_MAX_AGE_SECONDS + 1)
    assert cursor.encode("usr_a", scope, {"a": "x"}) != token  # signed with the rotated key
    assert get_parameter_calls == [name, name]


def test_the_cursor_signing_key_is_created_once_and_never_overwritten(
    clock: _Clock, rotate: Callable[[str, str], None]
) -> None:
    name = f"{get_settings().ssm_prefix}/internal/cursor-signing-key"
    rotate(name, "ab" * 32)
    aws.reset_clients()
    assert cursor._signing_key() == bytes.fromhex("ab" * 32)
    assert aws.ssm().get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == "ab" * 32
