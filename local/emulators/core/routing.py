"""Routes declared on their handlers: `@route(path, *methods)` above a `_h_<endpoint>` (the provider's
wire protocol) or `_c_<endpoint>` (/_control) method; `rules(cls, prefix)` collects them into the
werkzeug rules of the class's Map. No methods: the handler answers every method itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from werkzeug.routing import Rule

F = TypeVar("F", bound=Callable[..., Any])


def route(path: str, *methods: str) -> Callable[[F], F]:
    def mark(handler: F) -> F:
        routes: list[tuple[str, tuple[str, ...]]] = getattr(handler, "routes", [])
        setattr(handler, "routes", [(path, methods), *routes])  # noqa: B010 (functions have no routes slot)
        return handler

    return mark


def rules(cls: type, prefix: str) -> list[Rule]:
    found = []
    for name in dir(cls):
        if name.startswith(prefix):
            for path, methods in getattr(getattr(cls, name), "routes", ()):
                found.append(Rule(path, endpoint=name[len(prefix) :], methods=list(methods) or None))
    return found
