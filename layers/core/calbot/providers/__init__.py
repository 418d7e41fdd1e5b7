"""Calendar providers behind one interface (`base.CalendarProvider`)."""

from __future__ import annotations

from functools import cache

from calbot.providers.base import CalendarProvider


@cache
def get_provider(name: str) -> CalendarProvider:
    """The provider for `outlook` or `google`; one instance per process (its HTTP session is reused)."""
    if name == "outlook":
        from calbot.providers.outlook import OutlookProvider

        return OutlookProvider()
    if name == "google":
        from calbot.providers.google import GoogleProvider

        return GoogleProvider()
    raise ValueError(f"unsupported provider: {name}")


def reset_providers() -> None:
    get_provider.cache_clear()
