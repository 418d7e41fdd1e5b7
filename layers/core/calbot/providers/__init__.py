"""Calendar providers behind one interface (`base.CalendarProvider`), found through `registry`."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # base imports calbot.models, which builds its provider types on the registry
    from calbot.providers.base import CalendarProvider


@cache
def get_provider(name: str) -> CalendarProvider:
    """The provider registered under `name` (or an alias); one instance per process (its HTTP session
    is reused). ValueError for a name no provider has."""
    from calbot.providers import registry

    return registry.spec(name).create()


def reset_providers() -> None:
    get_provider.cache_clear()
