"""Small value helpers both emulators' control APIs and wire formats use."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime
from datetime import time as dt_time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from local.emulators.core.errors import EmulatorError


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # "leave as is" default of update_event (None means "clear")


def fields_of(record: object, *names: str) -> dict[str, Any]:
    """The named attributes of a record, in that order (the plain part of a control-API view)."""
    return {name: getattr(record, name) for name in names}


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def with_query(url: str, params: list[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + params
    return urlunsplit(parts._replace(query=urlencode(query)))


def localize(naive: datetime, tz: ZoneInfo) -> datetime:
    # Through UTC so that a wall time inside a DST gap lands on a real instant.
    return naive.replace(tzinfo=tz).astimezone(UTC).astimezone(tz)


def control_time(raw: object, tz: ZoneInfo, name: str) -> datetime:
    """A control-API time: ISO 8601 with an offset (converted) or naive / a date (read in `tz`)."""
    if isinstance(raw, datetime):
        value = raw
    elif isinstance(raw, date):
        value = datetime.combine(raw, dt_time())
    elif isinstance(raw, str) and raw.strip():
        try:
            value = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise EmulatorError(f"{name}: not an ISO 8601 date/time: {raw!r}") from None
    else:
        raise EmulatorError(f"{name} must be an ISO 8601 date/time string")
    if value.tzinfo is None:
        return localize(value, tz)
    return value.astimezone(tz)
