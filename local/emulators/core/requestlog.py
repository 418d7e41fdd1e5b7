"""The request log: one entry per service request (never bodies), read and cleared through the
control API; tests and the leak finder grep it."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from werkzeug.wrappers import Request

from local.emulators.core.backend import Backend
from local.emulators.core.clock import iso

_SECRET_QUERY_KEYS = ("token", "code", "secret", "verifier")


def redact_query(query: str) -> str:
    """The query string with the values of token-like keys replaced by `<redacted>`."""
    pairs = parse_qsl(query, keep_blank_values=True)
    shown = [
        (k, "<redacted>" if any(word in k.lower() for word in _SECRET_QUERY_KEYS) else v) for k, v in pairs
    ]
    return urlencode(shown)


@dataclass(kw_only=True)
class RequestContext:
    """Per-request facts gathered for fault matching and the request log (emulators add their own)."""

    account_id: str | None = None
    client_id: str | None = None
    fault_id: str | None = None


class RequestLog(Backend):
    """Mixin: the request log. `_reset_log()` belongs in the emulator's reset()."""

    _lock: threading.RLock
    _log: list[dict[str, Any]]
    _log_seq: int
    # Google's log hides token-like query values; Graph's shows the query as sent.
    redact_logged_query = False

    def _reset_log(self) -> None:
        self._log = []
        self._log_seq = 0

    def _log_extra(self, ctx: Any) -> dict[str, Any]:
        """Emulator-specific fields of a log entry."""
        return {}

    def _append_log(self, request: Request, ctx: RequestContext, status: int) -> None:
        query = request.query_string.decode("latin-1")
        with self._lock:
            self._log_seq += 1
            self._log.append(
                {
                    "seq": self._log_seq,
                    "timestamp": iso(self.now()),
                    "method": request.method,
                    "path": request.path,
                    "query": redact_query(query) if self.redact_logged_query else query,
                    "account": ctx.account_id,
                    "client_id": ctx.client_id,
                    "status": status,
                    **self._log_extra(ctx),
                    "fault": ctx.fault_id,
                }
            )

    def requests(
        self, account: str | None = None, path_prefix: str | None = None, method: str | None = None
    ) -> list[dict[str, Any]]:
        """The request log (never bodies), oldest first; `account` is an id or an address."""
        with self._lock:
            account_id = None
            if account:
                found = self._find_account(account)
                if found is None:
                    return []
                account_id = found.id
            return [
                dict(entry)
                for entry in self._log
                if (account_id is None or entry["account"] == account_id)
                and (not path_prefix or entry["path"].startswith(path_prefix))
                and (not method or entry["method"] == method.upper())
            ]

    def clear_requests(self) -> None:
        with self._lock:
            self._log = []
