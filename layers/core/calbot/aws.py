"""Lazily created, cached boto3 clients.

Creating a client loads its service model (tens of ms), so it happens on first use rather than at
import: a handler that never touches SSM never pays for it. Endpoints come from the standard
`AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` variables, so no code path knows about local mode.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import boto3
from botocore.config import Config

_lock = threading.Lock()
# 32 connections: up to 8 accounts sync at once, each writing its events with a few threads.
_CONFIG = Config(
    retries={"max_attempts": 5, "mode": "standard"},
    connect_timeout=5,
    read_timeout=10,
    max_pool_connections=32,
)


@cache
def _client(service: str) -> Any:
    with _lock:  # boto3's default session is not thread-safe while creating clients
        return boto3.session.Session().client(service, config=_CONFIG)


def dynamodb() -> Any:
    return _client("dynamodb")


def ssm() -> Any:
    return _client("ssm")


def scheduler() -> Any:
    return _client("scheduler")


def sqs() -> Any:
    return _client("sqs")


def reset_clients() -> None:
    """Drop cached clients (tests that switch endpoints or moto contexts)."""
    _client.cache_clear()
