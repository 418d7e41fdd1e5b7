"""Fault rules: throttling, 5xx and slow answers on demand, matched by path regex, method and account.

The first active rule that matches a request wins; a rule with only `delay` slows the request and
lets it through. What a fault's answer looks like is the emulator's (`_fault_response`).
"""

from __future__ import annotations

import dataclasses
import re
import threading
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from werkzeug.wrappers import Request

from local.emulators.core.errors import EmulatorError
from local.emulators.core.requestlog import RequestContext


@dataclass(kw_only=True)
class FaultRule:
    """One rule; emulators subclass it to add the fields that shape their error answers."""

    # Besides `status`, the fields any one of which makes the rule answer instead of the service.
    outcome_fields: ClassVar[tuple[str, ...]] = ("error",)

    id: str
    path: str
    pattern: re.Pattern[str]
    method: str | None = None
    account: str | None = None
    status: int | None = None
    retry_after: int | None = None
    error: str | None = None
    message: str | None = None
    times: int = 1  # -1: until cleared
    delay: float = 0.0
    hits: int = 0

    @classmethod
    def keys(cls) -> set[str]:
        """The fields a caller sets (the control API's POST /_control/faults body)."""
        return {f.name for f in dataclasses.fields(cls)} - {"id", "pattern", "hits"}

    @property
    def active(self) -> bool:
        return self.times < 0 or self.hits < self.times

    @property
    def answers(self) -> bool:
        """True when the rule replaces the answer (not only delays it)."""
        return self.status is not None or any(getattr(self, name) is not None for name in self.outcome_fields)

    def to_dict(self) -> dict[str, Any]:
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "pattern"}
        return {**shown, "remaining": -1 if self.times < 0 else max(0, self.times - self.hits)}


class FaultRules:
    """Mixin: the emulator's fault rules. `_reset_faults()` belongs in its reset()."""

    fault_type: ClassVar[type[FaultRule]] = FaultRule
    _lock: threading.RLock
    _faults: list[FaultRule]
    _accounts: dict[str, Any]

    def _reset_faults(self) -> None:
        self._faults = []

    def add_fault(self, *, path: str, times: int = 1, delay: float = 0.0, **fields: Any) -> dict[str, Any]:
        """Add a fault rule (first matching active rule wins); returns it with its `id`.

        `path` is a regex searched in the request path; `method` and `account` (id or address) narrow
        it. `times` -1 = until cleared. The other fields are the emulator's FaultRule's.
        """
        unknown = sorted(set(fields) - self.fault_type.keys())
        if unknown:
            raise TypeError(f"add_fault() got unexpected keyword argument(s): {', '.join(unknown)}")
        try:
            pattern = re.compile(path)
        except re.error as exc:
            raise EmulatorError(f"bad path regex: {exc}") from None
        status, method = fields.pop("status", None), fields.pop("method", None)
        retry_after = fields.pop("retry_after", None)
        if (
            status is None
            and all(fields.get(n) is None for n in self.fault_type.outcome_fields)
            and not delay
        ):
            needs = ", ".join(("status", *self.fault_type.outcome_fields))
            raise EmulatorError(f"a fault needs {needs} or delay")
        if status is not None and not 100 <= int(status) <= 599:
            raise EmulatorError("status must be an HTTP status code")
        if times == 0 or times < -1:
            raise EmulatorError("times must be positive, or -1 for 'until cleared'")
        if delay < 0:
            raise EmulatorError("delay must be >= 0")
        rule = self.fault_type(
            id=uuid.uuid4().hex[:12],
            path=path,
            pattern=pattern,
            method=method.upper() if method else None,
            status=int(status) if status is not None else None,
            retry_after=int(retry_after) if retry_after is not None else None,
            times=int(times),
            delay=float(delay),
            **fields,
        )
        with self._lock:
            self._faults.append(rule)
        return rule.to_dict()

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

    def _take_fault(self, request: Request, ctx: RequestContext) -> FaultRule | None:
        """The first active rule matching the request, its hit counted (lock held)."""
        account = self._accounts.get(ctx.account_id or "")
        for rule in self._faults:
            if not rule.active or not rule.pattern.search(request.path):
                continue
            if rule.method and rule.method != request.method:
                continue
            if rule.account and (account is None or not account.matches(rule.account)):
                continue
            rule.hits += 1
            ctx.fault_id = rule.id
            return rule
        return None
