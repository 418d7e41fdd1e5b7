"""Reading connections: GET /calendar/connections and /calendar/connections/{provider}/{account_id}."""

from __future__ import annotations

from calbot import store, webhook_events
from calbot.config import get_settings
from calbot.errors import NotFound
from calbot.models import Connection, ConnectionList, ConnectionPath, ConnectionView
from calbot.providers import registry


def is_live(user_id: str, provider: str, account_id: str) -> bool:
    """Whether an account is connected and in service (not gone, not being disconnected)."""
    conn = store.get_connection(user_id, provider, account_id)
    return conn is not None and conn.live


def list_connections(user_id: str) -> ConnectionList:
    """Grouped by provider: every registered provider has its group, empty or not."""
    grouped: dict[str, list[ConnectionView]] = {name: [] for name in registry.names()}
    conns = sorted(store.list_connections(user_id), key=lambda c: (c.provider, c.created_at, c.key))
    synced = store.last_synced(user_id) if conns else {}
    for conn in conns:
        grouped[conn.provider].append(ConnectionView.of(conn, synced.get((conn.provider, conn.key))))
    return ConnectionList(connections=grouped, total=len(conns), limit=get_settings().connection_limit)


def get_connection(user_id: str, path: ConnectionPath) -> ConnectionView:
    conn = store.get_connection(user_id, path.provider, path.account_id)
    if conn is None:
        raise NotFound(
            "connection_not_found",
            f"No {path.provider} connection for {path.account_id}.",
            provider=path.provider,
            account_id=path.account_id,
        )
    return connection_view(conn)


def connection_view(conn: Connection) -> ConnectionView:
    """One connection as the API shows it, with when it last synced (store.last_synced)."""
    synced = store.last_synced(conn.user_id, conn.provider, conn.account_id)
    return ConnectionView.of(conn, synced.get((conn.provider, conn.key)))


def mark_needs_reauth(conn: Connection, reason: str) -> None:
    """A real authorization failure: the connection becomes needs_reauth (its reason and time written
    on every failure), and `connection.needs_reauth` is emitted only on the transition into it, never on
    each later failed sync."""
    marked = store.mark_needs_reauth(conn.user_id, conn.provider, conn.account_id, reason)
    if marked is not None:
        webhook_events.emit_connection(marked, webhook_events.CONNECTION_NEEDS_REAUTH)
