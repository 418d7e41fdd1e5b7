"""SSM parameters read through Powertools' Parameters utility, cached for a bounded time.

A value read once per container and kept forever means a rotated key is only picked up by a cold start.
Powertools caches each value for `max_age` seconds, so a rotation reaches every warm container within
PARAMETER_MAX_AGE_SECONDS. The provider wraps our own SSM client (calbot.aws: standard endpoint
variables, retries, timeouts); a new client (aws.reset_clients) gets a new provider and an empty cache.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from calbot import aws

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SSMProvider

# How long a warm container may keep using a value after it was rotated in SSM.
PARAMETER_MAX_AGE_SECONDS = 300

_lock = threading.Lock()
_provider: SSMProvider | None = None
_provider_client: Any = None


def _ssm_provider() -> SSMProvider:
    global _provider, _provider_client
    client = aws.ssm()
    with _lock:
        if _provider is None or _provider_client is not client:
            # Imported here: a handler that never reads a parameter never pays for the import.
            from aws_lambda_powertools.utilities.parameters import SSMProvider

            _provider, _provider_client = SSMProvider(boto3_client=client), client
        return _provider


def get_secure(name: str) -> str:
    """The decrypted value of the SecureString `name`, at most PARAMETER_MAX_AGE_SECONDS old."""
    value = _ssm_provider().get(name, decrypt=True, max_age=PARAMETER_MAX_AGE_SECONDS)
    if not isinstance(value, str):
        raise TypeError(f"SSM parameter {name} is not a string")
    return value
