"""The provider registry: the one place that knows which calendar providers exist.

Each provider declares a `ProviderSpec` and registers it: its name and aliases, the fields it takes in
POST /calendar/connections (a pydantic model of its own), how its change notifications are verified,
and where its implementation lives. Everything provider-shaped outside the provider itself derives
from here: validation of `provider` values and aliases, the groups of GET /calendar/connections,
credential building at connect, the webhook's verification, and the default provider.

Adding a provider is one module that calls `register(ProviderSpec(...))`, plus its implementation;
the built-in ones are listed by module path in BUILTIN and imported on the first question asked of the
registry. Their implementations (outlook.py, google.py: HTTP sessions, parsers) are imported only when
a service first asks for the provider itself (`create`), so a handler that only validates a provider
name never pays for them.

This module imports nothing from calbot at import time: `calbot.models` builds its provider types on it.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

if TYPE_CHECKING:
    from calbot.models import Subscription
    from calbot.providers.base import CalendarProvider

# The built-in providers, in the order they are listed (e.g. the groups of GET /calendar/connections).
BUILTIN = ("calbot.providers.outlook_spec", "calbot.providers.google_spec")


class CredentialFields(BaseModel):
    """A provider's own fields of POST /calendar/connections, e.g. microsoft_client_id.

    Fields are declared optional (absent means "not this provider"); `required` names those that must
    all be sent once any field of this provider is. `credentials()` is what the vault keeps.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, defer_build=True)
    required: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _complete(self) -> CredentialFields:
        if any(getattr(self, name) is None for name in self.required):
            raise ValueError(f"{_listed(self.required)} are all required")
        return self

    def credentials(self) -> dict[str, str]:
        """client_id, client_secret, refresh_token (and tenant when the provider has one)."""
        raise NotImplementedError


def _listed(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)


# --------------------------------------------------------------------------------------------------
# Change notifications, as a provider's verifier sees them


@dataclass(frozen=True)
class Notice:
    """One webhook request, as the webhook handler read it: whose notifications it claims to carry (the
    URL's user, provider and account, unquoted; the provider is its registered name by the time a
    verifier sees it) and what the provider sent. Nothing here is trusted until a subscription's
    secret is."""

    user_id: str
    provider: str
    account_id: str
    headers: Mapping[str, str]  # lower-case names
    body: dict[str, Any] | None  # the JSON object sent ({} for no body), None when it was unreadable


@dataclass(frozen=True)
class Change:
    """Work a verified notification asks for: sync the account, or renew / recreate one subscription."""

    account_id: str
    kind: str = "sync"  # sync | renew | recreate
    subscription_id: str | None = None
    dedup: str = ""  # the same notification delivered twice maps to the same value


@dataclass
class Verdict:
    """What the webhook answers, enqueues and logs. The answer never depends on what was dropped."""

    answer: int = 202  # what the provider is answered (its protocol: Google wants 200 for `sync`)
    changes: list[Change] = field(default_factory=list)
    accepted: int = 0
    dropped: int = 0
    note: str = "notifications"  # the log line


# Reads the named subscriptions (at most one batch: ids past the cap are not read and come back absent).
Lookup = Callable[[list[str]], Mapping[str, "Subscription"]]
Verifier = Callable[[Notice, Lookup], Verdict]


def owns(sub: Subscription | None, notice: Notice, secret: Any) -> bool:
    """The subscription exists, belongs to the user, provider and account the URL names, and the
    notification carries its own secret (compared as SHA-256 hashes in constant time)."""
    if sub is None or not isinstance(secret, str) or not secret:
        return False
    return (
        sub.user_id == notice.user_id
        and sub.provider == notice.provider
        and sub.account_id.strip().lower() == notice.account_id.strip().lower()
        and hmac.compare_digest(hashlib.sha256(secret.encode()).hexdigest(), sub.client_state_hash)
    )


def digest(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Specs


def _resolve(target: str | Callable[..., Any]) -> Any:
    """A callable, or "package.module:attribute" imported on first use."""
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    credentials: type[CredentialFields]
    # A CalendarProvider class or factory, or its "module:attribute" path (imported on first use).
    factory: str | Callable[[], CalendarProvider]
    verify: str | Verifier  # the webhook's check of one request, or its "module:attribute" path
    aliases: tuple[str, ...] = ()
    default: bool = False  # the provider a query without `provider` means (exactly one declares it)

    def create(self) -> CalendarProvider:
        provider: CalendarProvider = _resolve(self.factory)()
        return provider

    def verifier(self) -> Verifier:
        verifier: Verifier = _resolve(self.verify)
        return verifier


_specs: dict[str, ProviderSpec] = {}
_loaded = False
_loading = threading.RLock()  # a thread must never see the built-in providers half-registered
_in_load = False  # the built-in modules are registering themselves right now


def register(spec: ProviderSpec) -> ProviderSpec:
    """Add a provider (a module calls this when it is imported). Its name and aliases must be new."""
    if not _loaded and not _in_load:
        specs()  # the built-in ones first: they keep their place (and names) whoever registers first
    taken = {n for s in _specs.values() if s.name != spec.name for n in (s.name, *s.aliases)}
    clash = taken & {spec.name, *spec.aliases}
    if clash:
        raise ValueError(f"provider name or alias already registered: {sorted(clash)}")
    if spec.default and any(s.default for s in _specs.values() if s.name != spec.name):
        raise ValueError("another provider is already the default")
    taken_fields = {"replace"} | {
        f for s in _specs.values() if s.name != spec.name for f in s.credentials.model_fields
    }
    shared = taken_fields & set(spec.credentials.model_fields)
    if shared:  # a connect body names its provider by its fields alone
        raise ValueError(f"connect fields already taken: {sorted(shared)}")
    _specs[spec.name] = spec
    _forget_instances()
    return spec


def unregister(name: str) -> None:
    """Remove a provider registered at run time (tests)."""
    _specs.pop(name, None)
    _forget_instances()


def _forget_instances() -> None:
    from calbot.providers import reset_providers  # the package's instance cache, keyed by name

    reset_providers()


def specs() -> Iterator[ProviderSpec]:
    """Every provider, built-in ones first in BUILTIN's order, then in the order registered."""
    global _loaded, _in_load
    if not _loaded:
        with _loading:
            if not _loaded:
                _in_load = True
                try:
                    for module in BUILTIN:
                        importlib.import_module(module)  # each registers itself
                finally:
                    _in_load = False
                _loaded = True
    return iter(list(_specs.values()))


def names() -> list[str]:
    return [s.name for s in specs()]


def known(name: str) -> bool:
    """Whether `name` is exactly a registered provider's name (not an alias)."""
    if not _loaded:
        specs()
    return name in _specs


def aliases() -> dict[str, str]:
    """Every accepted spelling (lower-case) -> the provider's name."""
    return {n: s.name for s in specs() for n in (s.name, *s.aliases)}


def spec(name: str) -> ProviderSpec:
    """The provider for a name or alias (case-insensitive); ValueError naming the accepted ones."""
    canonical = aliases().get(name.strip().lower())
    if canonical is None:
        raise ValueError(f"provider must be {accepted()}")
    return _specs[canonical]


def accepted() -> str:
    """ "'outlook' (alias 'microsoft') or 'google'": the providers as an error message lists them."""
    parts = []
    for s in specs():
        alias = f" (alias {', '.join(repr(a) for a in s.aliases)})" if s.aliases else ""
        parts.append(f"{s.name!r}{alias}")
    return " or ".join([", ".join(parts[:-1]), parts[-1]]) if len(parts) > 1 else "".join(parts)


def alias_note() -> str:
    """How the API documents the aliases: "`microsoft` is an alias of `outlook` (case-insensitive)."""
    notes = [f"`{a}` is an alias of `{s.name}`" for s in specs() for a in s.aliases]
    return "; ".join(notes) + " (case-insensitive)." if notes else "Case-insensitive."


def default_name() -> str:
    """The provider a request that names none means."""
    for s in specs():
        if s.default:
            return s.name
    raise LookupError("no provider is declared the default")


def credentials_of(data: Mapping[str, Any]) -> tuple[ProviderSpec, CredentialFields]:
    """The one provider whose fields a POST /calendar/connections body sends, and those fields parsed.

    A provider is sent when any of its required fields is; keys no provider declares are left to the
    request model (it refuses them)."""
    present = set(data)
    sending = [s for s in specs() if present & set(s.credentials.required)]
    if len(sending) > 1:
        prefixes = [f"the {_prefix(s)}* fields" for s in sending]
        raise ValueError(f"send either {' or '.join(prefixes)}, not both")
    if not sending:
        first, *others = list(specs())
        more = f" (or the {', '.join(_prefix(s) + '*' for s in others)} equivalents)" if others else ""
        raise ValueError(f"send {_listed(list(first.credentials.required))}{more}")
    chosen = sending[0]
    try:
        fields = chosen.credentials.model_validate(
            {k: data[k] for k in chosen.credentials.model_fields if k in data}
        )
    except ValidationError as err:  # its messages only: never echo the input (a secret, a token)
        raise ValueError("; ".join(_message(e) for e in err.errors())) from None
    return chosen, fields


def _message(error: Any) -> str:
    msg = str(error["msg"]).removeprefix("Value error, ")
    return f"{'.'.join(map(str, error['loc']))}: {msg}" if error["loc"] else msg


def _prefix(s: ProviderSpec) -> str:
    return next(iter(s.credentials.model_fields)).split("_", 1)[0] + "_"
