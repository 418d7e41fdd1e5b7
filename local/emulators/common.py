"""What both provider emulators share: the clock offset, fault rules and the request log's control side.

Never imported by production code (neither are the emulators).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from local.emulators.core.errors import EmulatorError
from local.emulators.core.keys import SigningKey, signing_key

__all__ = ["EmulatorError", "SigningKey", "signing_key"]


class EmulatorControls:
    """Mixin: needs `_lock`, `_faults`, `_log`, `_notification_log`, `_clock_offset` and
    `_find_account(ref)` on the emulator."""

    _lock: Any
    _faults: list[Any]
    _log: list[dict[str, Any]]
    _notification_log: list[Any]
    _clock_offset: Any

    def _find_account(self, ref: str) -> Any: ...

    def now(self) -> datetime:
        """The emulator's clock (real UTC time plus any `advance_clock` offset)."""
        return datetime.now(UTC) + self._clock_offset

    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.to_dict() for rule in self._faults]

    def remove_fault(self, fault_id: str) -> None:
        with self._lock:
            before = len(self._faults)
            self._faults = [rule for rule in self._faults if rule.id != fault_id]
            if len(self._faults) == before:
                raise EmulatorError(f"no fault {fault_id!r}", 404)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = []

    def requests(
        self, account: str | None = None, path_prefix: str | None = None, method: str | None = None
    ) -> list[dict[str, Any]]:
        """The request log (never bodies; token-like query values redacted), oldest first; `account` is
        an id or an address."""
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

    def clear_notifications(self) -> None:
        with self._lock:
            self._notification_log = []
