"""What a list service returns: one page, plus the opaque cursors of the pages either side of it.

Services never build URLs; the HTTP side (calbot.http.with_links) turns the cursors into the page's
`next` / `previous` links.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Paged[P]:
    page: P  # its `next` / `previous` links still unset
    next_cursor: str | None = None
    previous_cursor: str | None = None
