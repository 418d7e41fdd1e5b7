"""GET /calendar/calendars (alias GET /calendar): live calendar lists from every in-scope account."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from calbot import tokens
from calbot.deadline import carried
from calbot.models import CalendarInfo, CalendarList, CalendarView, Connection, ConnectionSummary, ScopeQuery
from calbot.providers import get_provider
from calbot.providers.base import ProviderAuthError, ProviderError
from calbot.services.connections import mark_needs_reauth
from calbot.services.sync import MAX_ACCOUNT_WORKERS, in_scope


def _live(conn: Connection) -> tuple[Connection, list[CalendarInfo] | None, dict[str, str] | None]:
    provider = get_provider(conn.provider)
    try:
        try:
            return conn, provider.list_calendars(tokens.access_token(conn)), None
        except ProviderAuthError as err:
            if err.revoked:
                raise
            tokens.forget_access_token(conn)  # a 401 on a cached token: refresh once and retry
            return conn, provider.list_calendars(tokens.access_token(conn)), None
    except ProviderAuthError as err:
        if not err.revoked:  # refused right after a refresh: not proof of revocation
            return conn, None, {"error": "provider_unavailable", "message": err.message}
        mark_needs_reauth(conn, err.message)
        return conn, None, {"error": "needs_reauth", "message": err.message}
    except ProviderError as err:
        return conn, None, {"error": "provider_unavailable", "message": err.message}


def list_calendars(user_id: str, scope: ScopeQuery) -> CalendarList:
    conns = in_scope(user_id, scope.provider, scope.account_id)
    calendars: list[CalendarView] = []
    summaries: list[ConnectionSummary] = []
    errors: dict[str, dict[str, str]] = {}
    if conns:
        with ThreadPoolExecutor(max_workers=min(MAX_ACCOUNT_WORKERS, len(conns))) as pool:
            results = list(pool.map(carried(_live), conns))  # the invocation's deadline goes along
        for conn, cals, error in results:
            if error:
                errors[f"{conn.provider}::{conn.account_id}"] = error
            for cal in cals or []:
                calendars.append(
                    CalendarView(
                        id=cal.id,
                        name=cal.name,
                        is_primary=cal.is_primary,
                        can_edit=cal.can_edit,
                        owner_email=cal.owner_email,
                        provider=conn.provider,
                        account_id=conn.account_id,
                    )
                )
            status = "needs_reauth" if error and error["error"] == "needs_reauth" else conn.status
            summaries.append(
                ConnectionSummary(
                    provider=conn.provider,
                    account_id=conn.account_id,
                    status=status,
                    calendar_count=len(cals) if cals is not None else len(conn.calendars),
                )
            )
    return CalendarList(calendars=calendars, connections=summaries, partial_errors=errors)
